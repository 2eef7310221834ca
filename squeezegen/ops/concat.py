"""Concatenation along channels. The fire_concat pass lets operands write their slice in place;
a kernel copies only the operands that could not."""
from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .base import Field, OpInfo, ShapeError


def shape(attrs, ins):
    ranks = {len(t.shape) for t in ins}
    if ranks != {len(ins[0].shape)} or any(t.shape[1:] != ins[0].shape[1:] for t in ins):
        raise ShapeError("concat needs inputs of the same height and width, got "
                         + ", ".join(str(t) for t in ins), field="inputs")
    return TensorType((sum(t.shape[0] for t in ins),) + ins[0].shape[1:])


def concat(attrs, inputs, params):
    return np.concatenate(inputs, axis=1)


def lower(ctx, node):
    """concat.cu.j2 over the operands not written in place; no kernel when all are."""
    in_place = set(node.attrs.get("in_place", ()))
    if in_place == set(node.inputs):
        return None
    copies, offset = [], 0
    for ref, name in zip(ctx.inputs(node), node.inputs):
        c = ctx.graph[name].type.channels
        if name not in in_place:
            copies.append((ref, offset, c))
        offset += c
    copied = sum(c for _, _, c in copies)
    consts = dict(ctx.consts(node), CCOPY=copied)
    return ctx.kernel(node, "concat.cu.j2", ctx.grid(ctx.pixels(node) * copied), consts,
                      {"copies": copies}, ins=[r for r, _, _ in copies])


OPS = [
    OpInfo("concat", None, {"inputs": Field("refs", required=True)}, shape, concat, lower,
           lambda torch, a, args, p: torch.cat(args, 1)),
]
