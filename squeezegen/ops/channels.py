"""Channel rearrangements, each output channel a copy of one input channel: `slice` (channels
[start, stop) of a tensor: torch.chunk, torch.split and x[:, a:b], ONNX Slice and Split on the
channel axis) and `channel_shuffle` (ShuffleNet's: the channels in G groups, read group-major and
written group-minor, as x.view(N, G, C / G, H, W).transpose(1, 2).reshape(N, C, H, W)); and
`flatten` (torch.flatten(x, 1): C,H,W to C*H*W, the values in the same order), for a network
whose output is flattened (a linear layer flattens its input itself)."""
from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .base import Field, OpInfo, ShapeError


def _channels_first(t: TensorType, op: str) -> tuple[int, ...]:
    if len(t.shape) not in (1, 3):
        raise ShapeError(f"{op} needs a C,H,W or a K input", field="input")
    return t.shape


# ---------------------------------------------------------------- slice
SLICE_FIELDS = {"channels": Field("nonneg_pair", required=True,
                                  expects="a list [start, stop] of two non-negative integers"),
                "input": Field("ref")}


def slice_shape(attrs, ins):
    shape = _channels_first(ins[0], "slice")
    start, stop = attrs["channels"]
    if not start < stop <= shape[0]:
        raise ShapeError(f"channels [{start}, {stop}) is not a non-empty range of the input's "
                         f"{shape[0]} channels", field="channels")
    return TensorType((stop - start,) + shape[1:])


def slice_reference(attrs, inputs, params):
    start, stop = attrs["channels"]
    return np.ascontiguousarray(inputs[0][:, start:stop], dtype=np.float32)


def torch_slice(torch, attrs, args, params):
    start, stop = attrs["channels"]
    return args[0][:, start:stop]


def lower_slice(ctx, node):
    """channels.cu.j2: output channel c is input channel START + c."""
    return ctx.kernel(node, "channels.cu.j2", ctx.grid(_elements(ctx, node)),
                      dict(ctx.consts(node), START=node.attrs["channels"][0]),
                      {"source": "START + c", "what": "channels START .. START + CO - 1"})


# ---------------------------------------------------------------- channel_shuffle
SHUFFLE_FIELDS = {"groups": Field("pos_int", required=True), "input": Field("ref")}


def shuffle_shape(attrs, ins):
    shape = _channels_first(ins[0], "channel_shuffle")
    if shape[0] % attrs["groups"]:
        raise ShapeError(f"groups {attrs['groups']} does not divide the {shape[0]} channels",
                         field="groups")
    return ins[0]


def shuffle_reference(attrs, inputs, params):
    x = inputs[0]
    g = attrs["groups"]
    n, c = x.shape[:2]
    y = x.reshape((n, g, c // g) + x.shape[2:]).swapaxes(1, 2)
    return np.ascontiguousarray(y.reshape(x.shape), dtype=np.float32)


def torch_shuffle(torch, attrs, args, params):
    x = args[0]
    g = attrs["groups"]
    n, c = x.shape[:2]
    return x.reshape((n, g, c // g) + tuple(x.shape[2:])).transpose(1, 2).reshape(x.shape)


def lower_shuffle(ctx, node):
    """channels.cu.j2: output channel c is input channel (c % G) * (CI / G) + c / G."""
    return ctx.kernel(node, "channels.cu.j2", ctx.grid(_elements(ctx, node)),
                      dict(ctx.consts(node), G=node.attrs["groups"]),
                      {"source": "(c % G) * (CI / G) + c / G",
                       "what": "the channels of G groups, interleaved"})


# ---------------------------------------------------------------- flatten
def flatten_shape(attrs, ins):
    return TensorType((ins[0].numel,))


def flatten_reference(attrs, inputs, params):
    return np.ascontiguousarray(inputs[0].reshape(len(inputs[0]), -1), dtype=np.float32)


def lower_flatten(ctx, node):
    """eltwise.cu.j2: a copy, element r of an image to element r (the same memory order)."""
    return ctx.kernel(node, "eltwise.cu.j2", ctx.grid(ctx.batch * node.type.numel),
                      ctx.consts(node), {"kind": "flatten", "expr": "xv",
                                         "what": "flatten: a copy, C,H,W read as C*H*W"})


def _elements(ctx, node) -> int:
    return ctx.pixels(node) * node.type.channels if len(node.type.shape) == 3 else \
        ctx.batch * node.type.channels


OPS = [
    OpInfo("slice", 1, SLICE_FIELDS, slice_shape, slice_reference, lower_slice, torch_slice,
           epilogues=("activation", "add")),
    OpInfo("channel_shuffle", 1, SHUFFLE_FIELDS, shuffle_shape, shuffle_reference,
           lower_shuffle, torch_shuffle, epilogues=("activation", "add")),
    OpInfo("flatten", 1, {"input": Field("ref")}, flatten_shape, flatten_reference,
           lower_flatten, lambda torch, attrs, args, params: torch.flatten(args[0], 1)),
]
