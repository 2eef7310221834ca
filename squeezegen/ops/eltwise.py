"""`add`, `mul` and `div` of tensors of one shape, where an operand may also be a per-channel
C x 1 x 1 tensor broadcast over the pixels (a squeeze-and-excitation block's scale) or a
1 x H x W one broadcast over the channels (a spatial attention map, as in CBAM; the L2 norm
F.normalize divides by). `div` is inputs[0] / inputs[1], IEEE division as in PyTorch (x / 0 is
inf, 0 / 0 NaN). The fuse_add pass
moves a skip add of same-shaped tensors into the epilogue of the kernel that produces one of
its operands where it can (activations are in activation.py)."""
from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .base import Field, OpInfo, ShapeError


def broadcast(t: TensorType, out: TensorType) -> str | None:
    """How operand `t` spreads over a C, H, W output `out`: "channel" (a C x 1 x 1 one, a value
    per channel), "pixel" (a 1 x H x W one, a value per pixel), or None (the same shape)."""
    if len(out.shape) != 3 or t.shape == out.shape:
        return None
    if t.shape == (out.channels, 1, 1):
        return "channel"
    if t.shape == (1,) + tuple(out.shape[1:]):
        return "pixel"
    return None


def elementwise_shape(op):
    def shape(attrs, ins):
        out = max(ins, key=lambda t: t.numel)
        if any(t.shape != out.shape and not broadcast(t, out) for t in ins):
            raise ShapeError(f"{op} needs inputs of one shape (or C x 1 x 1 ones, broadcast over "
                             "the pixels, or 1 x H x W ones, broadcast over the channels), got "
                             + " and ".join(str(t) for t in ins), field="inputs")
        return out
    return shape


def add(attrs, inputs, params):
    out = np.broadcast_to(inputs[0], np.broadcast_shapes(*(x.shape for x in inputs))).copy()
    for other in inputs[1:]:
        out += other
    return out


def mul(attrs, inputs, params):
    return (inputs[0] * inputs[1]).astype(np.float32, copy=False)


def div(attrs, inputs, params):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inputs[0] / inputs[1]).astype(np.float32, copy=False)


def torch_add(torch, attrs, args, params):
    y = args[0]
    for other in args[1:]:
        y = y + other
    return y


def lower(ctx, node):
    """eltwise.cu.j2: one thread per element; a broadcast operand is read at its channel (C x 1
    x 1) or at its pixel (1 x H x W)."""
    index = {"channel": "c", "pixel": "pix", None: "r"}
    reads = [f"__ldg({ref.var} + n * {ref.var.upper()}_IMAGE + "
             f"{index[broadcast(ctx.graph[name].type, node.type)]})"
             for ref, name in zip(ctx.inputs(node), node.inputs)]
    symbol = {"add": " + ", "mul": " * ", "div": " / "}[node.op]
    return ctx.kernel(node, "eltwise.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      ctx.consts(node), {"kind": node.op, "expr": symbol.join(reads)})


OPS = [
    OpInfo("add", None, {"inputs": Field("refs", required=True),
                         "relu": Field("bool", default=False)},
           elementwise_shape("add"), add, lower, torch_add,
           flops=lambda a, i, o: o.numel * (len(i) - 1), epilogues=("activation",)),
    OpInfo("mul", 2, {"inputs": Field("refs", required=True),
                      "relu": Field("bool", default=False)},
           elementwise_shape("mul"), mul, lower,
           lambda torch, a, args, p: args[0] * args[1], flops=lambda a, i, o: o.numel,
           epilogues=("activation",)),
    OpInfo("div", 2, {"inputs": Field("refs", required=True),
                      "relu": Field("bool", default=False)},
           elementwise_shape("div"), div, lower,
           lambda torch, a, args, p: args[0] / args[1], flops=lambda a, i, o: o.numel,
           epilogues=("activation",)),
]
