"""Max and average pooling (PyTorch's MaxPool2d / AvgPool2d, ceil_mode, count_include_pad, and
MaxPool2d's dilation)."""
from __future__ import annotations

from math import prod

import numpy as np

from .arrays import pad, reduce_windows
from .base import Field, OpInfo, ShapeError, pool_out_size, window_shape
from ..ir.graph import TensorType

FIELDS = {"kernel": Field("pos_pair", required=True), "stride": Field("pos_pair"),
          "pad": Field("nonneg_pair", default=0), "ceil_mode": Field("bool", default=True),
          "input": Field("ref")}
GLOBAL_FIELDS = dict(FIELDS, kernel=Field("pos_pair"), **{"global": Field("bool", default=False)})
MAX_FIELDS = dict(GLOBAL_FIELDS, dilation=Field("pos_pair", default=1))
AVG_FIELDS = dict(GLOBAL_FIELDS, count_include_pad=Field("bool", default=True))


def dilation(attrs) -> tuple[int, int]:
    """A max pool's taps are dilation rows and columns apart (an IR attribute only where it is
    not 1)."""
    return attrs.get("dilation", (1, 1))


def reach(attrs) -> tuple[int, int]:
    """The rows and columns a window spans: (k - 1) * dilation + 1."""
    return tuple((k - 1) * d + 1 for k, d in zip(attrs["kernel"], dilation(attrs)))


def shape(attrs, ins):
    for k, p, axis in zip(attrs["kernel"], attrs["pad"], ("height", "width")):
        if p * 2 > k:      # PyTorch's rule (of the kernel, not its dilated reach)
            raise ShapeError(f"pad {p} is more than half the kernel {k} ({axis})", field="pad")
    ho, wo, c = window_shape(attrs, ins[0], "pooling",
                             lambda n, k, s, p: pool_out_size(n, k, s, p, attrs["ceil_mode"]),
                             dilation(attrs))
    return TensorType((c, ho, wo))


def from_yaml(values: dict, ins: list[TensorType], given) -> dict:
    """The stride defaults to the kernel; `global: true` pools the whole input;
    count_include_pad is an attribute only when false (PyTorch's default is true)."""
    if values.get("global"):
        if "count_include_pad" in given:
            raise ShapeError("'count_include_pad' cannot be given with global: true",
                             field="count_include_pad")
        if len(ins[0].shape) != 3:
            raise ShapeError("global pooling needs a C,H,W input", field="global")
        for key in ("kernel", "stride", "pad", "ceil_mode", "dilation"):
            if key in given:
                raise ShapeError(f"'{key}' cannot be given with global: true", field=key)
        return dict(kernel=ins[0].spatial, stride=ins[0].spatial, pad=(0, 0), ceil_mode=False,
                    **{"global": True})
    if values.get("kernel") is None:
        raise ShapeError("missing field 'kernel' (or global: true)", field="kernel")
    attrs = dict(kernel=values["kernel"], stride=values.get("stride") or values["kernel"],
                 pad=values["pad"], ceil_mode=values["ceil_mode"])
    if values.get("count_include_pad") is False:
        attrs["count_include_pad"] = False
    if values.get("dilation", (1, 1)) != (1, 1):
        attrs["dilation"] = values["dilation"]
    return attrs


def geometry(attrs, x):
    """kernel (its dilated reach), stride, pad, output size and the far-side padding."""
    _, _, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = reach(attrs), attrs["stride"], attrs["pad"]
    ho = pool_out_size(h, kh, sh, ph, attrs["ceil_mode"])
    wo = pool_out_size(wd, kw, sw, pw, attrs["ceil_mode"])
    # padding on the far side so that every (ceil-mode) window lies inside the array
    bottom = max(ph, (ho - 1) * sh + kh - h - ph)
    right = max(pw, (wo - 1) * sw + kw - wd - pw)
    return (kh, kw), (sh, sw), (ph, pw), (ho, wo), (bottom, right)


def maxpool(attrs, inputs, params):
    x = inputs[0]
    _, s, (ph, pw), out_hw, (bottom, right) = geometry(attrs, x)
    xp = pad(x, ph, pw, bottom, right, value=-np.inf)
    return reduce_windows(xp, attrs["kernel"], s, out_hw, np.maximum, np.float32,
                          dilation(attrs))


def avgpool(attrs, inputs, params):
    """AvgPool2d: with count_include_pad (the default) the divisor counts padding but not the
    part of a ceil-mode window that hangs past the padded input; without, only the part of the
    window inside the input."""
    x = inputs[0]
    _, _, h, wd = x.shape
    k, s, (ph, pw), (ho, wo), (bottom, right) = geometry(attrs, x)
    xp = pad(x, ph, pw, bottom, right)
    sums = reduce_windows(xp, k, s, (ho, wo), np.add, np.float64)
    include = attrs.get("count_include_pad", True)

    def counts(out, stride, pad_, kernel, size):
        start = np.arange(out) * stride - pad_
        if not include:
            return np.minimum(start + kernel, size) - np.maximum(start, 0)
        return np.minimum(start + kernel, size + pad_) - start
    div = np.outer(counts(ho, s[0], ph, k[0], h), counts(wo, s[1], pw, k[1], wd))
    return (sums / div).astype(np.float32)


def lower(ctx, node):
    """pool.cu.j2: one thread per output element."""
    (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
    consts = dict(ctx.consts(node), KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw)
    if dilation(node.attrs) != (1, 1):                # taps DH rows, DW columns apart
        consts.update(DH=dilation(node.attrs)[0], DW=dilation(node.attrs)[1])
    extra = {"kind": node.op}
    if node.op == "avgpool":
        extra["count_include_pad"] = node.attrs.get("count_include_pad", True)
    return ctx.kernel(node, "pool.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      consts, extra)


def torch_max(torch, attrs, args, params):
    return torch.nn.functional.max_pool2d(args[0], attrs["kernel"], attrs["stride"], attrs["pad"],
                                          dilation(attrs), ceil_mode=attrs["ceil_mode"])


def torch_avg(torch, attrs, args, params):
    return torch.nn.functional.avg_pool2d(args[0], attrs["kernel"], attrs["stride"], attrs["pad"],
                                          ceil_mode=attrs["ceil_mode"],
                                          count_include_pad=attrs.get("count_include_pad", True))


def _flops(attrs, ins, out):
    return out.numel * prod(attrs["kernel"])


OPS = [
    OpInfo("maxpool", 1, MAX_FIELDS, shape, maxpool, lower, torch_max, flops=_flops,
           epilogues=("activation",), from_yaml=from_yaml),
    OpInfo("avgpool", 1, AVG_FIELDS, shape, avgpool, lower, torch_avg, flops=_flops,
           epilogues=("activation",), from_yaml=from_yaml),
]
