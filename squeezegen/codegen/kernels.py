"""Lower the fused, planned graph into kernel descriptions the templates render.

One `Kernel` per launching node: its name (`fire2_expand3x3_relu`), template, launch geometry,
compile-time shape constants, where each tensor it touches lives (a base pointer expression and a
per-image stride), its epilogue, and what to say about it in the comment above it (YAML lines,
shapes, FLOPs, bytes, what was fused).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from pathlib import Path

from ..errors import BuildError
from ..ir.graph import Graph, Node
from ..ir.ops import pool_window
from ..ir.printer import node_flops, node_params
from ..passes.plan_memory import MemoryPlan
from .schedule import BLOCK, GEMV_MAX_BATCH, ConvTile, DeconvMmaTile, deconv_row, phase_grid

MAX_INDEX = (1 << 31) - 1


@dataclass(frozen=True)
class TensorRef:
    """How a kernel reaches a tensor: `var[n * image + c * H * W + pixel]` with var = base."""
    var: str             # the C variable in the kernel
    base: str            # C expression: input + 0, arena + 123, out0 + 0, weights + 456
    image: int           # floats between images
    what: str            # comment: tensor name and shape
    const: bool = True


@dataclass
class Kernel:
    name: str                         # readable: the node and its epilogue (fire2_expand3x3_relu)
    template: str
    node: Node
    grid: tuple[int, int, int]
    block: int
    consts: dict                      # compile-time constants, in order
    tensors: list[TensorRef]          # inputs and the output (`y`), then epilogue operands
    params: list[TensorRef]           # weight and bias
    epilogue: list[tuple]             # ("relu",) | ("add", TensorRef)
    comment: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    flops: int = 0
    bytes: int = 0
    symbol: str = ""                  # the C symbol: <model>_<name>, so layer names never clash
    rendered: str = ""                # with library functions or another model's kernels

    @property
    def grid_text(self) -> str:
        """The grid as launched: `XxY`, and `xZ` where there are Z split-K slices."""
        return "x".join(str(g) for g in (self.grid if self.grid[2] > 1 else self.grid[:2]))

    @property
    def const_lines(self) -> list[str]:
        """The compile-time constants as `NAME = value` lines of at most ~90 characters."""
        lines, line = [], ""
        items = [f"{k} = {v}" for k, v in self.consts.items()]
        for i, item in enumerate(items):
            item += "," if i < len(items) - 1 else ""
            if line and len(line) + 1 + len(item) > 90:
                lines.append(line)
                line = item
            else:
                line = f"{line} {item}" if line else item
        return lines + [line]


def kernel_name(node: Node) -> str:
    """`conv1_relu`, `score_pool8_add`, `fire2_expand3x3_relu`, `conv2_maxpool`: the node, a
    fused pool and its epilogue."""
    pool = "_maxpool" if "pool" in node.attrs else ""
    return node.name + pool + "".join(f"_{s.kind}" for s in node.epilogue)


def _storage_expr(storage: str) -> str:
    return storage if storage in ("input", "arena") else storage.replace("output", "out")


def tensor_ref(graph: Graph, plan: MemoryPlan, name: str, var: str, const=True) -> TensorRef:
    place = plan[name]
    t = graph[name].type
    where = f"{place.storage}" + (f" @ float {place.offset:,}" if place.storage == "arena" else "")
    return TensorRef(var, f"{_storage_expr(place.storage)} + {place.offset}LL", place.image_stride,
                     f"{name}: {t} ({where}, image stride {place.image_stride})", const)




def _grid(threads: int, y: int = 1) -> tuple[int, int, int]:
    return (max(1, -(-threads // BLOCK)), y, 1)


def _param_refs(graph: Graph, node: Node, weight_offsets: dict,
                plan_batch: int) -> list[TensorRef]:
    refs = []
    for key, shape in node_params(graph, node).items():
        var = "w" if key.endswith(".weight") else "b"
        what = f"{key} [{', '.join(str(d) for d in shape)}]"
        gemv = node.op == "linear" and plan_batch <= GEMV_MAX_BATCH
        if node.op in ("conv", "linear") and var == "w" and not gemv:
            what = f"{key}, packed K-major [{prod(shape[1:])}][{shape[0]}]"
        elif gemv and var == "w":
            what = f"{key} [{shape[0]}][{prod(shape[1:])}], PyTorch's [OUT][IN]"
        refs.append(TensorRef(var, f"weights + {weight_offsets[key]}LL", 0, what))
    return refs


def _epilogue(graph, plan, node) -> tuple[list[tuple], list[TensorRef]]:
    steps, refs = [], []
    for i, step in enumerate(node.epilogue):
        if step.kind == "relu":
            steps.append(("relu",))
        else:
            ref = tensor_ref(graph, plan, step.operand, f"skip{i}")
            steps.append(("add", ref))
            refs.append(ref)
    return steps, refs


def _shape_consts(prefix: str, shape: tuple) -> dict:
    if len(shape) == 3:
        return {f"C{prefix}": shape[0], f"H{prefix}": shape[1], f"W{prefix}": shape[2]}
    return {f"C{prefix}": shape[0], f"H{prefix}": 1, f"W{prefix}": 1}


def lower_node(graph: Graph, plan: MemoryPlan, node: Node, weight_offsets: dict) -> Kernel | None:
    """The kernel that computes `node`, or None when it needs none (an in-place concat)."""
    n = plan.batch
    out = tensor_ref(graph, plan, node.name, "y", const=False)
    ins = [tensor_ref(graph, plan, i, "x" if len(node.inputs) == 1 else f"x{k}")
           for k, i in enumerate(node.inputs)]
    shape_in = graph[node.inputs[0]].type.shape if node.inputs else ()
    consts = {"N": n, **_shape_consts("I", shape_in), **_shape_consts("O", node.type.shape)}
    steps, skip_refs = _epilogue(graph, plan, node)
    params = _param_refs(graph, node, weight_offsets, n)
    op = node.op
    extra: dict = {}
    pixels = n * node.type.spatial[0] * node.type.spatial[1]
    if op == "linear" and n <= GEMV_MAX_BATCH:
        consts.update(IN=graph[node.inputs[0]].type.numel, WARPS=BLOCK // 32)
        grid = (-(-node.type.channels // (BLOCK // 32)), 1, 1)
        template = "linear_gemv.cu.j2"
        extra["bias"] = node.attrs["bias"]
    elif op in ("conv", "linear"):
        if op == "conv":
            (kh, kw), (sh, sw), (ph, pw) = (node.attrs["kernel"], node.attrs["stride"],
                                            node.attrs["pad"])
        else:      # a linear layer is a 1x1 convolution of its flattened (C*H*W, 1, 1) input
            (kh, kw), (sh, sw), (ph, pw) = (1, 1), (1, 1), (0, 0)
            consts.update(CI=graph[node.inputs[0]].type.numel, HI=1, WI=1)
        tile = plan.tiles[node.name]
        consts.update(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, BM=tile.bm, BN=tile.bn,
                      BK=tile.bk, TM=tile.tm, TN=tile.tn, SPLITK=tile.splitk)
        extra["pool"] = None
        if "pool" in node.attrs:       # fused max pool: GEMM rows are the windows' pixels
            consts.update(PKH=node.attrs["pool"][0], PKW=node.attrs["pool"][1])
            extra["pool"] = tuple(node.attrs["pool"])
            pixels *= pool_window(node.attrs)
        grid = (-(-pixels // tile.bm), -(-node.type.channels // tile.bn), tile.splitk)
        template = ("conv_gemm_tc.cu.j2" if tile.mma else
                    "conv_gemm_wide.cu.j2" if tile.wide else "conv_gemm.cu.j2")
        extra["mma"] = tile.mma
        extra["bias"] = node.attrs["bias"]
        extra["tile"] = gemm_tile_fields(tile)
        if tile.splitk > 1:
            extra["partials"] = f"arena + {plan.scratch[node.name]}LL"
            extra["counters"] = f"arena + {plan.counters[node.name]}LL"
    elif op == "deconv" and isinstance(plan.tiles[node.name], ConvTile):   # on tensor cores
        (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
        tile = plan.tiles[node.name]
        consts.update(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, BM=tile.bm, BN=tile.bn,
                      BK=tile.bk, TM=tile.tm, TN=tile.tn)
        phase_pixels = n * -(-node.type.spatial[0] // sh) * -(-node.type.spatial[1] // sw)
        grid = (-(-phase_pixels // tile.bm) * sh * sw, -(-node.type.channels // tile.bn), 1)
        template = "deconv_tc.cu.j2"
        extra["mma"] = tile.mma
        extra["bias"] = node.attrs["bias"]
        extra["tile"] = gemm_tile_fields(tile)
    elif op == "deconv" and isinstance(plan.tiles[node.name], DeconvMmaTile):   # fp16 mma.sync
        (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
        tile = plan.tiles[node.name]
        consts.update(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, R=tile.r, C=tile.c, BN=tile.bn)
        rows, cols = phase_grid(node)
        tiles = -(-rows // tile.r) * -(-cols // tile.c)     # rectangles of a phase's pixels
        grid = (n * tiles * sh * sw, -(-node.type.channels // tile.bn), 1)
        template = "deconv_mma.cu.j2"
        extra["mma"] = "fp16"
        extra["bias"] = node.attrs["bias"]
        extra["tile"] = {"r": tile.r, "c": tile.c, "bn": tile.bn, "mma": "fp16"}
    elif op == "deconv":
        (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
        tile = plan.tiles[node.name]
        taps = -(-kh // sh) * -(-kw // sw)
        consts.update(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, COB=tile.cob,
                      COBP=deconv_row(tile.cob, taps), CIB=tile.cib, PX=tile.px)
        phase_pixels = n * -(-node.type.spatial[0] // sh) * -(-node.type.spatial[1] // sw)
        grid = (_grid(-(-phase_pixels // tile.px))[0] * sh * sw, node.type.channels // tile.cob, 1)
        template = "deconv.cu.j2"
        extra["bias"] = node.attrs["bias"]
        extra["tile"] = {"cob": tile.cob, "cib": tile.cib, "px": tile.px}
    elif op in ("maxpool", "avgpool"):
        (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
        consts.update(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw)
        grid = _grid(pixels * node.type.channels)
        template = "pool.cu.j2"
        extra["kind"] = op
    elif op == "softmax":
        grid = _grid(pixels)
        template = "softmax.cu.j2"
    elif op in ("add", "relu"):
        grid = _grid(pixels * node.type.channels)
        template = "eltwise.cu.j2"
        extra["kind"] = op
    elif op == "concat":
        in_place = set(node.attrs.get("in_place", ()))
        if in_place == set(node.inputs):
            return None
        copies, offset = [], 0
        for ref, name in zip(ins, node.inputs):
            c = graph[name].type.channels
            if name not in in_place:
                copies.append((ref, offset, c))
            offset += c
        copied = sum(c for _, _, c in copies)
        consts["CCOPY"] = copied
        grid = _grid(pixels * copied)
        template = "concat.cu.j2"
        extra["copies"] = copies
        ins = [r for r, _, _ in copies]
    else:
        raise BuildError(f"no CUDA template for op '{op}'", layer=node.layer)
    kernel = Kernel(name=kernel_name(node), template=template, node=node, grid=grid, block=BLOCK,
                    consts=consts, tensors=ins + [out] + skip_refs, params=params, epilogue=steps,
                    extra=extra)
    kernel.flops = node_flops(graph, node) * n
    read = sum(graph[i].type.numel for i in node.reads) * n
    weights = sum(prod(s) for s in node_params(graph, node).values())
    kernel.bytes = 4 * (read + node.type.numel * n + weights)
    return kernel


def describe(graph: Graph, original: Graph, kernel: Kernel) -> list[str]:
    """The comment above a kernel: YAML lines, shapes, what was fused, FLOPs and bytes."""
    node = kernel.node
    src = Path(graph.source).name if graph.source else "model"
    names = (node.name,) + node.fused
    layers = []
    for name in names:
        n = original[name] if name in original else node
        entry = f"{n.layer} ({src}:{n.line})"
        if entry not in layers:
            layers.append(entry)
    ins = ", ".join(f"{graph[i].type}" for i in node.inputs)
    attrs = ""
    if "kernel" in node.attrs:
        k, s, p = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
        attrs = f" {k[0]}x{k[1]}/{s[0]}x{s[1]}" + (f" pad {p[0]}x{p[1]}" if any(p) else "")
    lines = [f"{kernel.name}: {node.op}{attrs}, {ins} -> {node.type} (batch {kernel.consts['N']})",
             f"implements: {', '.join(layers)}"]
    fused = [str(s) for s in node.epilogue]
    if "pool" in node.attrs:
        ph, pw = node.attrs["pool"]
        pooled = [n for n in node.fused if n in original and original[n].op == "maxpool"]
        fused.insert(0, f"maxpool {ph}x{pw}/{ph}x{pw} ({', '.join(pooled)}): each thread computes "
                        f"a whole window and stores its max")
    if node.out_view:
        fused.append(f"stores into channels {node.out_view.channel_offset}.."
                     f"{node.out_view.channel_offset + node.type.channels - 1} of "
                     f"{node.out_view.into} (no concat copy)")
    if fused:
        lines.append(f"fused: {'; '.join(fused)}")
    tile = kernel.extra.get("tile")
    if tile:
        lines.append(f"tile: {tile_text(tile)}")
    lines.append(f"work: {kernel.flops / 1e6:,.2f} MFLOP, {kernel.bytes / 1e6:,.2f} MB moved; "
                 f"grid {kernel.grid_text}, block {kernel.block}")
    return lines


def gemm_tile_fields(tile: ConvTile) -> dict:
    """A GEMM tile as the manifest and the kernel comment show it."""
    return {"bm": tile.bm, "bn": tile.bn, "bk": tile.bk, "tm": tile.tm, "tn": tile.tn,
            "splitk": tile.splitk, **({"mma": tile.mma} if tile.mma else {})}


def tile_text(tile: dict) -> str:
    if "cob" in tile:
        pixels = f"{tile['px']} pixels" if tile["px"] > 1 else "1 pixel"
        return (f"{tile['cob']} output channels x {pixels} per thread, {tile['cib']} "
                f"input channels of weights per shared-memory pass")
    if "r" in tile:
        return (f"{tile['r']}x{tile['c']} pixels of a stride phase x {tile['bn']} channels per "
                f"block on tensor cores (fp16, fp32 accumulation; mma.sync m16n8k8)")
    if tile.get("mma"):
        return (f"{tile['bm']} pixels x {tile['bn']} channels per block on tensor cores "
                f"({tile['mma']}, fp32 accumulation; {tile['tm']}x{tile['tn']} 16x16 fragments per "
                f"warp), K in slices of {tile['bk']}")
    text = (f"{tile['bm']} pixels x {tile['bn']} channels per block ({tile['tm']}x{tile['tn']} "
            f"per thread), K in slices of {tile['bk']}")
    return text + (f", split in {tile['splitk']}" if tile["splitk"] > 1 else "")


def check_index_range(graph: Graph, plan: MemoryPlan) -> None:
    """Refuse shapes whose per-image indices would overflow the 32-bit ints of the kernels."""
    for node in graph.nodes:
        if node.type.numel > MAX_INDEX:
            raise BuildError(f"tensor '{node.name}' has {node.type.numel:,} elements per image, "
                             f"more than the {MAX_INDEX:,} squeezegen kernels can index",
                             layer=node.layer, line=node.line, file=graph.source)
    threads = max(n.type.numel for n in graph.nodes) * plan.batch * 32
    if -(-threads // BLOCK) > MAX_INDEX:
        raise BuildError(f"batch {plan.batch} needs more thread blocks than CUDA can launch; "
                         "use a smaller batch", field="batch")


MAX_GRID = (MAX_INDEX, 65535, 65535)


def check_launch(graph: Graph, kernel: Kernel) -> None:
    """Refuse a launch CUDA cannot make (grid.y and grid.z are limited to 65535)."""
    for axis, (size, limit) in enumerate(zip(kernel.grid, MAX_GRID)):
        if size > limit:
            node = kernel.node
            raise BuildError(f"kernel {kernel.name} would need a grid of {size:,} blocks along "
                             f"{'xyz'[axis]}, more than CUDA's {limit:,} (too many channels "
                             "or too large a batch)", layer=node.layer, line=node.line,
                             file=graph.source)
