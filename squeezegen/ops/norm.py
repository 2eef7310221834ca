"""Per-channel scale and shift: batch normalisation in its inference form (PyTorch's
BatchNorm2d/1d in eval mode), y = (x - running_mean) / sqrt(running_var + eps) * weight + bias,
and `affine`, y = x * weight + bias (what an imported network's Sub/Div/Mul/Add by a constant
per channel or scalar becomes: an input normalisation, a layer scale).

After a conv, deconv or linear layer the fold_batchnorm pass folds either into that layer's
weights and bias (`folded_*`, below); after any other kernel (a pool, an add, a conv with an
activation) the fuse_channel_step pass applies it in that kernel's store (`channel_step`); only
where neither applies (on the network's input, after a concat, on a tensor read twice) it runs as
its own kernel."""
from __future__ import annotations

import numpy as np

from .base import Field, OpInfo, ShapeError

PARAMS = ("weight", "bias", "running_mean", "running_var")


def shape(attrs, ins):
    if len(ins[0].shape) not in (1, 3):
        raise ShapeError("a per-channel scale and shift (batchnorm, affine) needs a C,H,W or a "
                         "K input", field="input")
    return ins[0]


def params(attrs, ins):
    return {name: (ins[0].channels,) for name in PARAMS}


def scale_shift(eps, weight, bias, mean, var) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel affine map, in float64: y = x * scale + shift."""
    scale = weight.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return scale, bias.astype(np.float64) - mean.astype(np.float64) * scale


def batchnorm(attrs, inputs, params):
    x = inputs[0]
    scale, shift = scale_shift(attrs["eps"], *(params[p] for p in PARAMS))
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    return (x * scale.reshape(per_channel) + shift.reshape(per_channel)).astype(np.float32)


def check_params(attrs, params) -> str | None:
    """A variance the normalisation can divide by: running_var + eps > 0 everywhere, in float32
    as the kernels add them (PyTorch's NaN, a kernel's Inf and the reference's huge scale would
    disagree on anything else)."""
    var = params["running_var"]
    bad = ~(var.astype(np.float32) + np.float32(attrs["eps"]) > 0)
    if bad.any():
        first = int(np.argmax(bad))
        return (f"running_var has {int(bad.sum())} value(s) at or below -eps (a variance is "
                f"never negative), first at channel {first}: {float(var[first])!r}")
    return None


def torch_batchnorm(torch, attrs, args, params):
    return torch.nn.functional.batch_norm(args[0], params["running_mean"], params["running_var"],
                                          params["weight"], params["bias"], training=False,
                                          eps=attrs["eps"])


def init(attrs, name, shape, rng):
    """`init-weights`: a BatchNorm that does something (scale near 1, small shifts, variances
    in [0.5, 1.5])."""
    if name == "running_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    centre = 1.0 if name == "weight" else 0.0
    return (centre + 0.1 * rng.standard_normal(shape)).astype(np.float32)


def channel_step(attrs, v, read):
    """The C expression of an inference BatchNorm of `v`, as PyTorch computes it:
    weight * (x - mean) * invstd + bias, with invstd = 1 / sqrt(var + eps)."""
    return (f"{read('weight')} * ({v} - {read('running_mean')}) * "
            f"(1.0f / sqrtf({read('running_var')} + {c_float(attrs['eps'])})) + {read('bias')}")


def lower(ctx, node):
    """eltwise.cu.j2: one thread per element, the channel's scale computed from its parameters
    as PyTorch does (`channel_step`)."""
    return ctx.channel_kernel(node, "inference BatchNorm, as PyTorch computes it")


def c_float(value: float) -> str:
    """A C float literal of `value` (repr: the shortest text that reads back the same)."""
    return f"{float(value)!r}f"


# ---------------------------------------------------------------- affine
AFFINE_PARAMS = ("weight", "bias")


def affine_params(attrs, ins):
    return {name: (ins[0].channels,) for name in AFFINE_PARAMS}


def affine(attrs, inputs, params):
    x = inputs[0]
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    return (x * params["weight"].reshape(per_channel)
            + params["bias"].reshape(per_channel)).astype(np.float32)


def torch_affine(torch, attrs, args, params):
    x = args[0]
    per_channel = (1, -1) + (1,) * (x.dim() - 2)
    return x * params["weight"].reshape(per_channel) + params["bias"].reshape(per_channel)


def affine_init(attrs, name, shape, rng):
    """`init-weights`: scales near 1, small shifts."""
    centre = 1.0 if name == "weight" else 0.0
    return (centre + 0.1 * rng.standard_normal(shape)).astype(np.float32)


def affine_channel_step(attrs, v, read):
    """The C expression of x * weight + bias for `v`."""
    return f"{v} * {read('weight')} + {read('bias')}"


def lower_affine(ctx, node):
    """eltwise.cu.j2: one thread per element, x * weight[c] + bias[c]."""
    return ctx.channel_kernel(node, "per-channel scale and shift: x * weight + bias")


def affine_weight(weight, scale, *, axis: int) -> np.ndarray:
    """The weight of a layer followed by an affine: each output channel (along `axis`) times
    the affine's weight."""
    per_channel = [1] * weight.ndim
    per_channel[axis] = -1
    return weight.astype(np.float64) * scale.astype(np.float64).reshape(per_channel)


def affine_bias(scale, shift, bias=None) -> np.ndarray:
    """The bias of a layer followed by an affine: bias * weight + the affine's bias."""
    before = 0.0 if bias is None else bias.astype(np.float64)
    return before * scale.astype(np.float64) + shift.astype(np.float64)


# ---------------------------------------------------------------- folding (fold_batchnorm pass)
def folded_weight(weight, gamma, var, *, axis: int, eps: float) -> np.ndarray:
    """The weight of a layer followed by a BatchNorm: each output channel (along `axis`)
    scaled by weight / sqrt(var + eps)."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    per_channel = [1] * weight.ndim
    per_channel[axis] = -1
    return weight.astype(np.float64) * scale.reshape(per_channel)


def folded_bias(gamma, beta, mean, var, bias=None, *, eps: float) -> np.ndarray:
    """The bias of a layer followed by a BatchNorm: (bias - mean) * scale + shift."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    before = 0.0 if bias is None else bias.astype(np.float64)
    return (before - mean.astype(np.float64)) * scale + beta.astype(np.float64)


OPS = [
    OpInfo("batchnorm", 1, {"eps": Field("pos_float", default=1e-5),
                            "relu": Field("bool", default=False), "input": Field("ref")},
           shape, batchnorm, lower, torch_batchnorm, params=params,
           flops=lambda a, i, o: 2 * o.numel, epilogues=("activation", "add"), init=init,
           channel_step=channel_step, check_params=check_params),
    OpInfo("affine", 1, {"relu": Field("bool", default=False), "input": Field("ref")},
           shape, affine, lower_affine, torch_affine, params=affine_params,
           flops=lambda a, i, o: 2 * o.numel, epilogues=("activation", "add"), init=affine_init,
           channel_step=affine_channel_step),
]
