"""Schedule: how each kernel is tiled for one batch size, decided before memory planning
(split-K tiles need scratch memory and counters from the planner).

The default is a heuristic for the target's SMs (132 on the H200): few output channels -> one
channel block; the tallest pixel block that still gives two waves; when even the smallest tiles
give less than one wave and K is long, K is split across blocks (split-K) and the last block to finish a tile
sums the partial tiles in a fixed order (deterministic) and applies the epilogue.
"""
from __future__ import annotations

from math import prod

from ..errors import BuildError
from ..ir.graph import Graph, Node
from ..ir.ops import OPS, node_params, pool_window
from .target import H200, Target
from .tiles import (BLOCK, DECONV_MAX_ACC, DECONV_MMA_COLS, DECONV_MMA_PIXELS,  # noqa: F401
                    DECONV_SMEM_FLOATS, GEMV_MAX_BATCH, ConvTile, DeconvMmaTile, DeconvTile, Tile,
                    deconv_mma_shared_bytes, deconv_row, phase_grid, shared_bytes)



def conv_tile(pixels: int, channels: int, k: int, win: int = 1, target: Target = H200) -> ConvTile:
    """`pixels`: GEMM rows (output pixels, times the window of a fused max pool, `win`: a
    narrow tile's TM must then be a multiple of it)."""
    if channels >= 64:
        for tn in ((8, 4) if channels >= 128 else (4,)):
            wide = ConvTile(8, tn, wide=True)
            waste = wide.bn * -(-channels // wide.bn) / channels - 1
            if waste <= 0.05 and wide.blocks(pixels, channels) >= 2 * target.sms:
                return wide
    tn = -(-channels // 8) if channels <= 96 else 8
    for tm in (4, 2):
        tile = ConvTile(tm, tn)
        if tm % win == 0 and tile.blocks(pixels, channels) >= 2 * target.sms:
            return tile
    tile = ConvTile(win, tn)
    blocks = tile.blocks(pixels, channels)
    if blocks < 4 * target.sms and k >= 128:   # small layers are latency-bound: shorter blocks
        splitk = max(1, min(-(-4 * target.sms // blocks), k // 64, 16))
        if splitk > 1:
            return ConvTile(win, tn, splitk=splitk)
    return tile


def deconv_tile(graph: Graph, node: Node, batch: int, target: Target = H200) -> DeconvTile:
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    taps = -(-kh // sh) * -(-kw // sw)
    if taps > DECONV_SMEM_FLOATS:
        raise BuildError(f"a {kh}x{kw} transposed convolution with stride {sh}x{sw} has {taps} "
                         f"taps per phase, more than the {DECONV_SMEM_FLOATS} the deconv kernel "
                         "keeps in shared memory", layer=node.layer, line=node.line,
                         file=graph.source)
    phase_pixels = batch * -(-node.type.spatial[0] // sh) * -(-node.type.spatial[1] // sw)
    phase_blocks = -(-phase_pixels // BLOCK) * sh * sw
    cob = deconv_channels_per_block(phase_blocks, node.type.channels, DECONV_SMEM_FLOATS // taps,
                                    target)
    ci = graph[node.inputs[0]].type.channels
    row = deconv_row(cob, taps)
    cib = max(d for d in range(1, ci + 1) if ci % d == 0 and d * taps * row <= DECONV_SMEM_FLOATS)
    fits = [px for px in (4, 2) if px * row <= 64 and DeconvTile(cob, cib, px).blocks(
        phase_pixels, node.type.channels, sh * sw) >= 4 * target.sms]
    return DeconvTile(cob, cib, fits[0] if fits else 1)


def deconv_channels_per_block(phase_blocks: int, channels: int, limit: int = 32,
                              target: Target = H200) -> int:
    """Output channels per deconv thread: all of them (up to 32, and at most `limit`, what
    shared memory holds) when that still gives two waves of blocks, else fewer so that small
    layers spread over more SMs."""
    divisors = [d for d in range(min(channels, 32, limit), 0, -1) if channels % d == 0]
    for d in divisors:
        if phase_blocks * (channels // d) >= 2 * target.sms:
            return d
    small = [d for d in divisors if d >= 3]
    return small[-1] if small else divisors[-1]


# the deconv_mma rectangles: 128, 256 or 512 pixels per block (1, 2 or 4 fragments per warp),

def deconv_mma_fits_grid(tile: DeconvMmaTile, grid: tuple[int, int]) -> bool:
    """Whether the rectangle is less than twice the phase's grid each way (little padding)."""
    return tile.r < 2 * grid[0] and tile.c < 2 * grid[1]


def deconv_mma_tiles(graph: Graph, node: Node, batch: int,
                     target: Target = H200) -> list[DeconvMmaTile]:
    """The deconv_mma tiles that fit in 48 KB of shared memory, best first: rectangles that fit
    the phase's grid (`deconv_mma_fits_grid`), then two waves of blocks, then a padding of the
    grid within 5% of the least, then 256 pixels per block (2 fragments per warp), then the
    least padding and the widest. The channel block is the multiple of 8 (up to 32) that pads
    the channels least and still leaves a rectangle whose staged weights fit."""
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    taps = (-(-kh // sh), -(-kw // sw))
    grid = phase_grid(node)
    ci, co = graph[node.inputs[0]].type.channels, node.type.channels
    tiles = []
    for bn in sorted((32, 24, 16, 8), key=lambda b: (-(-co // b) * b, -b)):
        tiles = [t for t in (DeconvMmaTile(pixels // c, c, bn) for pixels in DECONV_MMA_PIXELS
                             for c in DECONV_MMA_COLS if pixels % c == 0)
                 if deconv_mma_shared_bytes(t, ci, taps) <= target.smem_per_block]
        if tiles:
            break

    def padding(t: DeconvMmaTile) -> float:
        return -(-grid[0] // t.r) * t.r * -(-grid[1] // t.c) * t.c / (grid[0] * grid[1])
    least = min((padding(t) for t in tiles if deconv_mma_fits_grid(t, grid)), default=1.0)
    return sorted(tiles, key=lambda t: (not deconv_mma_fits_grid(t, grid),
                                        t.blocks(batch, grid, co, sh * sw) < 2 * target.sms,
                                        padding(t) > 1.05 * least, abs(t.r * t.c - 256),
                                        padding(t), -t.c))


def deconv_mma_runs(graph: Graph, node: Node, tile: DeconvMmaTile, target: Target = H200) -> bool:
    """Whether deconv_mma can run `node` with `tile`: whole fragments (at most 4 per warp, so
    that the accumulators stay in registers), and shared memory."""
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    ci = graph[node.inputs[0]].type.channels
    return (tile.r > 0 and tile.c > 0 and tile.r * tile.c % 128 == 0
            and tile.r * tile.c <= max(DECONV_MMA_PIXELS) and 0 < tile.bn <= 32
            and tile.bn % 8 == 0 and deconv_mma_shared_bytes(
                tile, ci, (-(-kh // sh), -(-kw // sw))) <= target.smem_per_block)


def tile_kind(node: Node, batch: int | None) -> str | None:
    """The kind of tile the node's kernel is cut into at `batch` (its op's `tile_kind`): "gemm"
    (ConvTile: convolutions, linear layers above the matrix-vector batch), "deconv" (DeconvTile,
    DeconvMmaTile, or a tensor-core ConvTile) or None (nothing to choose). `batch` None: at a
    batch large enough for a GEMM."""
    return OPS[node.op].tile_kind(node, batch)


def tunable(node: Node, batch: int) -> bool:
    """Whether the node's kernel has a tile to choose."""
    return tile_kind(node, batch) is not None


PRECISIONS = ("fp32", "tf32", "fp16")


def uses_tensor_cores(node: Node, precision: str) -> bool:
    """Whether tf32/fp16 builds can run this layer's GEMM on tensor cores: convs and linear
    layers of GEMM size (a linear layer at batch <= GEMV_MAX_BATCH is a matrix-vector kernel,
    in fp32), but not a conv with a fused max pool (the fp32 tiles group whole windows per
    thread). The heuristic still keeps the fp32 tiles where tensor-core tiles would leave most
    SMs idle (`default_tile`). Deconvs have their own kernels: in fp16 builds deconv_mma where
    a phase holds one of its rectangles (`deconv_mma_tiles`), else the fp32 kernel; in tf32
    builds the fp32 kernel, unless the autotuner finds a deconv_tc tile faster
    (`tensor_core_candidates`; on the H200, squeezeseg's conv13 took 0.62 ms on the fp32
    kernel and 0.73 ms on deconv_tc's best fp16 tile at batch 32,
    benchmarks/results/conv13_fp16_probe.log)."""
    return precision != "fp32" and tile_kind(node, None) == "gemm" and "pool" not in node.attrs


def tensor_core_candidates(node: Node, precision: str) -> bool:
    """Whether the autotuner also times tensor-core tiles for `node`."""
    return uses_tensor_cores(node, precision) or (precision != "fp32"
                                                  and tile_kind(node, None) == "deconv")


def default_tile(graph: Graph, node: Node, batch: int, precision: str = "fp32",
                 target: Target = H200) -> Tile:
    """The heuristic's tile: what a build uses when nothing was tuned."""
    if tile_kind(node, batch) == "deconv":
        fp16 = deconv_mma_tiles(graph, node, batch, target) if precision == "fp16" else []
        if fp16 and deconv_mma_fits_grid(fp16[0], phase_grid(node)):
            return fp16[0]          # else a phase is too small for a tensor-core rectangle
        return deconv_tile(graph, node, batch, target)
    rows, k = gemm_rows(node, batch), _k(graph, node)
    if uses_tensor_cores(node, precision):
        tile = mma_tile(rows, node.type.channels, precision, target)
        if tile.blocks(rows, node.type.channels) >= target.sms // 2 or k < 256:
            return tile
        # too few blocks for the GPU, and a K long enough to split: the fp32 tiles split K
    return conv_tile(rows, node.type.channels, k, pool_window(node.attrs), target)


def mma_tile(pixels: int, channels: int, precision: str, target: Target = H200) -> ConvTile:
    """The heuristic's tensor-core tile: up to 128 channels, as many 32-channel steps as cover
    them (64 wide at 128 pixels per block, wider at 64); above 128 channels, 64 wide. 64 pixels
    where 128 would leave SMs idle, and 32-deep K slices in fp16 (16 in tf32, whose elements are
    twice as large)."""
    tn = -(-channels // 32) if channels <= 128 else 2
    tm = 2 if tn <= 2 and -(-pixels // 128) * -(-channels // (32 * tn)) >= target.sms else 1
    return ConvTile(tm, tn, bk=32 if precision == "fp16" else 16, mma=precision)


def gemm_rows(node: Node, batch: int) -> int:
    """The M of a conv's (or linear's) implicit GEMM: output pixels, each pooled pixel counting
    its whole window when a max pool is fused."""
    return batch * node.type.spatial[0] * node.type.spatial[1] * pool_window(node.attrs)


def schedule(graph: Graph, batch: int, chosen: dict[str, Tile] | None = None,
             precision: str = "fp32", target: Target = H200) -> dict[str, Tile]:
    """The tile of every tunable node: `chosen[name]` where given (the autotuner's pick,
    checked to be a kind of tile that node can run at this precision), otherwise the
    heuristic's."""
    chosen = chosen or {}
    tiles = {}
    for node in graph.nodes:
        if tunable(node, batch):
            tile = chosen.get(node.name)
            if tile is not None:
                check_tile(graph, node, tile, precision, target)
            tiles[node.name] = tile or default_tile(graph, node, batch, precision, target)
    return tiles


def check_tile(graph: Graph, node: Node, tile: Tile, precision: str,
               target: Target = H200) -> None:
    """Refuse a tile the node's kernels cannot run: a deconv tile on a conv, a tensor-core tile
    of another precision (or on a pooled conv), an fp32 GEMM tile on a deconv, a deconv_mma
    tile outside fp16 builds or one whose fragments or shared memory do not fit."""
    if isinstance(tile, DeconvTile):
        ok = tile_kind(node, None) == "deconv"
    elif isinstance(tile, DeconvMmaTile):
        ok = (tile_kind(node, None) == "deconv" and precision == "fp16"
              and deconv_mma_runs(graph, node, tile, target))
    elif not isinstance(tile, ConvTile):
        ok = False
    elif tile.mma:
        ok = tile.mma == precision and tensor_core_candidates(node, precision) and tile.splitk == 1
    else:
        ok = tile_kind(node, None) == "gemm"
    if not ok:
        raise BuildError(f"tile {tile} cannot run a {node.op} layer in a {precision} build",
                         layer=node.layer, line=node.line, file=graph.source)


def candidate_tiles(graph: Graph, node: Node, batch: int, precision: str = "fp32",
                    target: Target = H200) -> list[Tile]:
    """Every tile worth timing for `node` at `batch`, the heuristic's first."""
    first = default_tile(graph, node, batch, precision, target)
    deconv = tile_kind(node, batch) == "deconv"
    if deconv:
        others = _deconv_candidates(graph, node, batch)
    else:        # fp32 tiles, in tf32/fp16 builds too: they can split K where tensor cores idle
        others = _conv_candidates(gemm_rows(node, batch), node.type.channels, _k(graph, node),
                                  pool_window(node.attrs), target)
    if deconv and precision == "fp16":     # deconv_mma (deconv_tc only in tf32)
        others += deconv_mma_tiles(graph, node, batch, target)[:8]
    elif tensor_core_candidates(node, precision):
        mma = [ConvTile(tm, tn, bk=bk, mma=precision) for tm in (1, 2) for tn in (1, 2, 3, 4)
               for bk in (16, 32)]
        others += [t for t in mma if shared_bytes(t) <= target.smem_per_block]
    return [first] + [t for t in dict.fromkeys(others) if t != first]


def _conv_candidates(pixels: int, channels: int, k: int, win: int,
                     target: Target) -> list[ConvTile]:
    tns = {-(-channels // 8) if channels <= 96 else 8, min(4, -(-channels // 8))}
    tiles = [ConvTile(tm, tn) for tn in sorted(tns) for tm in (1, 2, 4, 8) if tm % win == 0
             and (ConvTile(tm, tn).blocks(pixels, channels) >= target.sms // 2 or tm == win)]
    for tn in sorted(tns):
        blocks = ConvTile(win, tn).blocks(pixels, channels)
        tiles += [ConvTile(win, tn, splitk=s) for s in (2, 4, 8, 16)
                  if s <= k // 32 and blocks * s <= 16 * target.sms
                  and every_slice_has_work(k, ConvTile(win, tn).bk, s)]
    if channels >= 48:
        wides = [ConvTile(tm, tn, wide=True) for tm in (4, 8) for tn in (4, 8)
                 if tn == 4 or channels >= 96]
        tiles += wides
        for t in wides:                    # too few blocks for the GPU: split K as well
            blocks = t.blocks(pixels, channels)
            tiles += [ConvTile(t.tm, t.tn, splitk=s, wide=True) for s in (2, 4, 8)
                      if blocks < 2 * target.sms and s <= k // 64 and blocks * s <= 8 * target.sms
                      and every_slice_has_work(k, t.bk, s)]
    if k <= 64:                            # short K: shallower slices waste less of the last
        tiles += [ConvTile(t.tm, t.tn, bk=8) for t in tiles if t.splitk == 1 and not t.wide]
    elif k >= 256:                         # long K: deeper slices, fewer barriers
        deep = [ConvTile(t.tm, t.tn, bk=32, wide=True) for t in tiles if t.wide and t.splitk == 1]
        tiles += [t for t in deep if shared_bytes(t) <= target.smem_per_block]
    return tiles


def every_slice_has_work(k: int, bk: int, splitk: int) -> bool:
    """Whether splitting ceil(k / bk) K-slices `splitk` ways (ceil-sized parts) leaves none
    empty: an empty part would launch blocks that only add zeros."""
    steps = -(-k // bk)
    return (splitk - 1) * -(-steps // splitk) < steps


def _deconv_candidates(graph: Graph, node: Node, batch: int) -> list[DeconvTile]:
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    taps = -(-kh // sh) * -(-kw // sw)
    ci, co = graph[node.inputs[0]].type.channels, node.type.channels
    tiles = []
    for cob in (d for d in range(min(co, 32), 0, -1) if co % d == 0):
        row = deconv_row(cob, taps)
        if taps * row > DECONV_SMEM_FLOATS:
            continue
        fits = [d for d in range(1, ci + 1) if ci % d == 0 and d * taps * row <= DECONV_SMEM_FLOATS]
        tiles.append(DeconvTile(cob, max(fits)))
    tiles = tiles[:6]
    return tiles + [DeconvTile(t.cob, t.cib, px) for t in tiles[:3] for px in (2, 4)
                    if px * deconv_row(t.cob, taps) <= DECONV_MAX_ACC]


def _k(graph: Graph, node: Node) -> int:
    """The K of a GEMM layer: what one output sums over (its weight's [OUT][K] view)."""
    return prod(node_params(graph, node)[f"{node.param_prefix}.weight"][1:])


def scratch_needs(graph: Graph, batch: int, tiles: dict[str, ConvTile]) -> dict[str, tuple[int, int]]:
    """(partial-sum floats, counters) each split-K kernel needs."""
    needs = {}
    for name, tile in tiles.items():
        if isinstance(tile, ConvTile) and tile.splitk > 1:
            node = graph[name]
            blocks = tile.blocks(gemm_rows(node, batch), node.type.channels)
            needs[name] = (tile.splitk * blocks * tile.bm * tile.bn, blocks)
    return needs
