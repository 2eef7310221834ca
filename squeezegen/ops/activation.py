"""Activations: element-wise functions of one tensor, as layers of their own and fused into the
store of the kernel that produces their input (the fuse_relu pass, for every activation); and
`prelu`, whose negative slopes are weights (its own kernel, which takes activations after it).

Each entry's `activation(attrs, v)` is its C expression of the float `v`; the NumPy reference
and the PyTorch peer follow PyTorch's definitions (torch.nn.functional)."""
from __future__ import annotations

import math

import numpy as np

from .base import Field, OpInfo, ShapeError

F32 = np.float32


def c_float(value: float) -> str:
    """A C float literal that reads back as `value` rounded to float32."""
    text = repr(float(F32(value)))
    return text + ("" if ("e" in text or "." in text) else ".0") + "f"


def clamp(v: str, low: str, high: str) -> str:
    """C: `v` clamped to [low, high], a NaN staying NaN (as in PyTorch and NumPy)."""
    return f"({v} < {low} ? {low} : ({v} > {high} ? {high} : {v}))"


def _clip(x, a):
    """x clamped to [min, max]; a bound that is not given is open."""
    if "min" in a:
        x = np.maximum(x, F32(a["min"]))
    if "max" in a:
        x = np.minimum(x, F32(a["max"]))
    return x


def _clip_c(a, v: str) -> str:
    if "min" in a and "max" in a:
        return clamp(v, c_float(a["min"]), c_float(a["max"]))
    if "min" in a:
        return f"({v} < {c_float(a['min'])} ? {c_float(a['min'])} : {v})"
    return f"({v} > {c_float(a['max'])} ? {c_float(a['max'])} : {v})"


def _hardsigmoid(x):
    return np.minimum(np.maximum(x + F32(3), F32(0)), F32(6)) / F32(6)


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x, a):
    """PyTorch's F.gelu in float64: x * Phi(x) exactly (erf), or its tanh approximation."""
    x = x.astype(np.float64)
    if a.get("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)))


def _softplus(x):
    """PyTorch's F.softplus (beta 1, threshold 20): x itself above 20."""
    x64 = x.astype(np.float64)
    return np.where(x64 > 20.0, x64, np.log1p(np.exp(np.minimum(x64, 20.0))))


# nn.SELU's constants (Klambauer et al.): scale * (x if x > 0 else alpha * (exp(x) - 1))
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _selu(x):
    x = x.astype(np.float64)
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))


def _celu(x, a):
    """PyTorch's F.celu: x if x > 0 else alpha * (exp(x / alpha) - 1)."""
    x, alpha = x.astype(np.float64), float(F32(a["alpha"]))
    return np.where(x > 0, x, alpha * np.expm1(x / alpha))


def _logsigmoid(x):
    """PyTorch's F.logsigmoid, log(1 / (1 + exp(-x))) as min(x, 0) - log1p(exp(-|x|)): finite
    where sigmoid(x) underflows to 0 (x below -88)."""
    x = x.astype(np.float64)
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def _gelu_c(a, v: str) -> str:
    if a.get("approximate", "none") == "tanh":      # sqrt(2 / pi) = 0.7978845608...
        return (f"0.5f * {v} * (1.0f + tanhf(0.7978845608f * ({v} + 0.044715f * {v} * {v} "
                f"* {v})))")
    return f"0.5f * {v} * (1.0f + erff({v} * 0.70710678118654752f))"     # 1 / sqrt(2)


def _softplus_c(v: str) -> str:
    return f"({v} > 20.0f ? {v} : log1pf(expf({v})))"


# name -> (fields beyond input/relu, NumPy function of (x, attrs), torch function of
#          (F, x, attrs), C expression of (attrs, v), FLOPs per element)
TABLE = {
    "relu": ({}, lambda x, a: np.maximum(x, F32(0)),
             lambda F, x, a: F.relu(x),
             lambda a, v: f"{v} < 0.0f ? 0.0f : {v}", 1),
    "relu6": ({}, lambda x, a: np.minimum(np.maximum(x, F32(0)), F32(6)),
              lambda F, x, a: F.relu6(x),
              lambda a, v: clamp(v, "0.0f", "6.0f"), 2),
    "clip": ({"min": Field("float"), "max": Field("float")}, lambda x, a: _clip(x, a),
             lambda F, x, a: x.clamp(a.get("min"), a.get("max")), lambda a, v: _clip_c(a, v),
             2),
    "leaky_relu": ({"negative_slope": Field("float", default=0.01)},
                   lambda x, a: np.where(x > 0, x, x * F32(a["negative_slope"])),
                   lambda F, x, a: F.leaky_relu(x, a["negative_slope"]),
                   lambda a, v: f"{v} > 0.0f ? {v} : {v} * {c_float(a['negative_slope'])}", 2),
    "sigmoid": ({}, lambda x, a: F32(1) / (F32(1) + np.exp(-x)),
                lambda F, x, a: F.sigmoid(x),
                lambda a, v: f"1.0f / (1.0f + expf(-{v}))", 4),
    "hardsigmoid": ({}, lambda x, a: _hardsigmoid(x),
                    lambda F, x, a: F.hardsigmoid(x),
                    lambda a, v: f"{clamp(f'({v} + 3.0f)', '0.0f', '6.0f')} / 6.0f", 4),
    "hardswish": ({}, lambda x, a: x * _hardsigmoid(x),
                  lambda F, x, a: F.hardswish(x),
                  lambda a, v: f"{v} * {clamp(f'({v} + 3.0f)', '0.0f', '6.0f')} / 6.0f", 5),
    "silu": ({}, lambda x, a: x / (F32(1) + np.exp(-x)),
             lambda F, x, a: F.silu(x),
             lambda a, v: f"{v} / (1.0f + expf(-{v}))", 5),
    "tanh": ({}, lambda x, a: np.tanh(x),
             lambda F, x, a: F.tanh(x),
             lambda a, v: f"tanhf({v})", 4),
    "elu": ({"alpha": Field("float", default=1.0)},
            lambda x, a: np.where(x > 0, x, F32(a["alpha"]) * np.expm1(x)),
            lambda F, x, a: F.elu(x, a["alpha"]),
            lambda a, v: f"{v} > 0.0f ? {v} : {c_float(a['alpha'])} * expm1f({v})", 4),
    "gelu": ({"approximate": Field("choice", default="none", choices=("none", "tanh"))},
             _gelu, lambda F, x, a: F.gelu(x, approximate=a["approximate"]), _gelu_c, 8),
    "softplus": ({}, lambda x, a: _softplus(x),
                 lambda F, x, a: F.softplus(x),
                 lambda a, v: _softplus_c(v), 4),
    "mish": ({}, lambda x, a: x.astype(np.float64) * np.tanh(_softplus(x)),
             lambda F, x, a: F.mish(x),
             lambda a, v: f"{v} * tanhf({_softplus_c(v)})", 8),
    "selu": ({}, lambda x, a: _selu(x),
             lambda F, x, a: F.selu(x),
             lambda a, v: f"{v} > 0.0f ? {c_float(SELU_SCALE)} * {v} : "
                          f"{c_float(SELU_SCALE * SELU_ALPHA)} * expm1f({v})", 4),
    "celu": ({"alpha": Field("pos_float", default=1.0)}, _celu,
             lambda F, x, a: F.celu(x, a["alpha"]),
             lambda a, v: f"{v} > 0.0f ? {v} : {c_float(a['alpha'])} * expm1f({v} / "
                          f"{c_float(a['alpha'])})", 5),
    "softsign": ({}, lambda x, a: x.astype(np.float64) / (1.0 + np.abs(x.astype(np.float64))),
                 lambda F, x, a: F.softsign(x),
                 lambda a, v: f"{v} / (1.0f + fabsf({v}))", 3),
    "logsigmoid": ({}, lambda x, a: _logsigmoid(x),
                   lambda F, x, a: F.logsigmoid(x),
                   lambda a, v: f"fminf({v}, 0.0f) - log1pf(expf(-fabsf({v})))", 5),
}


def _entry(name: str) -> OpInfo:
    fields, numpy_fn, torch_fn, c_expr, flops = TABLE[name]

    def reference(attrs, inputs, params):
        with np.errstate(over="ignore"):          # exp(-x) overflows to inf: the limit is right
            return np.asarray(numpy_fn(inputs[0], attrs), dtype=F32)

    def from_yaml(values, ins, given):
        attrs = {k: values[k] for k in fields if k in values}
        if name == "clip" and not attrs:
            raise ShapeError("clip needs min, max or both (a bound not given is open)",
                             field="min")
        if name == "clip" and len(attrs) == 2 and not attrs["min"] <= attrs["max"]:
            raise ShapeError(f"min {attrs['min']} is above max {attrs['max']}", field="max")
        return attrs

    def lower(ctx, node):
        """eltwise.cu.j2: one thread per element."""
        return ctx.kernel(node, "eltwise.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                          ctx.consts(node), {"kind": name, "expr": c_expr(node.attrs, "xv")})

    yaml_fields = {**fields, "input": Field("ref")}
    return OpInfo(name, 1, yaml_fields, lambda a, i: i[0], reference, lower,
                  lambda torch, a, args, p: torch_fn(torch.nn.functional, args[0], a),
                  flops=lambda a, i, o: flops * o.numel, from_yaml=from_yaml,
                  epilogues=("activation", "add"), activation=c_expr)


OPS = [_entry(name) for name in TABLE]


# ---------------------------------------------------------------- prelu: a slope per channel
PRELU_FIELDS = {"shared": Field("bool", default=False), "relu": Field("bool", default=False),
                "input": Field("ref")}


def prelu_params(attrs, ins):
    """`weight`: the negative slopes, one per channel ([C]), or one for all ([1], `shared`)."""
    return {"weight": (1 if attrs["shared"] else ins[0].channels,)}


def prelu_shape(attrs, ins):
    if len(ins[0].shape) not in (1, 3):
        raise ShapeError("prelu needs a C,H,W or a K input", field="input")
    return ins[0]


def prelu(attrs, inputs, params):
    x = inputs[0]
    slope = params["weight"].reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x > 0, x, x * slope).astype(F32)


def torch_prelu(torch, attrs, args, params):
    return torch.nn.functional.prelu(args[0], params["weight"])


def prelu_init(attrs, name, shape, rng):
    """`init-weights`: PyTorch's 0.25, varied a little per channel."""
    return (0.25 + 0.05 * rng.standard_normal(shape)).astype(F32)


def prelu_channel_step(attrs, v, read):
    """The C expression of PReLU of `v`: v, or the slope times v (a NaN stays NaN)."""
    return f"{v} > 0.0f ? {v} : {read('weight', per_channel=not attrs['shared'])} * {v}"


def lower_prelu(ctx, node):
    """eltwise.cu.j2: one thread per element, x or its channel's slope times x."""
    return ctx.channel_kernel(node, "PReLU: x, or x times " + (
        "the" if node.attrs["shared"] else "its channel's") + " negative slope (a NaN stays NaN)")


OPS.append(OpInfo("prelu", 1, PRELU_FIELDS, prelu_shape, prelu, lower_prelu, torch_prelu,
                  params=prelu_params, flops=lambda a, i, o: 2 * o.numel,
                  epilogues=("activation", "add"), init=prelu_init,
                  channel_step=prelu_channel_step))
