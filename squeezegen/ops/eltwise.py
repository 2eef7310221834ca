"""`add` of two or more tensors of one shape. The fuse_add pass moves a skip add into the
epilogue of the kernel that produces one of its operands where it can (activations are in
activation.py)."""
from __future__ import annotations

from .base import Field, OpInfo, ShapeError


def same_shape(attrs, ins):
    first = ins[0]
    for other in ins[1:]:
        if other.shape != first.shape:
            raise ShapeError("add needs inputs of one shape, got "
                             + " and ".join(str(t) for t in ins), field="inputs")
    return first


def add(attrs, inputs, params):
    out = inputs[0].copy()
    for other in inputs[1:]:
        out += other
    return out


def torch_add(torch, attrs, args, params):
    y = args[0]
    for other in args[1:]:
        y = y + other
    return y


def lower(ctx, node):
    """eltwise.cu.j2: one thread per element."""
    return ctx.kernel(node, "eltwise.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      ctx.consts(node), {"kind": node.op})


OPS = [
    OpInfo("add", None, {"inputs": Field("refs", required=True),
                         "relu": Field("bool", default=False)},
           same_shape, add, lower, torch_add, flops=lambda a, i, o: o.numel * (len(i) - 1)),
]
