"""Softmax over the channels of each pixel, or its logarithm (`log: true`, PyTorch's
log_softmax: x - max - log(sum(exp(x - max))), exact where the softmax underflows to 0)."""
from __future__ import annotations

import numpy as np

from .base import Field, OpInfo


def softmax(attrs, inputs, params):
    # NumPy's sum order follows the memory layout: one layout, one result bit for bit (the
    # planned executor hands over strided views of its arena)
    x = np.ascontiguousarray(inputs[0])
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    if attrs.get("log"):
        return (shifted - np.log(total)).astype(np.float32)
    return (e / total).astype(np.float32)


def lower(ctx, node):
    """softmax.cu.j2: one thread per pixel."""
    return ctx.kernel(node, "softmax.cu.j2", ctx.grid(ctx.pixels(node)), ctx.consts(node),
                      {"log": bool(node.attrs.get("log"))})


def torch_softmax(torch, attrs, args, params):
    f = torch.nn.functional.log_softmax if attrs.get("log") else torch.nn.functional.softmax
    return f(args[0], 1)


OPS = [
    OpInfo("softmax", 1, {"input": Field("ref"), "log": Field("bool", default=False)},
           lambda a, i: i[0], softmax, lower, torch_softmax,
           flops=lambda a, i, o: 5 * o.numel),
]
