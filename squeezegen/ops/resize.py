"""Resizing an image: nearest or bilinear, to a size or by a scale, in the coordinate modes of
ONNX's Resize, computed as PyTorch's F.interpolate computes them (float32 coordinates).

For output pixel d of an axis with input size n, output size m and ratio r (1 / scale where a
scale is given, as F.interpolate(scale_factor=...) and ONNX's `scales` use it, else n / m):

    half_pixel          src = max((d + 0.5) * r - 0.5, 0)       F.interpolate(align_corners=False)
    pytorch_half_pixel  the same, but 0 where m == 1
    align_corners       src = d * (n - 1) / (m - 1)             F.interpolate(align_corners=True)
    asymmetric          src = d * r

bilinear blends the two neighbours of floor(src) (the last pixel repeats at the far edge);
nearest takes floor(src) for asymmetric (PyTorch's "nearest", which maps d to d where m = n and
to d / 2 where m = 2n whatever the scale) and floor((d + 0.5) * r) for half_pixel (PyTorch's
"nearest-exact"), clamped to n - 1.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .activation import c_float
from .base import MAX_DIM, Field, OpInfo, ShapeError, need_image

MODES = ("nearest", "bilinear")
COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
NEAREST_COORDINATES = ("asymmetric", "half_pixel")
F32 = np.float32

FIELDS = {"mode": Field("choice", required=True, choices=MODES),
          "size": Field("pos_pair"), "scale": Field("pos_float_pair"),
          "coordinates": Field("choice", choices=COORDINATES), "input": Field("ref")}


def from_yaml(values, ins, given):
    _, h, w = need_image(ins[0], "resize")
    if ("size" in values) == ("scale" in values):
        raise ShapeError("give exactly one of size and scale", field="size" if "size" in values
                         else "scale")
    mode = values["mode"]
    coordinates = values.get("coordinates") or ("half_pixel" if mode == "bilinear" else
                                                "asymmetric")
    if mode == "nearest" and coordinates not in NEAREST_COORDINATES:
        raise ShapeError(f"nearest resizing takes coordinates asymmetric (PyTorch's nearest) or "
                         f"half_pixel (nearest-exact), not {coordinates}", field="coordinates")
    attrs = {"mode": mode, "coordinates": coordinates}
    if "scale" in values:
        attrs["scale"] = values["scale"]
        attrs["size"] = (int(np.floor(h * values["scale"][0])),
                         int(np.floor(w * values["scale"][1])))
    else:
        attrs["size"] = values["size"]
    return attrs


def shape(attrs, ins):
    c, _, _ = need_image(ins[0], "resize")
    if min(attrs["size"]) < 1 or max(attrs["size"]) > MAX_DIM:
        raise ShapeError(f"the output would be {attrs['size'][0]}x{attrs['size'][1]}"
                         + (f" (at most {MAX_DIM} a side)" if max(attrs["size"]) > MAX_DIM else ""),
                         field="scale" if "scale" in attrs else "size")
    return TensorType((c,) + tuple(attrs["size"]))


def ratio(attrs, axis: int, n: int, m: int) -> np.float32:
    """The float32 step between output pixels in input pixels, as PyTorch computes it."""
    if attrs["coordinates"] == "align_corners":
        return F32(n - 1) / F32(m - 1) if m > 1 else F32(0)
    if "scale" in attrs:
        return F32(1.0 / attrs["scale"][axis])
    return F32(n) / F32(m)


def sources(attrs, axis: int, n: int, m: int):
    """(first input pixel, its neighbour, the neighbour's weight) per output pixel of an axis
    (bilinear), or the input pixel (nearest)."""
    r = ratio(attrs, axis, n, m)
    d = np.arange(m, dtype=F32)
    mode, coordinates = attrs["mode"], attrs["coordinates"]
    if mode == "nearest":
        if coordinates == "asymmetric" and m in (n, 2 * n):    # PyTorch's exact shortcuts
            return np.arange(m) // (m // n)
        at = d * r if coordinates == "asymmetric" else (d + F32(0.5)) * r
        return np.minimum(np.floor(at).astype(np.int64), n - 1)
    if coordinates in ("half_pixel", "pytorch_half_pixel"):
        src = np.maximum((d + F32(0.5)) * r - F32(0.5), F32(0))
        if coordinates == "pytorch_half_pixel" and m == 1:
            src = np.zeros_like(src)
    else:                                   # align_corners, asymmetric: src = d * r
        src = d * r
    first = np.minimum(src.astype(np.int64), n - 1)
    step = (first < n - 1).astype(np.int64)
    return first, first + step, np.clip(src - first.astype(F32), F32(0), F32(1)).astype(F32)


def resize(attrs, inputs, params):
    x = inputs[0]
    _, _, h, w = x.shape
    ho, wo = attrs["size"]
    if attrs["mode"] == "nearest":
        rows = x[:, :, sources(attrs, 0, h, ho)]
        return np.ascontiguousarray(rows[:, :, :, sources(attrs, 1, w, wo)])
    h0, h1, lh = sources(attrs, 0, h, ho)
    w0, w1, lw = sources(attrs, 1, w, wo)
    lh, lw = lh[:, None], lw[None, :]
    top = (F32(1) - lw) * x[:, :, h0][:, :, :, w0] + lw * x[:, :, h0][:, :, :, w1]
    bottom = (F32(1) - lw) * x[:, :, h1][:, :, :, w0] + lw * x[:, :, h1][:, :, :, w1]
    return ((F32(1) - lh) * top + lh * bottom).astype(F32)


def torch_resize(torch, attrs, args, params):
    F = torch.nn.functional
    size = None if "scale" in attrs else tuple(attrs["size"])
    scale = tuple(attrs["scale"]) if "scale" in attrs else None
    if attrs["mode"] == "nearest":
        mode = "nearest" if attrs["coordinates"] == "asymmetric" else "nearest-exact"
        return F.interpolate(args[0], size=size, scale_factor=scale, mode=mode)
    if attrs["coordinates"] in ("half_pixel", "align_corners"):
        return F.interpolate(args[0], size=size, scale_factor=scale, mode="bilinear",
                             align_corners=attrs["coordinates"] == "align_corners")
    # asymmetric and pytorch_half_pixel have no F.interpolate form: gather and blend
    x = args[0]
    (h0, h1, lh), (w0, w1, lw) = (
        [torch.as_tensor(a, device=x.device) for a in sources(attrs, axis, n, m)]
        for axis, n, m in ((0, x.shape[2], attrs["size"][0]), (1, x.shape[3], attrs["size"][1])))
    lh, lw = lh[:, None].to(x.dtype), lw[None, :].to(x.dtype)
    top = (1 - lw) * x[:, :, h0][..., w0] + lw * x[:, :, h0][..., w1]
    bottom = (1 - lw) * x[:, :, h1][..., w0] + lw * x[:, :, h1][..., w1]
    return (1 - lh) * top + lh * bottom


def lower(ctx, node):
    """resize.cu.j2: one thread per output element; the float32 ratios are constants."""
    _, hi, wi = ctx.graph[node.inputs[0]].type.shape
    ho, wo = node.attrs["size"]
    extra = {"mode": node.attrs["mode"], "coordinates": node.attrs["coordinates"],
             "rh": c_float(ratio(node.attrs, 0, hi, ho)),
             "rw": c_float(ratio(node.attrs, 1, wi, wo)),
             # PyTorch's nearest maps an axis of the same size, or of twice it, exactly
             "exact_h": {hi: "same", 2 * hi: "double"}.get(ho, ""),
             "exact_w": {wi: "same", 2 * wi: "double"}.get(wo, "")}
    return ctx.kernel(node, "resize.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      ctx.consts(node), extra)


OPS = [
    OpInfo("resize", 1, FIELDS, shape, resize, lower, torch_resize, from_yaml=from_yaml,
           flops=lambda a, i, o: (8 if a["mode"] == "bilinear" else 0) * o.numel,
           epilogues=("activation", "add")),
]
