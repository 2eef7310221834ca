"""The op registry: every fact about an IR op in one place.

For each op: how many inputs it takes, its output shape, its parameter tensors (in PyTorch's
layouts), its FLOPs, and whether a kernel of it can carry fused epilogues. The NumPy reference of
each op lives in `reference/numpy_ops.py` (`OP_IMPLS`, keyed by the op name); its CUDA template in
`templates/` is chosen by `codegen/kernels.py:lower_node`, from the op and the tile the scheduler
picked. Semantics are PyTorch's: Conv2d, ConvTranspose2d, MaxPool2d/AvgPool2d (with ceil_mode
and count_include_pad), Linear (on the input flattened in C,H,W order), Softmax over channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

from .graph import Attrs, TensorType


class ShapeError(Exception):
    """An op cannot be applied to its inputs; `field` names the attribute at fault, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


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


# ---------------------------------------------------------------- helpers
def _need_image(t: TensorType, what: str) -> tuple[int, int, int]:
    if len(t.shape) != 3:
        raise ShapeError(f"{what} needs a C,H,W input, got a vector of {t.shape[0]} "
                         "(it comes after a linear layer)", field="input")
    return t.shape


def _window_shape(attrs: Attrs, inp: TensorType, what: str, size_fn) -> TensorType:
    c, h, w = _need_image(inp, what)
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    ho, wo = size_fn(h, kh, sh, ph), size_fn(w, kw, sw, pw)
    if ho < 1 or wo < 1:
        raise ShapeError(f"kernel {kh}x{kw} does not fit the {h}x{w} input with pad {ph}x{pw} "
                         f"(output would be {ho}x{wo})", field="kernel")
    return ho, wo, c


def _conv_shape(attrs, ins):
    ho, wo, _ = _window_shape(attrs, ins[0], "conv",
                              lambda n, k, s, p: conv_out_size(n, k, s, p))
    if "pool" in attrs:              # a max pool fused by the fuse_pool pass (whole windows)
        ph, pw = attrs["pool"]
        ho, wo = ho // ph, wo // pw
    return TensorType((attrs["out"], ho, wo))


def pool_window(attrs) -> int:
    """Conv output pixels per stored pixel: the fused max pool's window (1 without one)."""
    return prod(attrs["pool"]) if "pool" in attrs else 1


def _deconv_shape(attrs, ins):
    _, h, w = _need_image(ins[0], "deconv")
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    ho, wo = deconv_out_size(h, kh, sh, ph), deconv_out_size(w, kw, sw, pw)
    if ho < 1 or wo < 1:
        raise ShapeError(f"pad {ph}x{pw} crops the whole {h}x{w} transposed-convolution output "
                         f"(output would be {ho}x{wo})", field="pad")
    return TensorType((attrs["out"], ho, wo))


def _pool_shape(attrs, ins):
    for k, p, axis in zip(attrs["kernel"], attrs["pad"], ("height", "width")):
        if p * 2 > k:      # PyTorch's rule: a window may not lie entirely in the padding
            raise ShapeError(f"pad {p} is more than half the kernel {k} ({axis})", field="pad")
    ho, wo, c = _window_shape(attrs, ins[0], "pooling",
                              lambda n, k, s, p: pool_out_size(n, k, s, p, attrs["ceil_mode"]))
    return TensorType((c, ho, wo))


def _same_shape(op):
    def shape(attrs, ins):
        first = ins[0]
        for other in ins[1:]:
            if other.shape != first.shape:
                raise ShapeError(f"{op} needs inputs of one shape, got "
                                 + " and ".join(str(t) for t in ins), field="inputs")
        return first
    return shape


def _concat_shape(attrs, ins):
    ranks = {len(t.shape) for t in ins}
    if ranks != {len(ins[0].shape)} or any(t.shape[1:] != ins[0].shape[1:] for t in ins):
        raise ShapeError("concat needs inputs of the same height and width, got "
                         + ", ".join(str(t) for t in ins), field="inputs")
    return TensorType((sum(t.shape[0] for t in ins),) + ins[0].shape[1:])


def _conv_params(attrs, ins):
    (kh, kw) = attrs["kernel"]
    p = {"weight": (attrs["out"], ins[0].channels, kh, kw)}
    if attrs["bias"]:
        p["bias"] = (attrs["out"],)
    return p


def _deconv_params(attrs, ins):
    (kh, kw) = attrs["kernel"]
    p = {"weight": (ins[0].channels, attrs["out"], kh, kw)}
    if attrs["bias"]:
        p["bias"] = (attrs["out"],)
    return p


def _linear_params(attrs, ins):
    p = {"weight": (attrs["out"], ins[0].numel)}
    if attrs["bias"]:
        p["bias"] = (attrs["out"],)
    return p


def _no_params(attrs, ins):
    return {}


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class OpInfo:
    name: str
    arity: int | None                          # None: two or more
    shape: Callable[[Attrs, list[TensorType]], TensorType]
    params: Callable[[Attrs, list[TensorType]], dict[str, tuple[int, ...]]]
    flops: Callable[[Attrs, list[TensorType], TensorType], int]
    takes_epilogue: bool = False               # conv-like: relu / add can be fused into its store

    def param_count(self, attrs: Attrs, ins: list[TensorType]) -> int:
        return sum(prod(s) for s in self.params(attrs, ins).values())


OPS: dict[str, OpInfo] = {op.name: op for op in [
    OpInfo("input", 0, lambda a, i: TensorType(a["shape"]), _no_params, lambda a, i, o: 0),
    OpInfo("conv", 1, _conv_shape, _conv_params,
           lambda a, i, o: (2 * i[0].channels * prod(a["kernel"]) + 1) * o.numel * pool_window(a)
           - o.numel, takes_epilogue=True),
    OpInfo("deconv", 1, _deconv_shape, _deconv_params,
           lambda a, i, o: 2 * i[0].numel * a["out"] * prod(a["kernel"]), takes_epilogue=True),
    OpInfo("maxpool", 1, _pool_shape, _no_params, lambda a, i, o: o.numel * prod(a["kernel"])),
    OpInfo("avgpool", 1, _pool_shape, _no_params, lambda a, i, o: o.numel * prod(a["kernel"])),
    OpInfo("add", None, _same_shape("add"), _no_params, lambda a, i, o: o.numel * (len(i) - 1)),
    OpInfo("concat", None, _concat_shape, _no_params, lambda a, i, o: 0),
    OpInfo("relu", 1, lambda a, i: i[0], _no_params, lambda a, i, o: o.numel),
    OpInfo("linear", 1, lambda a, i: TensorType((a["out"],)), _linear_params,
           lambda a, i, o: 2 * i[0].numel * a["out"], takes_epilogue=True),
    OpInfo("softmax", 1, lambda a, i: i[0], _no_params, lambda a, i, o: 5 * o.numel),
]}


def infer(op: str, attrs: Attrs, ins: list[TensorType]) -> TensorType:
    """The output type of `op` on inputs `ins`; ShapeError when it does not apply."""
    info = OPS[op]
    if info.arity is None and len(ins) < 2:
        raise ShapeError(f"{op} needs at least two inputs, got {len(ins)}", field="inputs")
    out = info.shape(attrs, ins)
    if any(d < 1 for d in out.shape):
        raise ShapeError(f"output shape {out} is empty")
    return out
