"""Group normalisation (PyTorch's GroupNorm; InstanceNorm2d is `groups` = channels, LayerNorm
over C,H,W is `groups: 1`): the channels in G groups, each group of each image normalised by its
own mean and variance (over its C/G channels and every pixel, population variance), then an
optional scale and shift per channel:
    y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]
Statistics come from the image itself (no running statistics), so nothing folds it into the
layer before; it runs as its own kernel (one block per image and group), with an activation
fused into its store.

`layernorm` normalises each pixel over its channels instead (ConvNeXt's LayerNorm2d: PyTorch's
LayerNorm(C) of the channels-last view, `x.permute(0, 2, 3, 1)`):
    y = (x - mean over c) / sqrt(var over c + eps) * weight[c] + bias[c]
one thread per pixel (layernorm.cu.j2)."""
from __future__ import annotations

import numpy as np

from .base import Field, OpInfo, ShapeError
from .norm import c_float

FIELDS = {"groups": Field("pos_int", required=True), "eps": Field("pos_float", default=1e-5),
          "affine": Field("bool", default=True), "input": Field("ref")}


def shape(attrs, ins):
    if len(ins[0].shape) != 3:
        raise ShapeError("groupnorm needs a C,H,W input", field="input")
    if ins[0].shape[0] % attrs["groups"]:
        raise ShapeError(f"groups {attrs['groups']} does not divide the {ins[0].shape[0]} "
                         "channels", field="groups")
    return ins[0]


def layernorm_shape(attrs, ins):
    if len(ins[0].shape) != 3:
        raise ShapeError("layernorm needs a C,H,W input (it normalises each pixel over its "
                         "channels)", field="input")
    return ins[0]


def params(attrs, ins):
    return {"weight": (ins[0].channels,), "bias": (ins[0].channels,)} if attrs["affine"] else {}


def groupnorm(attrs, inputs, params):
    """In float64, then rounded once to float32."""
    x = inputs[0].astype(np.float64)
    n, c = x.shape[:2]
    g = x.reshape(n, attrs["groups"], -1)
    mean = g.mean(axis=2, keepdims=True)
    var = ((g - mean) ** 2).mean(axis=2, keepdims=True)
    y = ((g - mean) / np.sqrt(var + attrs["eps"])).reshape(x.shape)
    if attrs["affine"]:
        per_channel = (1, c, 1, 1)
        y = y * params["weight"].astype(np.float64).reshape(per_channel) \
            + params["bias"].astype(np.float64).reshape(per_channel)
    return y.astype(np.float32)


def layernorm(attrs, inputs, params):
    """In float64 over axis 1 (the channels), then rounded once to float32."""
    x = inputs[0].astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    y = (x - mean) / np.sqrt(var + attrs["eps"])
    if attrs["affine"]:
        per_channel = (1, x.shape[1], 1, 1)
        y = y * params["weight"].astype(np.float64).reshape(per_channel) \
            + params["bias"].astype(np.float64).reshape(per_channel)
    return y.astype(np.float32)


def torch_layernorm(torch, attrs, args, params):
    """LayerNorm2d as torchvision's ConvNeXt writes it."""
    x = args[0].permute(0, 2, 3, 1)
    y = torch.nn.functional.layer_norm(x, (x.shape[-1],), params.get("weight"),
                                       params.get("bias"), attrs["eps"])
    return y.permute(0, 3, 1, 2)


def torch_groupnorm(torch, attrs, args, params):
    return torch.nn.functional.group_norm(args[0], attrs["groups"], params.get("weight"),
                                          params.get("bias"), attrs["eps"])


def init(attrs, name, shape, rng):
    """`init-weights`: scales near 1, small shifts."""
    centre = 1.0 if name == "weight" else 0.0
    return (centre + 0.1 * rng.standard_normal(shape)).astype(np.float32)


def lower(ctx, node):
    """groupnorm.cu.j2: one block per image and group, its statistics reduced in the block."""
    groups = node.attrs["groups"]
    consts = dict(ctx.consts(node), G=groups, CG=node.type.channels // groups)
    return ctx.kernel(node, "groupnorm.cu.j2", (ctx.batch * groups, 1, 1), consts,
                      {"eps": c_float(node.attrs["eps"]), "affine": node.attrs["affine"]})


def lower_layernorm(ctx, node):
    """layernorm.cu.j2: one thread per pixel, its channels read three times (mean, variance,
    the normalised values), each read coalesced across the pixels of a warp."""
    return ctx.kernel(node, "layernorm.cu.j2", ctx.grid(ctx.pixels(node)), ctx.consts(node),
                      {"eps": c_float(node.attrs["eps"]), "affine": node.attrs["affine"]})


LAYERNORM_FIELDS = {"eps": Field("pos_float", default=1e-5),
                    "affine": Field("bool", default=True), "input": Field("ref")}

OPS = [
    OpInfo("groupnorm", 1, FIELDS, shape, groupnorm, lower, torch_groupnorm, params=params,
           flops=lambda a, i, o: 8 * o.numel, epilogues=("activation",), init=init),
    OpInfo("layernorm", 1, LAYERNORM_FIELDS, layernorm_shape, layernorm, lower_layernorm,
           torch_layernorm, params=params, flops=lambda a, i, o: 8 * o.numel,
           epilogues=("activation", "add"), init=init),
]
