"""`pad`: an image padded on each side with a constant, its reflection (the edge pixel not
repeated) or its edge pixels repeated: PyTorch's nn.ConstantPad2d / ZeroPad2d,
nn.ReflectionPad2d and nn.ReplicationPad2d (F.pad's "constant", "reflect" and "replicate"
modes; ONNX Pad's constant, reflect and edge). A convolution's own zero padding is its `pad`
field; this op is for the other modes (the style-transfer and CycleGAN generators pad by
reflection before each convolution) and for padding anything else. `crop` is its inverse:
rows and columns dropped from each side (`x[:, :, t:H - b, l:W - r]`; U-Net's crop before a
skip concat; ONNX Slice of rows and columns), by the same kernel."""
from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .base import MAX_DIM, Field, OpInfo, ShapeError, need_image
from .norm import c_float

MODES = ("constant", "reflect", "replicate")
FIELDS = {"pad": Field("pad", required=True), "mode": Field("choice", default="constant",
                                                             choices=MODES),
          "value": Field("float", default=0.0), "input": Field("ref")}


def _four(attrs, key: str) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of field `key` (the bottom and right in `<key>_end` when
    they differ)."""
    top, left = attrs[key]
    bottom, right = attrs.get(f"{key}_end", attrs[key])
    return top, left, bottom, right


def _four_attrs(values, key: str) -> dict:
    """A [top, left, bottom, right] field as attributes: `key` and, where they differ,
    `<key>_end`."""
    top, left, bottom, right = values[key]
    attrs = {key: (top, left)}
    if (bottom, right) != (top, left):
        attrs[f"{key}_end"] = (bottom, right)
    return attrs


def sides(attrs) -> tuple[int, int, int, int]:
    """(top, left, bottom, right)."""
    return _four(attrs, "pad")


def from_yaml(values, ins, given):
    attrs = {**_four_attrs(values, "pad"), "mode": values["mode"]}
    if values["mode"] == "constant":
        attrs["value"] = values["value"]
    elif "value" in given:
        raise ShapeError(f"'value' is for mode constant, not {values['mode']}", field="value")
    return attrs


def shape(attrs, ins):
    c, h, w = need_image(ins[0], "pad")
    top, left, bottom, right = sides(attrs)
    if attrs["mode"] == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        raise ShapeError(f"reflect padding {top}, {left}, {bottom}, {right} (top, left, bottom, "
                         f"right) must be smaller than the {h}x{w} input on each axis, as in "
                         "PyTorch", field="pad")
    ho, wo = h + top + bottom, w + left + right
    if ho > MAX_DIM or wo > MAX_DIM:
        raise ShapeError(f"the padded image ({ho}x{wo}) is beyond {MAX_DIM} a side", field="pad")
    return TensorType((c, ho, wo))


def pad(attrs, inputs, params):
    top, left, bottom, right = sides(attrs)
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    if attrs["mode"] == "constant":
        return np.pad(inputs[0], widths, constant_values=np.float32(attrs["value"]))
    return np.pad(inputs[0], widths, mode="reflect" if attrs["mode"] == "reflect" else "edge")


def torch_pad(torch, attrs, args, params):
    top, left, bottom, right = sides(attrs)
    if attrs["mode"] == "constant":
        return torch.nn.functional.pad(args[0], (left, right, top, bottom), value=attrs["value"])
    return torch.nn.functional.pad(args[0], (left, right, top, bottom), mode=attrs["mode"])


def lower(ctx, node):
    """pad.cu.j2: one thread per output element, reading the input element it copies."""
    top, left, bottom, right = sides(node.attrs)
    consts = dict(ctx.consts(node), PT=top, PL=left)
    extra = {"mode": node.attrs["mode"]}
    if node.attrs["mode"] == "constant":
        extra["value"] = c_float(node.attrs["value"])
    return ctx.kernel(node, "pad.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      consts, extra)


# ---------------------------------------------------------------- crop: the inverse of a pad
CROP_FIELDS = {"crop": Field("pad", required=True), "input": Field("ref")}


def crop_sides(attrs) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): rows and columns dropped from each side."""
    return _four(attrs, "crop")


def crop_from_yaml(values, ins, given):
    return _four_attrs(values, "crop")


def crop_shape(attrs, ins):
    c, h, w = need_image(ins[0], "crop")
    top, left, bottom, right = crop_sides(attrs)
    if top + bottom >= h or left + right >= w:
        raise ShapeError(f"cropping {top}, {left}, {bottom}, {right} (top, left, bottom, right) "
                         f"leaves nothing of the {h}x{w} input", field="crop")
    return TensorType((c, h - top - bottom, w - left - right))


def crop(attrs, inputs, params):
    top, left, bottom, right = crop_sides(attrs)
    x = inputs[0]
    return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]


def torch_crop(torch, attrs, args, params):
    top, left, bottom, right = crop_sides(attrs)
    x = args[0]
    return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]


def lower_crop(ctx, node):
    """pad.cu.j2 in its crop form: one thread per output element, copying the input element
    `top` rows down and `left` columns right of it."""
    top, left, _, _ = crop_sides(node.attrs)
    consts = dict(ctx.consts(node), PT=-top, PL=-left)
    return ctx.kernel(node, "pad.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      consts, {"mode": "crop"})


OPS = [
    OpInfo("pad", 1, FIELDS, shape, pad, lower, torch_pad, epilogues=("activation", "add"),
           from_yaml=from_yaml),
    OpInfo("crop", 1, CROP_FIELDS, crop_shape, crop, lower_crop, torch_crop,
           epilogues=("activation", "add"), from_yaml=crop_from_yaml),
]
