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
from ..ir.ops import OPS, node_flops, node_params, step_params, weight_specs
from ..passes.plan_memory import MemoryPlan
from .tiles import BLOCK

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
    epilogue: list[tuple]             # ("act", op, C expression of v) | ("add", TensorRef)
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


def _shape_consts(prefix: str, shape: tuple) -> dict:
    if len(shape) == 3:
        return {f"C{prefix}": shape[0], f"H{prefix}": shape[1], f"W{prefix}": shape[2]}
    return {f"C{prefix}": shape[0], f"H{prefix}": 1, f"W{prefix}": 1}


@dataclass
class Lowering:
    """What an op's `lower(ctx, node)` builds its kernel from: where tensors and weights live,
    the batch, the scheduled tiles, and the common compile-time constants."""
    graph: Graph
    plan: MemoryPlan
    weight_offsets: dict
    block: int = BLOCK

    @property
    def batch(self) -> int:
        return self.plan.batch

    def tensor(self, name: str, var: str, const: bool = True) -> TensorRef:
        return tensor_ref(self.graph, self.plan, name, var, const)

    def inputs(self, node: Node) -> list[TensorRef]:
        """The operands: `x`, or `x0`, `x1`, ... for several."""
        return [self.tensor(i, "x" if len(node.inputs) == 1 else f"x{k}")
                for k, i in enumerate(node.inputs)]

    def consts(self, node: Node) -> dict:
        """N, the first operand's CI/HI/WI and the output's CO/HO/WO."""
        shape_in = self.graph[node.inputs[0]].type.shape if node.inputs else ()
        return {"N": self.batch, **_shape_consts("I", shape_in),
                **_shape_consts("O", node.type.shape)}

    def pixels(self, node: Node) -> int:
        """Output pixels of the whole batch."""
        return self.batch * node.type.spatial[0] * node.type.spatial[1]

    def grid(self, threads: int, y: int = 1) -> tuple[int, int, int]:
        """Enough blocks for one thread per item."""
        return (max(1, -(-threads // self.block)), y, 1)

    def tile(self, node: Node):
        return self.plan.tiles[node.name]

    def kernel(self, node: Node, template: str, grid: tuple[int, int, int], consts: dict,
               extra: dict | None = None, ins: list[TensorRef] | None = None) -> Kernel:
        """The kernel of `node`: its operands (`ins`, all of them by default), output, epilogue
        operands and weights, and its work in FLOPs and bytes."""
        graph, n = self.graph, self.batch
        steps, skip_refs = _epilogue(graph, self.plan, node)
        kernel = Kernel(name=kernel_name(node), template=template, node=node, grid=grid,
                        block=self.block, consts=consts,
                        tensors=(self.inputs(node) if ins is None else ins)
                        + [self.tensor(node.name, "y", const=False)] + skip_refs,
                        params=_param_refs(graph, node, self.weight_offsets, n),
                        epilogue=steps, extra=extra or {})
        kernel.flops = node_flops(graph, node) * n
        read = sum(graph[i].type.numel for i in node.reads) * n
        weights = sum(prod(s) for s in weight_specs(graph, node).values())
        kernel.bytes = 4 * (read + node.type.numel * n + weights)
        return kernel

    def channel_kernel(self, node: Node, what: str) -> Kernel:
        """eltwise.cu.j2 for an op with a `channel_step` (batchnorm, affine, prelu) that runs as
        its own kernel: one thread per element, the same C expression its epilogue form has."""
        read = _channel_reader(param_var, "c")
        expr = OPS[node.op].channel_step(node.attrs, "xv", read)
        return self.kernel(node, "eltwise.cu.j2", self.grid(self.pixels(node) * node.type.channels),
                           self.consts(node), {"kind": node.op, "expr": expr, "what": what})


def param_var(short: str, step: int | None = None) -> str:
    """The C variable of weight `short` in a kernel: w, b, running_mean, ...; those of epilogue
    step i are prefixed s<i>_."""
    var = {"weight": "w", "bias": "b"}.get(short, short)
    return var if step is None else f"s{step}_{var}"


def _channel_reader(var_of, channel: str):
    """read(weight, per_channel=True) for a `channel_step`: the weight at `channel`, or at 0."""
    def read(short: str, per_channel: bool = True) -> str:
        return f"__ldg({var_of(short)} + {channel if per_channel else 0})"
    return read


def _param_refs(graph: Graph, node: Node, weight_offsets: dict, batch: int) -> list[TensorRef]:
    refs = []
    layout = OPS[node.op].packed(node.attrs, batch)
    for key, shape in node_params(graph, node).items():
        short = key[len(node.param_prefix) + 1:]
        var = param_var(short)
        what = f"{key} [{', '.join(str(d) for d in shape)}]"
        if var == "w" and layout:
            what = f"{key}, packed K-major [{prod(shape[1:])}][{shape[0]}]"
        elif var == "w" and len(shape) == 2:
            what = f"{key} [{shape[0]}][{prod(shape[1:])}], PyTorch's [OUT][IN]"
        refs.append(TensorRef(var, f"weights + {weight_offsets[key]}LL", 0, what))
    for i, step in enumerate(node.epilogue):
        for key, shape in step_params(node, step).items():
            var = param_var(key[len(step.param_prefix) + 1:], i)
            what = f"{key} [{', '.join(str(d) for d in shape)}] ({step.kind} in the epilogue)"
            refs.append(TensorRef(var, f"weights + {weight_offsets[key]}LL", 0, what))
    return refs


def _epilogue(graph, plan, node) -> tuple[list[tuple], list[TensorRef]]:
    """The store's steps: ("act", op, C expression of v), ("channel", op, C expression of v
    with `{c}` where the element's channel goes), or ("add", TensorRef of the operand)."""
    steps, refs = [], []
    for i, step in enumerate(node.epilogue):
        if step.kind == "add":
            ref = tensor_ref(graph, plan, step.operand, f"skip{i}")
            steps.append(("add", ref))
            refs.append(ref)
        elif step.param_prefix:
            read = _channel_reader(lambda short, i=i: param_var(short, i), "{c}")
            steps.append(("channel", step.kind, OPS[step.kind].channel_step(step.attrs, "v", read)))
        else:
            steps.append(("act", step.kind, OPS[step.kind].activation(step.attrs, "v")))
    return steps, refs


def lower_node(graph: Graph, plan: MemoryPlan, node: Node, weight_offsets: dict) -> Kernel | None:
    """The kernel that computes `node` (its op's `lower`), or None when it needs none (an
    in-place concat)."""
    lower = OPS[node.op].lower
    if lower is None:
        raise BuildError(f"no CUDA template for op '{node.op}'", layer=node.layer)
    return lower(Lowering(graph, plan, weight_offsets), node)


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
        if "pad_end" in node.attrs:
            attrs += f" (top x left; bottom x right {'x'.join(map(str, node.attrs['pad_end']))})"
        if "dilation" in node.attrs:
            attrs += f" dilation {'x'.join(map(str, node.attrs['dilation']))}"
        if "output_padding" in node.attrs:
            attrs += f" output_padding {'x'.join(map(str, node.attrs['output_padding']))}"
        if "groups" in node.attrs:
            attrs += f" groups {node.attrs['groups']}"
    lines = [f"{kernel.name}: {node.op}{attrs}, {ins} -> {node.type} (batch {kernel.consts['N']})",
             f"implements: {', '.join(layers)}"]
    in_store = {s.param_prefix for s in node.epilogue if s.param_prefix}
    folded = [f"{original[n].op} {n} (folded into the weights and bias: {node.param_prefix}.*)"
              for n in node.fused if n in original and original[n].op in ("batchnorm", "affine")
              and original[n].param_prefix not in in_store]
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
    fused = folded + fused
    if fused:
        lines.append(f"fused: {'; '.join(fused)}")
    tile = kernel.extra.get("tile")
    if tile:
        lines.append(f"tile: {tile_text(tile)}")
    lines.append(f"work: {kernel.flops / 1e6:,.2f} MFLOP, {kernel.bytes / 1e6:,.2f} MB moved; "
                 f"grid {kernel.grid_text}, block {kernel.block}")
    return lines


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
