"""What an op entry is made of: `OpInfo`, the field types of the model language, `ShapeError`,
and the output-size arithmetic the op families share.

Nothing here imports the rest of squeezegen beyond the IR's data types, so every stage (frontend,
passes, codegen, runtime, the reference) can depend on the registry without a cycle.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable

import numpy as np

from ..ir.graph import Attrs, Node, TensorType

MAX_DIM = 1 << 20          # no single channel count / spatial size / kernel may exceed this


class ShapeError(Exception):
    """An op cannot be applied to its inputs; `field` names the attribute at fault, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# ---------------------------------------------------------------- the model language's fields
@dataclass(frozen=True)
class Field:
    kind: str                  # pos_int | pos_pair | nonneg_pair | pad | pos_float | float |
                               # pos_float_pair | bool | ref | refs | choice
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()     # the words a `choice` field takes
    expects: str = ""                 # what it takes, where the kind's words would mislead

    def describe(self) -> str:
        if self.expects:
            return self.expects
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return describe(self.kind)

    def check(self, value: Any) -> Any:
        """The value normalised; ValueError with the expectation when it is wrong."""
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                shown = f"'{value}'" if isinstance(value, str) else repr(value)
                raise ValueError(f"must be {self.describe()}, got {shown}")
            return value
        try:
            return check_value(self.kind, value)
        except ValueError:
            if not self.expects:
                raise
            raise ValueError(f"must be {self.expects}, got {value!r}") from None


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

# fields that choose operands or add a layer after the op, not attributes of the op itself
WIRING_FIELDS = ("input", "inputs", "relu")


def describe(kind: str) -> str:
    return {"pos_int": "a positive integer",
            "pos_pair": "a positive integer or a list [h, w] of two",
            "nonneg_pair": "a non-negative integer or a list [h, w] of two",
            "pad": "a non-negative integer, a list [h, w] or a list [top, left, bottom, right]",
            "pos_float": "a positive number",
            "float": "a number",
            "pos_float_pair": "a positive number or a list [h, w] of two",
            "bool": "true or false",
            "ref": "the name of an earlier layer (or 'input')",
            "refs": "a list of at least two earlier layer names"}[kind]


def check_value(kind: str, value: Any) -> Any:
    """The value normalised (pairs as tuples); ValueError with the expectation when it is wrong.
    Values are checked strictly: `true` is not an int, `"3"` is not an int, 3.0 is not an int."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def bad():
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        return ValueError(f"must be {describe(kind)}, got {shown}"
                          + (" (a string)" if isinstance(value, str) and kind != "ref" else ""))

    if kind == "pad":          # (top, left, bottom, right)
        if isinstance(value, list) and len(value) == 4:
            top, left = check_value("nonneg_pair", value[:2])
            bottom, right = check_value("nonneg_pair", value[2:])
            return (top, left, bottom, right)
        try:
            h, w = check_value("nonneg_pair", value)
        except ValueError:
            raise bad() from None
        return (h, w, h, w)
    if kind in ("pos_int", "pos_pair", "nonneg_pair"):
        low = 0 if kind == "nonneg_pair" else 1
        items = value if (kind != "pos_int" and isinstance(value, list)) else [value]
        if kind != "pos_int" and isinstance(value, list) and len(value) != 2:
            raise bad()
        for v in items:
            if not is_int(v) or v < low:
                raise bad()
            if v > MAX_DIM:
                raise ValueError(f"{v} is absurdly large (the limit is {MAX_DIM})")
        if kind == "pos_int":
            return value
        return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])
    if kind == "pos_float":
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
            value = float(value)   # YAML 1.1 reads 1e-5 (no dot) as a string; YAML 1.2 as 1e-5
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or value == float("inf"):
            raise bad()
        return _in_float32(value)
    if kind == "pos_float_pair":
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != 2:
            raise bad()
        try:
            items = [check_value("pos_float", v) for v in items]
        except ValueError:
            raise bad() from None
        return (items[0], items[-1])
    if kind == "float":
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not abs(value) < float("inf"):
            raise bad()
        return _in_float32(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "ref":
        if not isinstance(value, str):
            raise bad()
        return value
    if kind == "refs":
        if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
            raise bad()
        return tuple(value)
    raise AssertionError(kind)


def _in_float32(value: int | float) -> float:
    """`value` as a float, when the kernels' float32 can hold it; ValueError otherwise (an int
    is compared before it is converted: one beyond a double's range must not overflow)."""
    if abs(value) > FLOAT32_MAX:
        shown = f"{value:g}" if isinstance(value, float) else f"an integer of {len(str(abs(value)))} digits"
        raise ValueError(f"{shown} is beyond float32's range (the kernels compute in float32)")
    return float(value)


FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------- output-size arithmetic
def conv_out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def pool_out_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size; in ceil mode the last window must start inside the input
    or its left padding."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def deconv_out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size - 1) * stride - 2 * pad + kernel


def pool_window(attrs) -> int:
    """Conv output pixels per stored pixel: the fused max pool's window (1 without one)."""
    return prod(attrs["pool"]) if "pool" in attrs else 1


def need_image(t: TensorType, what: str) -> tuple[int, int, int]:
    if len(t.shape) != 3:
        raise ShapeError(f"{what} needs a C,H,W input, got a vector of {t.shape[0]} "
                         "(it comes after a linear layer)", field="input")
    return t.shape


def window_shape(attrs: Attrs, inp: TensorType, what: str, size_fn,
                 dilation=(1, 1)) -> tuple[int, int, int]:
    """(Ho, Wo, C) of a sliding-window op, its taps `dilation` apart (size_fn gets the window's
    reach); ShapeError when the kernel does not fit."""
    c, h, w = need_image(inp, what)
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    (dh, dw) = dilation
    ho, wo = size_fn(h, (kh - 1) * dh + 1, sh, ph), size_fn(w, (kw - 1) * dw + 1, sw, pw)
    if ho < 1 or wo < 1:
        dilated = f" dilated by {dh}x{dw}" if (dh, dw) != (1, 1) else ""
        raise ShapeError(f"kernel {kh}x{kw}{dilated} does not fit the {h}x{w} input with pad "
                         f"{ph}x{pw} (output would be {ho}x{wo})", field="kernel")
    return ho, wo, c


def with_bias(params: dict, attrs) -> dict:
    return dict(params, bias=(attrs["out"],)) if attrs["bias"] else params


# ---------------------------------------------------------------- an op entry
def _no_params(attrs, ins):
    return {}


def _no_flops(attrs, ins, out):
    return 0


def _never(node: Node, batch: int):
    return None


def _yaml_attrs(values: dict, ins: list[TensorType], given) -> dict:
    """The IR attributes of a YAML layer: its fields (in the order the op declares them), less
    those that only wire it up."""
    return {k: v for k, v in values.items() if k not in WIRING_FIELDS}


def he_init(attrs, name: str, shape: tuple[int, ...], rng, fan_in: float | None = None):
    """`init-weights`: biases zero, weights He-initialised (normal, std sqrt(2 / fan-in), the
    fan-in being what one output sums over: every dimension but the first by default)."""
    if name == "bias":
        return np.zeros(shape, np.float32)
    fan_in = prod(shape[1:]) if fan_in is None else fan_in
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


@dataclass(frozen=True)
class OpInfo:
    """Everything squeezegen knows about one IR op. Semantics are PyTorch's.

    name        the op, as in YAML and the IR
    arity       how many operands (None: two or more)
    fields      its fields in the model language (None: not written in YAML, like `input`)
    shape       (attrs, input types) -> output type; ShapeError when it does not apply
    reference   NumPy: (attrs, inputs, params) -> output, batch first, float32
    lower       (codegen.kernels.Lowering, node) -> Kernel, or None when no kernel is needed
    torch       PyTorch: (the torch module, attrs, inputs, params) -> output (the peer)
    params      (attrs, input types) -> {name: shape} of its weights, in PyTorch's layout
    flops       (attrs, input types, output type) -> FLOPs per image
    epilogues   the epilogue steps its kernel can apply before the store: "activation" (any
                activation op) and "add" (of a tensor of its output's shape)
    from_yaml   (checked YAML values with defaults, input types, the fields written) -> IR
                attrs; ShapeError names the field at fault
    tile_kind   (node, batch) -> "gemm" | "deconv" | None: the tiles the scheduler picks from
    packed      (attrs, batch) -> the layout its weight is packed into for the kernels, or None
    init        (attrs, weight name, shape, numpy Generator) -> the array `init-weights` makes
    activation  (attrs, C variable) -> the C expression of an element-wise activation of it,
                or None: activations are fused into the store of the kernel before them
    scale_axis  the axis of its weight that indexes output channels, where a per-channel scale
                after it (a BatchNorm) can be folded into its weights; None: it cannot
    channel_step (attrs, C variable, read) -> the C expression of the op applied to one element
                of a channel, where read(weight name, per_channel=True) is the C expression of
                that weight at the element's channel (at 0 when not per channel); or None. Such
                an op (batchnorm, affine, prelu) runs in the store of the kernel before it when
                it cannot be folded into that kernel's weights, and as its own kernel otherwise
    check_params (attrs, {weight name: float32 array}) -> what is wrong with values that have
                the right shape and are finite (a negative variance), or None
    """
    name: str
    arity: int | None
    fields: dict[str, Field] | None
    shape: Callable[[Attrs, list[TensorType]], TensorType]
    reference: Callable
    lower: Callable | None
    torch: Callable | None
    params: Callable[[Attrs, list[TensorType]], dict[str, tuple[int, ...]]] = _no_params
    flops: Callable[[Attrs, list[TensorType], TensorType], int] = _no_flops
    epilogues: tuple[str, ...] = ()
    from_yaml: Callable[[dict, list[TensorType], set], dict] = _yaml_attrs
    tile_kind: Callable[[Node, int], str | None] = _never
    packed: Callable[[Attrs, int], str | None] = field(default=lambda attrs, batch: None)
    init: Callable = he_init
    scale_axis: int | None = None
    activation: Callable[[Attrs, str], str] | None = None
    channel_step: Callable[[Attrs, str, Callable[..., str]], str] | None = None
    check_params: Callable[[Attrs, dict], str | None] = field(default=lambda attrs, params: None)

    @property
    def takes_epilogue(self) -> bool:
        return bool(self.epilogues)

    @property
    def has_weights(self) -> bool:
        return self.params is not _no_params

    def param_count(self, attrs: Attrs, ins: list[TensorType]) -> int:
        return sum(prod(s) for s in self.params(attrs, ins).values())
