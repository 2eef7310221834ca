"""`pixel_shuffle`: C * r * r channels rearranged into an image r times larger (PyTorch's
nn.PixelShuffle, ONNX's DepthToSpace in CRD mode), the sub-pixel upsampling of super-resolution
networks: output channel c at (oh, ow) is input channel (c * r + oh % r) * r + ow % r at
(oh / r, ow / r). `pixel_unshuffle` is its inverse (PyTorch's nn.PixelUnshuffle): each r x r
block of an image becomes r * r channels, output channel (c * r + i) * r + j at (oh, ow) being
input channel c at (oh * r + i, ow * r + j)."""
from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .base import MAX_DIM, Field, OpInfo, ShapeError, need_image

FIELDS = {"factor": Field("pos_int", required=True), "input": Field("ref")}


def shape(attrs, ins):
    c, h, w = need_image(ins[0], "pixel_shuffle")
    r = attrs["factor"]
    if c % (r * r):
        raise ShapeError(f"factor {r} needs the channels ({c}) to be a multiple of {r * r}",
                         field="factor")
    if h * r > MAX_DIM or w * r > MAX_DIM:
        raise ShapeError(f"factor {r} makes a {h * r}x{w * r} image, beyond {MAX_DIM} a side",
                         field="factor")
    return TensorType((c // (r * r), h * r, w * r))


def unshuffle_shape(attrs, ins):
    c, h, w = need_image(ins[0], "pixel_unshuffle")
    r = attrs["factor"]
    if h % r or w % r:
        raise ShapeError(f"factor {r} needs the height and width ({h}x{w}) to be multiples of "
                         f"{r}", field="factor")
    if c * r * r > MAX_DIM:
        raise ShapeError(f"factor {r} makes {c * r * r} channels, beyond {MAX_DIM}",
                         field="factor")
    return TensorType((c * r * r, h // r, w // r))


def pixel_shuffle(attrs, inputs, params):
    x = inputs[0]
    n, c, h, w = x.shape
    r = attrs["factor"]
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y.reshape(n, c // (r * r), h * r, w * r), dtype=np.float32)


def pixel_unshuffle(attrs, inputs, params):
    x = inputs[0]
    n, c, h, w = x.shape
    r = attrs["factor"]
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(y.reshape(n, c * r * r, h // r, w // r), dtype=np.float32)


def torch_pixel_shuffle(torch, attrs, args, params):
    return torch.nn.functional.pixel_shuffle(args[0], attrs["factor"])


def torch_pixel_unshuffle(torch, attrs, args, params):
    return torch.nn.functional.pixel_unshuffle(args[0], attrs["factor"])


def lower(ctx, node):
    """pixel_shuffle.cu.j2 (either direction): one thread per output element, reading its
    input element."""
    return ctx.kernel(node, "pixel_shuffle.cu.j2",
                      ctx.grid(ctx.pixels(node) * node.type.channels),
                      dict(ctx.consts(node), R=node.attrs["factor"]), {"kind": node.op})


OPS = [
    OpInfo("pixel_shuffle", 1, FIELDS, shape, pixel_shuffle, lower, torch_pixel_shuffle,
           epilogues=("activation", "add")),
    OpInfo("pixel_unshuffle", 1, FIELDS, unshuffle_shape, pixel_unshuffle, lower,
           torch_pixel_unshuffle, epilogues=("activation", "add")),
]
