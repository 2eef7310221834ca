"""Reductions over the channels of each pixel: `reduce_channels` with `mode: mean`, `max` or
`l2` (PyTorch's x.mean(1, keepdim=True) and x.amax(1, keepdim=True), as in CBAM's spatial
attention, and x.norm(dim=1, keepdim=True), the L2 norm F.normalize divides by): a C,H,W tensor
to 1,H,W."""
from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .base import Field, OpInfo, ShapeError

FIELDS = {"mode": Field("choice", required=True, choices=("mean", "max", "l2")),
          "input": Field("ref")}


def shape(attrs, ins):
    if len(ins[0].shape) != 3:
        raise ShapeError("reduce_channels needs a C,H,W input", field="input")
    return TensorType((1,) + tuple(ins[0].shape[1:]))


def reduce_channels(attrs, inputs, params):
    x = inputs[0]
    if attrs["mode"] == "max":
        return x.max(axis=1, keepdims=True).astype(np.float32)
    if attrs["mode"] == "l2":
        x = x.astype(np.float64)
        return np.sqrt((x * x).sum(axis=1, keepdims=True)).astype(np.float32)
    return x.astype(np.float64).mean(axis=1, keepdims=True).astype(np.float32)


def torch_reduce(torch, attrs, args, params):
    x = args[0]
    if attrs["mode"] == "l2":
        return torch.linalg.vector_norm(x, 2, dim=1, keepdim=True)
    return x.amax(1, keepdim=True) if attrs["mode"] == "max" else x.mean(1, keepdim=True)


def lower(ctx, node):
    """reduce_channels.cu.j2: one thread per pixel, the channels in order."""
    return ctx.kernel(node, "reduce_channels.cu.j2", ctx.grid(ctx.pixels(node)),
                      ctx.consts(node), {"mode": node.attrs["mode"]})


OPS = [
    OpInfo("reduce_channels", 1, FIELDS, shape, reduce_channels, lower, torch_reduce,
           flops=lambda a, i, o: i[0].numel * (2 if a["mode"] == "l2" else 1),
           epilogues=("activation",)),
]
