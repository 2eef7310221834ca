"""Memory planning: every intermediate tensor gets an offset in one arena, for a fixed batch.

A tensor written in place into a concat (fire_concat) has no storage of its own: it is a channel
slice of its concat. The remaining "root" tensors live from the first kernel that writes them to
the last kernel that reads them; roots whose lifetimes do not overlap may share bytes. Placement is
greedy by size (largest first, lowest offset that fits), aligned to 256 bytes. The network input
and the outputs are the caller's buffers, not part of the arena.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BuildError
from ..ir.graph import Graph

ALIGN = 256
FLOAT_BYTES = 4
MAX_ARENA_BYTES = 128 << 30


@dataclass(frozen=True)
class Placement:
    """Where a tensor's elements are: element (n, c, h, w) is at
    `storage[offset + n * image_stride + c * H * W + h * W + w]` (in floats)."""
    storage: str          # "input", "arena" or "output0", "output1", ...
    offset: int           # in floats, from the storage's start (channel offset included)
    image_stride: int     # floats between images of the batch


@dataclass(frozen=True)
class Buffer:
    """An arena allocation: one root tensor (with the slices written into it)."""
    tensor: str
    offset: int           # bytes
    size: int             # bytes
    first: int            # index of the first node writing it
    last: int             # index of the last node reading it


@dataclass(frozen=True)
class MemoryPlan:
    batch: int
    buffers: tuple[Buffer, ...]
    placements: dict
    arena_bytes: int
    unshared_bytes: int   # the sum of all arena tensors, as if none shared memory
    tiles: dict = field(default_factory=dict)      # the schedule the plan was made for
    scratch: dict = field(default_factory=dict)    # node -> float offset of its partial sums
    counters: dict = field(default_factory=dict)   # node -> float offset of its tile counters
    counters_offset: int = 0                       # bytes: the zero-initialised counters region
    counters_bytes: int = 0

    def __getitem__(self, tensor: str) -> Placement:
        return self.placements[tensor]


def root_of(graph: Graph, name: str) -> tuple[str, int]:
    """The tensor whose storage `name` lives in, and its channel offset there."""
    offset = 0
    node = graph[name]
    while node.out_view is not None:
        offset += node.out_view.channel_offset
        node = graph[node.out_view.into]
    return node.name, offset


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _lifetimes(graph: Graph) -> dict[str, list[int]]:
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    spans: dict[str, list[int]] = {}
    for node in graph.nodes:
        root, _ = root_of(graph, node.name)
        i = index[node.name]
        span = spans.setdefault(root, [i, i])
        span[0], span[1] = min(span[0], i), max(span[1], i)
        for read in node.reads:
            rspan = spans[root_of(graph, read)[0]]
            rspan[1] = max(rspan[1], i)
    return spans


def plan_memory(graph: Graph, batch: int, tiles: dict | None = None,
                scratch: dict[str, tuple[int, int]] | None = None) -> MemoryPlan:
    """Offsets for every tensor at `batch`; `scratch` maps a node to the (floats, counters) of
    working memory its kernel needs while it runs (split-K partial sums and tile counters)."""
    if batch < 1:
        raise BuildError(f"batch must be at least 1, got {batch}", field="batch")
    scratch = scratch or {}
    outputs = {o: f"output{i}" for i, o in enumerate(graph.outputs)}
    spans = _lifetimes(graph)
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    arena_roots = [r for r in spans if r != graph.input.name and r not in outputs]
    size = {r: _align(graph[r].type.numel * batch * FLOAT_BYTES) for r in arena_roots}
    for name, (floats, _) in scratch.items():       # live only while its kernel runs
        key = f"{name}.partials"
        spans[key] = [index[name], index[name]]
        arena_roots.append(key)
        size[key] = _align(floats * FLOAT_BYTES)
    placed: list[Buffer] = []
    for root in sorted(arena_roots, key=lambda r: (-size[r], spans[r][0])):
        first, last = spans[root]
        busy = sorted((b.offset, b.offset + b.size) for b in placed
                      if not (b.last < first or last < b.first))
        offset = 0
        for start, end in busy:
            if offset + size[root] <= start:
                break
            offset = max(offset, end)
        placed.append(Buffer(root, offset, size[root], first, last))
    buffers = tuple(sorted(placed, key=lambda b: (b.first, b.offset)))
    arena = max((b.offset + b.size for b in buffers), default=0)
    counters_offset, counters = arena, {}
    for name, (_, count) in scratch.items():        # never shared: zeroed once, kept zero
        counters[name] = arena // FLOAT_BYTES
        arena += _align(count * FLOAT_BYTES)
    if arena > MAX_ARENA_BYTES:
        raise BuildError(f"the activations need {arena / 2**30:.1f} GiB at batch {batch}, more "
                         f"than the {MAX_ARENA_BYTES >> 30} GiB squeezegen allows; use a smaller "
                         "batch or input", field="batch")
    by_root = {b.tensor: b for b in buffers}
    placements = {}
    for node in graph.nodes:
        root, channel_offset = root_of(graph, node.name)
        h, w = node.type.spatial
        storage = ("input" if root == graph.input.name else outputs.get(root, "arena"))
        base = by_root[root].offset // FLOAT_BYTES if storage == "arena" else 0
        placements[node.name] = Placement(storage, base + channel_offset * h * w,
                                          graph[root].type.numel)
    partials = {name: by_root[f"{name}.partials"].offset // FLOAT_BYTES for name in scratch}
    return MemoryPlan(batch, buffers, placements, arena, sum(size.values()), dict(tiles or {}),
                      partials, counters, counters_offset, arena - counters_offset)
