"""Activations: element-wise functions of one tensor, as layers of their own and fused into the
store of the kernel that produces their input (the fuse_relu pass, for every activation).

Each entry's `activation(attrs, v)` is its C expression of the float `v`; the NumPy reference
and the PyTorch peer follow PyTorch's definitions (torch.nn.functional)."""
from __future__ import annotations

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


def _hardsigmoid(x):
    return np.minimum(np.maximum(x + F32(3), F32(0)), F32(6)) / F32(6)


# name -> (fields beyond input/relu, NumPy function of (x, attrs), torch function of
#          (F, x, attrs), C expression of (attrs, v), FLOPs per element)
TABLE = {
    "relu": ({}, lambda x, a: np.maximum(x, F32(0)),
             lambda F, x, a: F.relu(x),
             lambda a, v: f"{v} < 0.0f ? 0.0f : {v}", 1),
    "relu6": ({}, lambda x, a: np.minimum(np.maximum(x, F32(0)), F32(6)),
              lambda F, x, a: F.relu6(x),
              lambda a, v: clamp(v, "0.0f", "6.0f"), 2),
    "clip": ({"min": Field("float", required=True), "max": Field("float", required=True)},
             lambda x, a: np.minimum(np.maximum(x, F32(a["min"])), F32(a["max"])),
             lambda F, x, a: x.clamp(a["min"], a["max"]),
             lambda a, v: clamp(v, c_float(a["min"]), c_float(a["max"])), 2),
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
}


def _entry(name: str) -> OpInfo:
    fields, numpy_fn, torch_fn, c_expr, flops = TABLE[name]

    def reference(attrs, inputs, params):
        with np.errstate(over="ignore"):          # exp(-x) overflows to inf: the limit is right
            return np.asarray(numpy_fn(inputs[0], attrs), dtype=F32)

    def from_yaml(values, ins, given):
        attrs = {k: values[k] for k in fields if k in values}
        if name == "clip" and not attrs["min"] <= attrs["max"]:
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
                  activation=c_expr)


OPS = [_entry(name) for name in TABLE]
