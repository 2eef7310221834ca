"""Fuse a max pool into the convolution that produces its input.

    %y = conv(%x) epilogue[relu]          %y = conv(%x) pool[2x2] epilogue[relu]
    %p = maxpool(%y) 2x2 / 2x2     ==>    (readers of %p read %y; %y is the pooled tensor)

The convolution computes the whole window of each pooled pixel in one thread and stores only
the maximum, so the full-size output is never written nor read back. Only when the windows do
not overlap and lie wholly inside the conv output (stride = kernel, no padding, ceil-mode
windows complete), the window has 2 or 4 pixels (what the GEMM tiles group per thread), the
pool is the conv's single reader, and the epilogues of the conv and the pool are only ReLU (max
and ReLU commute; max and a skip add do not).
"""
from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ir.ops import OPS
from .rewrite import Rewrite, apply_rules, single_consumer

NAME = "fuse_pool"
WINDOWS = (2, 4)


def fusable(graph: Graph, pool: Node) -> Node | None:
    """The conv the max pool `pool` can be fused into, if any."""
    if pool.op != "maxpool" or "dilation" in pool.attrs:
        return None
    conv = graph[pool.inputs[0]]
    if conv.op != "conv" or "pool" in conv.attrs or conv.out_view is not None:
        return None
    if OPS[conv.op].tile_kind(conv, None) != "gemm":        # grouped: conv_direct, no pooling
        return None
    if any(step.kind != "relu" for step in conv.epilogue + pool.epilogue):
        return None
    (kh, kw), stride, pad = pool.attrs["kernel"], pool.attrs["stride"], pool.attrs["pad"]
    if stride != (kh, kw) or pad != (0, 0) or kh * kw not in WINDOWS:
        return None
    (_, hc, wc), (_, hp, wp) = conv.type.shape, pool.type.shape
    if hp * kh > hc or wp * kw > wc:              # a partial (ceil-mode) window
        return None
    if single_consumer(graph, conv.name, graph.consumers()) != pool.name:
        return None
    return conv


def match(graph: Graph, node: Node) -> Rewrite | None:
    conv = fusable(graph, node)
    if conv is None:
        return None
    relu = conv.epilogue or node.epilogue             # max and ReLU commute: relu once
    fused = conv.replace(attrs=conv.attrs.replace(pool=node.attrs["kernel"]), type=node.type,
                         epilogue=relu, fused=conv.fused + node.fused + (node.name,))
    return Rewrite(at=conv.name, new=fused, remove=(node.name,), renamed_to=conv.name)


def run(graph: Graph) -> Graph:
    return apply_rules(graph, match)
