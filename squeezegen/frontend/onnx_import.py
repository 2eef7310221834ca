"""ONNX model -> squeezegen model YAML + weights (`squeezegen import model.onnx -o NAME.yaml`).

The graph is read with the `onnx` package (an optional extra, imported only here) and each node
is mapped onto the model language: Conv -> conv, ConvTranspose -> deconv, MaxPool/AveragePool ->
maxpool/avgpool, GlobalAveragePool -> avgpool global, GlobalMaxPool -> maxpool over the whole
image, Add -> add, Concat -> concat, Gemm and MatMul(+Add) -> linear, Softmax -> softmax, Relu ->
`relu: true` on the layer before it (or a relu layer). Flatten, flattening Reshape/Squeeze,
Dropout and Identity are no-ops (squeezegen's linear flattens in C,H,W order itself). A squeeze
conv + ReLU feeding exactly a 1x1 and a 3x3 (pad 1) conv + ReLU that are concatenated becomes one
`fire` layer. Constant sub-graphs (Shape, Gather, Concat of shapes...) are evaluated here.

Anything squeezegen cannot express is refused with a ModelError naming the node, its op type and
the attribute at fault: nothing is approximated. Every refusal happens before anything is written.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, SqueezegenError
from ..ir.graph import Attrs, TensorType
from ..ir.ops import ShapeError, infer
from .schema import MAX_DIM, MAX_NAME, identifier_problem

# What `import_onnx` maps (for error messages and the docs).
SUPPORTED_OPS = ("Conv", "ConvTranspose", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "GlobalMaxPool", "Add", "Concat", "Gemm", "MatMul", "Softmax", "Flatten",
                 "Reshape", "Squeeze", "Unsqueeze", "Dropout", "Identity", "Constant")
# Evaluated at import time when all their inputs are constants (shape arithmetic, weight prep).
_FOLDABLE = ("Constant", "Identity", "Cast", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat",
             "Reshape", "Flatten", "Slice", "Transpose", "Add", "Sub", "Mul", "Div")

_INPUT = -1                       # the layer index of the network input
_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def _supported_list() -> str:
    return ", ".join(SUPPORTED_OPS)


def _need_onnx():
    try:
        import onnx                                   # an optional dependency
        from onnx import external_data_helper, helper, numpy_helper  # noqa: F401
    except ImportError:
        raise SqueezegenError("ONNX import needs the onnx package: "
                              "pip install 'squeezegen[onnx]'") from None
    return onnx


# ------------------------------------------------------------------------------- data classes
@dataclass
class _Value:
    """An ONNX tensor as squeezegen sees it: which layer computes it, and its shapes (no batch).

    `shape` is the ONNX shape; `sg` the squeezegen shape of the layer. They differ after a
    Flatten: ONNX has [C*H*W], the layer still [C, H, W] (same values, same order)."""
    layer: int
    shape: tuple[int, ...]
    sg: tuple[int, ...]

    @property
    def flattened(self) -> bool:
        return len(self.shape) == 1 and len(self.sg) == 3


@dataclass
class _Layer:
    op: str
    inputs: list[int]
    fields: dict[str, Any]
    weights: dict[str, np.ndarray]
    sg: tuple[int, ...]
    node: Any                          # the ONNX node it is named after
    name: str = ""
    relu: bool | None = None           # None: the op has no relu field

    def generated(self, name: str) -> list[str]:
        if self.op == "fire":
            return [f"{name}_{r}{s}" for r in ("squeeze", "expand1x1", "expand3x3")
                    for s in ("", "_relu")]
        return [f"{name}_relu"] if self.relu else []


@dataclass
class _Graph:
    """The ONNX graph indexed for the walk."""
    nodes: list
    consts: dict[str, np.ndarray]
    consumers: dict[str, list] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------- helpers
def _node_label(node) -> str:
    return node.name or (node.output[0] if len(node.output) else "") or "(unnamed)"


def _pair_text(p) -> str:
    return str(p[0]) if p[0] == p[1] else f"[{p[0]}, {p[1]}]"


def _yaml_scalar(text: str) -> str:
    """`text` as a YAML scalar that reads back as the same string."""
    import yaml
    try:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) and yaml.safe_load(text) == text:
            return text
    except yaml.YAMLError:
        pass
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment_safe(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(text))[:200]


class _Importer:
    def __init__(self, onnx, model, file: str):
        self.onnx = onnx
        self.model = model
        self.file = file
        self.layers: list[_Layer] = []
        self.values: dict[str, _Value] = {}
        self.absorbed: set[int] = set()          # ids of nodes already folded into a layer
        self.opset = 13
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = int(imp.version)
        self.batch = 1

    # ------------------------------------------------------------------ errors
    def error(self, message: str) -> ModelError:
        return ModelError(message, file=self.file)

    def fail(self, node, message: str, attribute: str | None = None) -> ModelError:
        where = f"node '{_node_label(node)}' ({node.op_type})"
        if attribute:
            where += f", attribute '{attribute}'"
        return self.error(f"{where}: {message}")

    def unsupported(self, node, others=()) -> ModelError:
        def op_of(n):
            return n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        also = ""
        if others:
            shown = [f"'{_node_label(n)}' ({op_of(n)})" for n in others[:6]]
            more = f" and {len(others) - 6} more" if len(others) > 6 else ""
            also = f"; also not supported: {', '.join(shown)}{more}"
        return self.fail(node, f"op {op_of(node)} is not supported{also}; squeezegen imports "
                               f"{_supported_list()} (and evaluates constant shape arithmetic)")

    # ------------------------------------------------------------------ attributes
    def attrs(self, node, allowed) -> dict[str, Any]:
        out = {}
        for a in node.attribute:
            if a.name not in allowed:
                raise self.fail(node, f"attribute '{a.name}' is not supported for {node.op_type}",
                                a.name)
            value = self.onnx.helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            out[a.name] = value
        return out

    def const(self, node, index: int, what: str) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.g.consts:
            raise self.fail(node, f"the {what} (input {index}, '{name}') must be a constant (an "
                                  "initializer or a Constant node), not a computed tensor")
        return self.g.consts[name]

    def weight(self, node, index: int, what: str, ndim: int | None = None) -> np.ndarray:
        w = self.const(node, index, what)
        if w.dtype.kind != "f":
            raise self.fail(node, f"the {what} '{node.input[index]}' has dtype {w.dtype}; "
                                  "weights must be floating point")
        if ndim is not None and w.ndim != ndim:
            raise self.fail(node, f"the {what} '{node.input[index]}' has shape {list(w.shape)}, "
                                  f"expected {ndim} dimensions")
        return np.ascontiguousarray(w, dtype=np.float32)

    def tensor(self, node, index: int = 0) -> _Value:
        name = node.input[index] if index < len(node.input) else ""
        if name in self.values:
            return self.values[name]
        if name in self.g.consts:
            raise self.fail(node, f"input {index} ('{name}') is a constant; squeezegen's layers "
                                  "only take the outputs of other layers (or the network input) "
                                  "here")
        raise self.fail(node, f"input {index} ('{name}') is not computed by any supported node")

    def image(self, node, index: int = 0) -> _Value:
        v = self.tensor(node, index)
        if len(v.shape) != 3:
            raise self.fail(node, f"needs an N,C,H,W input, got shape [N, "
                                  f"{', '.join(map(str, v.shape))}]")
        if v.shape != v.sg:
            raise self.fail(node, f"reads a tensor reshaped to [N, {', '.join(map(str, v.shape))}]"
                                  f" from a {'x'.join(map(str, v.sg))} image; squeezegen has no "
                                  "reshape layer")
        return v

    def window(self, node, a, kernel, op_word):
        """Stride and pad pairs of a conv/pool from ONNX attributes; refuses what cannot map."""
        auto = a.get("auto_pad", "NOTSET")
        if auto not in ("NOTSET", "VALID"):
            raise self.fail(node, f"auto_pad {auto} is not supported; re-export with explicit "
                                  "pads (auto_pad NOTSET)", "auto_pad")
        dil = a.get("dilations", [1, 1])
        if any(int(d) != 1 for d in dil):
            raise self.fail(node, f"dilations {list(dil)} are not supported: squeezegen's "
                                  f"{op_word} has no dilation (only 1)", "dilations")
        strides = a.get("strides", [1, 1])
        if len(strides) != 2 or any(int(s) < 1 for s in strides):
            raise self.fail(node, f"strides {list(strides)}: expected two positive values",
                            "strides")
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if auto == "VALID" and any(pads):
            raise self.fail(node, "auto_pad VALID with non-zero pads", "pads")
        if len(pads) != 4 or any(p < 0 for p in pads):
            raise self.fail(node, f"pads {pads}: expected four non-negative values "
                                  "(top, left, bottom, right)", "pads")
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise self.fail(node, f"asymmetric pads {pads} (top, left, bottom, right) are not "
                                  f"supported: squeezegen's {op_word} pads both sides of an axis "
                                  "equally", "pads")
        return (int(strides[0]), int(strides[1])), (pads[0], pads[1])

    def shape_of(self, node, op, attrs, ins) -> tuple[int, ...]:
        try:
            return infer(op, Attrs(attrs), [TensorType(tuple(t)) for t in ins]).shape
        except ShapeError as exc:
            raise self.fail(node, f"squeezegen's {op} cannot take this: {exc}",
                            {"kernel": "kernel_shape", "pad": "pads"}.get(exc.field)) from None

    # ------------------------------------------------------------------ graph bookkeeping
    def data_consumers(self, tensor: str) -> list:
        return [n for n in self.g.consumers.get(tensor, []) if n.op_type != "Shape"]

    def only_reader(self, tensor: str, op_type: str | None = None):
        """The single node reading `tensor` (once), when it is not a graph output; else None."""
        if tensor in self.g.outputs:
            return None
        readers = self.data_consumers(tensor)
        if len(readers) != 1 or list(readers[0].input).count(tensor) != 1:
            return None
        if op_type is not None and readers[0].op_type != op_type:
            return None
        return readers[0]

    def add_layer(self, layer: _Layer, tensor: str, shape=None) -> int:
        self.layers.append(layer)
        index = len(self.layers) - 1
        self.values[tensor] = _Value(index, tuple(shape or layer.sg), layer.sg)
        return index

    def fuse_relu(self, index: int, tensor: str) -> None:
        """Give layer `index` (whose output is `tensor`) `relu: true` if a Relu alone reads it."""
        relu = self.only_reader(tensor, "Relu")
        if relu is None or len(relu.output) != 1:
            return
        self.attrs(relu, ())
        self.layers[index].relu = True
        self.absorbed.add(id(relu))
        self.values[relu.output[0]] = self.values[tensor]

    # ------------------------------------------------------------------ op mappers
    def conv_spec(self, node):
        a = self.attrs(node, ("auto_pad", "dilations", "group", "kernel_shape", "pads",
                              "strides"))
        x = self.image(node)
        w = self.weight(node, 1, "weight", 4)
        if int(a.get("group", 1)) != 1:
            raise self.fail(node, f"group {a['group']} is not supported: squeezegen's conv has no "
                                  "groups (only group 1)", "group")
        kernel = (int(w.shape[2]), int(w.shape[3]))
        if "kernel_shape" in a and tuple(int(k) for k in a["kernel_shape"]) != kernel:
            raise self.fail(node, f"kernel_shape {list(a['kernel_shape'])} does not match the "
                                  f"weight's shape {list(w.shape)}", "kernel_shape")
        stride, pad = self.window(node, a, kernel, "conv")
        for k, p, axis in zip(kernel, pad, ("height", "width")):
            if 2 * p > k:
                raise self.fail(node, f"pad {p} is more than half the kernel {k} ({axis}); "
                                      "squeezegen's conv needs 2*pad <= kernel", "pads")
        if w.shape[1] != x.sg[0]:
            raise self.fail(node, f"the weight {list(w.shape)} expects {w.shape[1]} input "
                                  f"channels, the input has {x.sg[0]}")
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = self.weight(node, 2, "bias", 1)
            if b.shape != (w.shape[0],):
                raise self.fail(node, f"the bias has shape {list(b.shape)}, expected "
                                      f"[{w.shape[0]}]")
        return x, w, b, kernel, stride, pad

    def map_conv(self, node):
        if self.match_fire(node):
            return
        x, w, b, kernel, stride, pad = self.conv_spec(node)
        f = dict(out=int(w.shape[0]), kernel=kernel, stride=stride, pad=pad, bias=b is not None)
        sg = self.shape_of(node, "conv", f, [x.sg])
        weights = {"weight": w} if b is None else {"weight": w, "bias": b}
        index = self.add_layer(_Layer("conv", [x.layer], f, weights, sg, node, relu=False),
                               node.output[0])
        self.fuse_relu(index, node.output[0])

    def match_fire(self, squeeze) -> bool:
        """squeeze conv 1x1 + Relu -> {conv 1x1 + Relu, conv 3x3 pad 1 + Relu} -> Concat."""
        def plain(node, k, p):
            x, w, b, kernel, stride, pad = self.conv_spec(node)
            ok = kernel == (k, k) and stride == (1, 1) and pad == (p, p) and b is not None
            return (x, w, b) if ok else None

        def conv_relu(node, k, p):
            spec = plain(node, k, p)
            relu = self.only_reader(node.output[0], "Relu") if spec else None
            return (spec, relu) if relu is not None and len(relu.output) == 1 else None

        first = conv_relu(squeeze, 1, 0)
        if first is None:
            return False
        (x, ws, bs), srelu = first
        s_out = srelu.output[0]
        if s_out in self.g.outputs:
            return False
        readers = self.data_consumers(s_out)
        if len(readers) != 2 or any(r.op_type != "Conv" or list(r.input).count(s_out) != 1
                                    or list(r.input).index(s_out) != 0 for r in readers):
            return False
        by_kernel = {}
        for r in readers:
            w = self.g.consts.get(r.input[1]) if len(r.input) > 1 else None
            if w is None or w.ndim != 4:
                return False
            by_kernel[(int(w.shape[2]), int(w.shape[3]))] = r
        if set(by_kernel) != {(1, 1), (3, 3)}:
            return False
        # the expand convs read the squeeze's output: build a value for it before checking them
        sq_sg = (int(ws.shape[0]),) + x.sg[1:]
        saved = self.values.get(s_out)
        self.values[s_out] = _Value(_INPUT, sq_sg, sq_sg)
        try:
            e1 = conv_relu(by_kernel[(1, 1)], 1, 0)
            e3 = conv_relu(by_kernel[(3, 3)], 3, 1)
        finally:
            if saved is None:
                del self.values[s_out]
            else:
                self.values[s_out] = saved
        if e1 is None or e3 is None:
            return False
        (_, w1, b1), r1 = e1
        (_, w3, b3), r3 = e3
        cat = self.only_reader(r1.output[0], "Concat")
        if cat is None or self.only_reader(r3.output[0], "Concat") is not cat:
            return False
        if list(cat.input) != [r1.output[0], r3.output[0]] or len(cat.output) != 1:
            return False
        axis = self.attrs(cat, ("axis",)).get("axis")
        if axis not in (1, -3):
            return False
        f = dict(squeeze=int(ws.shape[0]), expand1x1=int(w1.shape[0]), expand3x3=int(w3.shape[0]))
        sg = (f["expand1x1"] + f["expand3x3"],) + x.sg[1:]
        weights = {"squeeze.weight": ws, "squeeze.bias": bs, "expand1x1.weight": w1,
                   "expand1x1.bias": b1, "expand3x3.weight": w3, "expand3x3.bias": b3}
        for n in (srelu, by_kernel[(1, 1)], r1, by_kernel[(3, 3)], r3, cat):
            self.absorbed.add(id(n))
        self.add_layer(_Layer("fire", [x.layer], f, weights, sg, cat), cat.output[0])
        return True

    def map_conv_transpose(self, node):
        a = self.attrs(node, ("auto_pad", "dilations", "group", "kernel_shape", "output_padding",
                              "output_shape", "pads", "strides"))
        x = self.image(node)
        w = self.weight(node, 1, "weight", 4)
        if int(a.get("group", 1)) != 1:
            raise self.fail(node, f"group {a['group']} is not supported: squeezegen's deconv has "
                                  "no groups (only group 1)", "group")
        if any(int(p) != 0 for p in a.get("output_padding", [])):
            raise self.fail(node, f"output_padding {list(a['output_padding'])} is not supported: "
                                  "squeezegen's deconv has no output padding (only 0)",
                            "output_padding")
        kernel = (int(w.shape[2]), int(w.shape[3]))
        if "kernel_shape" in a and tuple(int(k) for k in a["kernel_shape"]) != kernel:
            raise self.fail(node, f"kernel_shape {list(a['kernel_shape'])} does not match the "
                                  f"weight's shape {list(w.shape)}", "kernel_shape")
        stride, pad = self.window(node, a, kernel, "deconv")
        if w.shape[0] != x.sg[0]:
            raise self.fail(node, f"the weight {list(w.shape)} expects {w.shape[0]} input "
                                  f"channels, the input has {x.sg[0]}")
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = self.weight(node, 2, "bias", 1)
            if b.shape != (w.shape[1],):
                raise self.fail(node, f"the bias has shape {list(b.shape)}, expected "
                                      f"[{w.shape[1]}]")
        f = dict(out=int(w.shape[1]), kernel=kernel, stride=stride, pad=pad, bias=b is not None)
        sg = self.shape_of(node, "deconv", f, [x.sg])
        if "output_shape" in a and tuple(int(d) for d in a["output_shape"][-2:]) != sg[1:]:
            raise self.fail(node, f"output_shape {list(a['output_shape'])} differs from the "
                                  f"{sg[1]}x{sg[2]} the pads give; re-export without "
                                  "output_shape", "output_shape")
        weights = {"weight": w} if b is None else {"weight": w, "bias": b}
        self.add_layer(_Layer("deconv", [x.layer], f, weights, sg, node), node.output[0])

    def map_pool(self, node):
        avg = node.op_type == "AveragePool"
        allowed = ("auto_pad", "ceil_mode", "kernel_shape", "pads", "strides", "dilations")
        a = self.attrs(node, allowed + (("count_include_pad",) if avg else ("storage_order",)))
        if len(node.output) > 1 and node.output[1] and (
                self.data_consumers(node.output[1]) or node.output[1] in self.g.outputs):
            raise self.fail(node, "the Indices output is used; squeezegen's maxpool computes only "
                                  "the maxima")
        x = self.image(node)
        if "kernel_shape" not in a or len(a["kernel_shape"]) != 2:
            raise self.fail(node, "needs a 2-D kernel_shape", "kernel_shape")
        kernel = (int(a["kernel_shape"][0]), int(a["kernel_shape"][1]))
        stride, pad = self.window(node, a, kernel, "avgpool" if avg else "maxpool")
        if avg and int(a.get("count_include_pad", 0)) == 0 and any(pad):
            raise self.fail(node, "count_include_pad 0 with padding is not supported: squeezegen's "
                                  "avgpool counts the padding (count_include_pad=True); re-export "
                                  "with count_include_pad=True or without padding",
                            "count_include_pad")
        op = "avgpool" if avg else "maxpool"
        f = dict(kernel=kernel, stride=stride, pad=pad, ceil_mode=bool(int(a.get("ceil_mode", 0))))
        sg = self.shape_of(node, op, f, [x.sg])
        self.add_layer(_Layer(op, [x.layer], f, {}, sg, node), node.output[0])

    def map_global_pool(self, node):
        self.attrs(node, ())
        x = self.image(node)
        if node.op_type == "GlobalAveragePool":
            layer = _Layer("avgpool", [x.layer], {"global": True}, {}, (x.sg[0], 1, 1), node)
        else:
            hw = x.sg[1:]
            f = dict(kernel=hw, stride=hw, pad=(0, 0), ceil_mode=False)
            layer = _Layer("maxpool", [x.layer], f, {}, self.shape_of(node, "maxpool", f, [x.sg]),
                           node)
        self.add_layer(layer, node.output[0])

    def map_relu(self, node):
        self.attrs(node, ())
        x = self.tensor(node)
        self.add_layer(_Layer("relu", [x.layer], {}, {}, x.sg, node), node.output[0], x.shape)

    def map_add(self, node):
        self.attrs(node, ())
        if len(node.input) != 2:
            raise self.fail(node, f"expected two inputs, got {len(node.input)}")
        for i, name in enumerate(node.input):
            if name in self.g.consts:
                c = self.g.consts[name]
                raise self.fail(node, f"adds the constant '{name}' (shape {list(c.shape)}): a "
                                      "bias-add of a constant is not supported; squeezegen's add "
                                      "sums two layer outputs (a bias belongs in a Conv/Gemm)")
        a, b = self.tensor(node, 0), self.tensor(node, 1)
        if node.input[0] == node.input[1] or a.layer == b.layer:
            raise self.fail(node, "adds a tensor to itself; squeezegen's add needs two different "
                                  "layers")
        if a.shape != b.shape:
            raise self.fail(node, f"broadcasting add of shapes [N, {', '.join(map(str, a.shape))}]"
                                  f" and [N, {', '.join(map(str, b.shape))}] is not supported: "
                                  "squeezegen's add needs two tensors of one shape")
        if a.sg != b.sg:
            raise self.fail(node, f"adds a flattened tensor to one of another layout "
                                  f"({'x'.join(map(str, a.sg))} and {'x'.join(map(str, b.sg))})")
        index = self.add_layer(_Layer("add", [a.layer, b.layer], {}, {}, a.sg, node, relu=False),
                               node.output[0], a.shape)
        self.fuse_relu(index, node.output[0])

    def map_concat(self, node):
        a = self.attrs(node, ("axis",))
        if "axis" not in a:
            raise self.fail(node, "has no axis", "axis")
        ins = [self.tensor(node, i) for i in range(len(node.input))]
        rank = len(ins[0].shape) + 1
        axis = int(a["axis"]) + (rank if int(a["axis"]) < 0 else 0)
        if axis != 1:
            raise self.fail(node, f"concatenation along axis {a['axis']} is not supported: "
                                  "squeezegen concatenates channels (axis 1)", "axis")
        if len(ins) == 1:
            self.values[node.output[0]] = ins[0]
            return
        if len({v.layer for v in ins}) != len(ins):
            raise self.fail(node, "lists the same tensor twice; squeezegen's concat needs "
                                  "different layers")
        if any(len(v.shape) + 1 != rank for v in ins):
            raise self.fail(node, "concatenates tensors of different ranks")
        if rank not in (2, 4) or (rank == 4 and any(v.shape != v.sg for v in ins)):
            raise self.fail(node, "concatenates reshaped tensors ("
                                  + ", ".join("[N, " + ", ".join(map(str, v.shape)) + "]"
                                              for v in ins)
                                  + "); squeezegen concatenates C,H,W images or vectors")
        if rank == 2:
            kinds = {len(v.sg) for v in ins}
            if kinds == {3} and all(v.sg[1:] == (1, 1) for v in ins):
                pass                               # [C,1,1] layers: channel order = vector order
            elif kinds != {1}:
                raise self.fail(node, "concatenates flattened images "
                                      + ", ".join("x".join(map(str, v.sg)) for v in ins)
                                      + "; squeezegen can concatenate them only as C,H,W images "
                                        "(concatenate before the Flatten)")
        sg = self.shape_of(node, "concat", {}, [v.sg for v in ins])
        shape = (sum(v.shape[0] for v in ins),) + ins[0].shape[1:]
        self.add_layer(_Layer("concat", [v.layer for v in ins], {}, {}, sg, node),
                       node.output[0], shape)

    def vector(self, node, index: int = 0) -> _Value:
        x = self.tensor(node, index)
        if len(x.shape) != 1:
            raise self.fail(node, f"needs a 2-D input [N, features] (put a Flatten before it), "
                                  f"got [N, {', '.join(map(str, x.shape))}]")
        return x

    def linear(self, node, x: _Value, w: np.ndarray, b, tensor: str):
        if w.shape[1] != x.shape[0]:
            raise self.fail(node, f"the weight has {w.shape[1]} input features, the input "
                                  f"{x.shape[0]}")
        f = dict(out=int(w.shape[0]), bias=b is not None)
        sg = self.shape_of(node, "linear", f, [x.sg])
        weights = {"weight": np.ascontiguousarray(w)}
        if b is not None:
            weights["bias"] = np.ascontiguousarray(b)
        index = self.add_layer(_Layer("linear", [x.layer], f, weights, sg, node, relu=False),
                               tensor)
        self.fuse_relu(index, tensor)

    def bias_vector(self, node, c: np.ndarray, out: int, what: str):
        if c.dtype.kind != "f":
            raise self.fail(node, f"the {what} has dtype {c.dtype}; it must be floating point")
        if c.size == 1 or (c.ndim <= 2 and c.shape[-1] == out and c.size == out):
            return np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (out,)), dtype=np.float32)
        raise self.fail(node, f"the {what} has shape {list(c.shape)}; expected [{out}] "
                              f"(or [1, {out}])")

    def map_gemm(self, node):
        a = self.attrs(node, ("alpha", "beta", "transA", "transB"))
        for key in ("alpha", "beta"):
            if float(a.get(key, 1.0)) != 1.0:
                raise self.fail(node, f"{key} {a[key]} is not supported (only 1)", key)
        if int(a.get("transA", 0)) != 0:
            raise self.fail(node, "transA 1 is not supported (only 0)", "transA")
        x = self.vector(node, 0)
        w = self.weight(node, 1, "weight", 2)
        if int(a.get("transB", 0)) == 0:
            w = np.ascontiguousarray(w.T)
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = self.bias_vector(node, self.const(node, 2, "bias"), w.shape[0], "bias C")
        self.linear(node, x, w, b, node.output[0])

    def map_matmul(self, node):
        self.attrs(node, ())
        x = self.vector(node, 0)
        w = np.ascontiguousarray(self.weight(node, 1, "weight", 2).T)
        tensor, b = node.output[0], None
        add = self.only_reader(tensor, "Add")
        if add is not None and len(add.input) == 2:
            other = add.input[1] if add.input[0] == tensor else add.input[0]
            if other in self.g.consts:
                b = self.bias_vector(add, self.g.consts[other], w.shape[0], "bias")
                self.attrs(add, ())
                self.absorbed.add(id(add))
                tensor = add.output[0]
        self.linear(node, x, w, b, tensor)

    def map_softmax(self, node):
        a = self.attrs(node, ("axis",))
        x = self.tensor(node)
        rank = len(x.shape) + 1
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        axis += rank if axis < 0 else 0
        reduced = {axis} if self.opset >= 13 else set(range(axis, rank))
        full = (-1,) + x.shape                    # the batch: never a dimension of size 1 here
        if x.flattened and x.sg[1:] != (1, 1):
            raise self.fail(node, f"softmax over a flattened {'x'.join(map(str, x.sg))} image is "
                                  "not supported: squeezegen's softmax is over channels, per "
                                  "pixel", "axis")
        if x.shape != x.sg and not x.flattened:
            raise self.fail(node, f"softmax over a tensor reshaped to [N, "
                                  f"{', '.join(map(str, x.shape))}] from a "
                                  f"{'x'.join(map(str, x.sg))} image is not supported: "
                                  "squeezegen has no reshape layer")
        if {d for d in reduced if full[d] != 1} != {d for d in (1,) if full[d] != 1}:
            raise self.fail(node, f"softmax over axis {a.get('axis', 'default')} of an input "
                                  f"of rank {rank} (opset {self.opset}) is not supported: "
                                  "squeezegen's softmax is over axis 1 (channels)", "axis")
        self.add_layer(_Layer("softmax", [x.layer], {}, {}, x.sg, node), node.output[0], x.shape)

    def map_alias(self, node):
        """Identity and Dropout (inference): the output is the input."""
        if node.op_type == "Dropout":
            self.attrs(node, ("ratio", "seed", "is_test"))
            if len(node.input) > 2 and node.input[2]:
                mode = self.g.consts.get(node.input[2])
                if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                    raise self.fail(node, "training_mode is on (or not a constant); export the "
                                          "model in eval mode")
            if len(node.output) > 1 and node.output[1] and (
                    self.data_consumers(node.output[1]) or node.output[1] in self.g.outputs):
                raise self.fail(node, "the dropout mask output is used")
        else:
            self.attrs(node, ())
        self.values[node.output[0]] = self.tensor(node)

    def map_reshape(self, node):
        """Flatten, Reshape, Squeeze, Unsqueeze: only flattening (or undoing one) is a no-op."""
        x = self.tensor(node)
        full = (self.batch,) + x.shape
        if node.op_type == "Flatten":
            a = self.attrs(node, ("axis",))
            axis = int(a.get("axis", 1))
            axis += len(full) if axis < 0 else 0
            if axis != 1:
                raise self.fail(node, f"Flatten with axis {a.get('axis')} is not supported (only "
                                      "axis 1: keep the batch, flatten the rest)", "axis")
            target = (self.batch, math.prod(x.shape))
        else:
            target = self.new_shape(node, full)
        if len(target) < 2 or target[0] != self.batch:
            raise self.fail(node, f"reshapes [N, {', '.join(map(str, x.shape))}] to "
                                  f"{list(target)}, which does not keep the batch dimension; "
                                  "squeezegen only supports flattening to [N, C*H*W] (in front of "
                                  "a linear layer)")
        # the values keep their order: the layer stays; what reads it checks the new shape
        self.values[node.output[0]] = _Value(x.layer, tuple(target[1:]), x.sg)

    def new_shape(self, node, full: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape of a Reshape / Squeeze / Unsqueeze of a `full`-shaped tensor."""
        ins = []
        for name in node.input[1:]:
            if name and name not in self.g.consts:
                raise self.fail(node, f"the target shape (or axes) '{name}' must be a constant")
            ins.append(self.g.consts[name] if name else None)
        op = node.op_type
        a = self.attrs(node, ("allowzero",) if op == "Reshape" else ("axes",))
        if op == "Reshape":
            if not ins or ins[0] is None:
                raise self.fail(node, "has no target shape")
            target = [int(v) for v in ins[0].reshape(-1)]
            if not a.get("allowzero", 0):
                target = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(target)]
            if target.count(-1) > 1 or any(d < -1 for d in target):
                raise self.fail(node, f"invalid target shape {target}")
            if -1 in target:
                known = math.prod(d for d in target if d != -1)
                total = math.prod(full)
                if known == 0 or total % known:
                    raise self.fail(node, f"cannot reshape {list(full)} to {target}")
                target[target.index(-1)] = total // known
            if math.prod(target) != math.prod(full):
                raise self.fail(node, f"cannot reshape {list(full)} to {target}")
            return tuple(target)
        axes = a.get("axes")
        if axes is None and ins and ins[0] is not None:
            axes = [int(v) for v in ins[0].reshape(-1)]
        if op == "Squeeze":
            if axes is None:
                axes = [i for i, d in enumerate(full) if d == 1]
            axes = {int(ax) % len(full) for ax in axes}
            if any(full[ax] != 1 for ax in axes):
                raise self.fail(node, f"squeezes an axis of {list(full)} that is not 1", "axes")
            return tuple(d for i, d in enumerate(full) if i not in axes)
        if axes is None:
            raise self.fail(node, "has no axes", "axes")
        out_rank = len(full) + len(axes)
        shape = list(full)
        for ax in sorted(int(ax) % out_rank for ax in axes):
            shape.insert(ax, 1)
        return tuple(shape)

    # ------------------------------------------------------------------ constant folding
    def evaluate(self, node, ins: list) -> np.ndarray:
        """The output of a foldable node on constant inputs (NumPy)."""
        op = node.op_type
        a = {x.name: self.onnx.helper.get_attribute_value(x) for x in node.attribute}
        x = ins[0] if ins else None
        if op == "Constant":
            if "value" in a:
                return self.onnx.numpy_helper.to_array(a["value"])
            for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                               ("value_int", np.int64), ("value_ints", np.int64)):
                if key in a:
                    return np.array(a[key], dtype=dtype)
            raise self.fail(node, "only numeric tensor constants are supported",
                            next(iter(a), None))
        if op == "Identity":
            return x
        if op == "Cast":
            from onnx import helper
            return x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))
        if op == "Shape":
            shape = np.array(x.shape if isinstance(x, np.ndarray) else x, np.int64)
            return shape[a.get("start", 0): a.get("end", len(shape))]
        if op == "Gather":
            return np.take(x, ins[1].astype(np.int64), axis=a.get("axis", 0))
        if op in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1] is not None:
                axes = [int(v) for v in ins[1].reshape(-1)]
            if op == "Squeeze":
                if axes is None:
                    return np.squeeze(x)
                return np.squeeze(x, axis=tuple(ax % x.ndim for ax in axes))
            out_rank = x.ndim + len(axes)
            y = x
            for ax in sorted(ax % out_rank for ax in axes):
                y = np.expand_dims(y, ax)
            return y
        if op == "Concat":
            return np.concatenate([np.atleast_1d(v) for v in ins], axis=a["axis"])
        if op == "Reshape":
            target = [int(v) for v in ins[1].reshape(-1)]
            if not a.get("allowzero", 0):
                target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
            return x.reshape(target)
        if op == "Flatten":
            axis = a.get("axis", 1) % max(1, x.ndim) if x.ndim else 0
            return x.reshape(math.prod(x.shape[:axis]), -1)
        if op == "Transpose":
            return np.transpose(x, a.get("perm"))
        if op == "Slice":
            if "starts" in a:
                starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
            else:
                starts, ends = ins[1].tolist(), ins[2].tolist()
                axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else None
                steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else None
            axes = list(range(len(starts))) if axes is None else axes
            steps = [1] * len(starts) if steps is None else steps
            index = [slice(None)] * x.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                index[ax % x.ndim] = slice(int(s), int(e), int(st))
            return x[tuple(index)]
        if op in ("Add", "Sub", "Mul", "Div"):
            l, r = ins[0], ins[1]
            if op == "Div" and l.dtype.kind in "iu":
                return (np.trunc(l / r)).astype(l.dtype)
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                    "Div": np.divide}[op](l, r).astype(np.result_type(l, r))
        raise self.unsupported(node)

    def try_fold(self, node) -> bool:
        """Evaluate `node` when all its (data) inputs are constants; True when it was."""
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Shape":
            src = node.input[0]
            if src in self.values:
                ins = [(self.batch,) + self.values[src].shape]
            elif src in self.g.consts:
                ins = [self.g.consts[src]]
            else:
                return False
        else:
            names = [n for n in node.input]
            if any(n and n not in self.g.consts for n in names):
                return False
            ins = [self.g.consts[n] if n else None for n in names]
        try:
            value = self.evaluate(node, ins)
        except SqueezegenError:
            raise
        except Exception as exc:
            raise self.fail(node, f"cannot evaluate this constant expression: {exc}") from None
        self.g.consts[node.output[0]] = np.asarray(value)
        return True

    # ------------------------------------------------------------------ the walk
    def run(self) -> tuple[str, dict[str, np.ndarray]]:
        graph = self.model.graph
        consts = {}
        for t in graph.initializer:
            consts[t.name] = self.to_array(t)
        self.g = _Graph(nodes=list(graph.node), consts=consts)
        self.g.outputs = [o.name for o in graph.output]
        if not self.g.outputs:
            raise self.error("the ONNX graph has no outputs")
        live = self.live_nodes()
        for node in self.g.nodes:
            if id(node) in live:
                for name in node.input:
                    if name:
                        self.g.consumers.setdefault(name, []).append(node)
        # fail early, before any shape work, on ops squeezegen does not know (all of them)
        unknown = [node for node in self.g.nodes
                   if id(node) in live and (node.domain not in ("", "ai.onnx")
                                            or (node.op_type not in SUPPORTED_OPS
                                                and node.op_type not in _FOLDABLE))]
        if unknown:
            raise self.unsupported(unknown[0], unknown[1:])
        self.read_input()
        mappers = {"Conv": self.map_conv, "ConvTranspose": self.map_conv_transpose,
                   "MaxPool": self.map_pool, "AveragePool": self.map_pool,
                   "GlobalAveragePool": self.map_global_pool,
                   "GlobalMaxPool": self.map_global_pool, "Relu": self.map_relu,
                   "Add": self.map_add, "Concat": self.map_concat, "Gemm": self.map_gemm,
                   "MatMul": self.map_matmul, "Softmax": self.map_softmax,
                   "Dropout": self.map_alias, "Identity": self.map_alias,
                   "Flatten": self.map_reshape, "Reshape": self.map_reshape,
                   "Squeeze": self.map_reshape, "Unsqueeze": self.map_reshape}
        for node in self.g.nodes:
            if id(node) not in live or id(node) in self.absorbed:
                continue
            if node.op_type == "Constant":
                if not self.try_fold(node):
                    raise self.unsupported(node)
                continue
            if self.try_fold(node):
                continue
            mapper = mappers.get(node.op_type)
            if mapper is None:
                raise self.unsupported(node)
            if not node.output or not node.output[0]:
                raise self.fail(node, "has no output")
            mapper(node)
        return self.finish()

    def to_array(self, tensor) -> np.ndarray:
        try:
            return np.asarray(self.onnx.numpy_helper.to_array(tensor))
        except Exception as exc:
            raise self.error(f"cannot read tensor '{tensor.name}': {exc}") from None

    def live_nodes(self) -> set[int]:
        producer = {}
        for node in self.g.nodes:
            for name in node.output:
                if name:
                    producer[name] = node
        live: set[int] = set()
        stack = [producer[o] for o in self.g.outputs if o in producer]
        while stack:
            node = stack.pop()
            if id(node) in live:
                continue
            live.add(id(node))
            stack.extend(producer[i] for i in node.input if i in producer)
        return live

    def read_input(self) -> None:
        graph = self.model.graph
        real = [i for i in graph.input if i.name not in self.g.consts]
        if len(real) != 1:
            names = ", ".join(f"'{i.name}'" for i in real) or "none"
            raise self.error(f"squeezegen models have exactly one input; this graph has "
                             f"{len(real)} ({names})")
        inp = real[0]
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise self.error(f"input '{inp.name}' is not a tensor")
        if tt.elem_type != 1:
            raise self.error(f"input '{inp.name}' has element type "
                             f"{_FLOAT_TYPES.get(tt.elem_type, tt.elem_type)}; squeezegen takes "
                             "float32 input")
        dims = list(tt.shape.dim)
        if not tt.HasField("shape") or len(dims) not in (2, 4):
            raise self.error(f"input '{inp.name}' must be N,C,H,W (or N,K); it has "
                             f"{len(dims) if tt.HasField('shape') else 'no'} dimensions")
        names = ["C", "H", "W"] if len(dims) == 4 else ["K"]
        shape = []
        for d, label in zip(dims[1:], names):
            if not d.HasField("dim_value") or d.dim_value < 1:
                shown = d.dim_param or "unknown"
                raise self.error(f"input '{inp.name}' has a dynamic {label} dimension ('{shown}'); "
                                 "squeezegen compiles for one input size: re-export with a fixed "
                                 "shape (no dynamic_axes except the batch)")
            if d.dim_value > MAX_DIM:
                raise self.error(f"input '{inp.name}': {label} = {d.dim_value} exceeds "
                                 f"{MAX_DIM}")
            shape.append(int(d.dim_value))
        if dims[0].HasField("dim_value") and dims[0].dim_value >= 1:
            self.batch = int(dims[0].dim_value)
        self.input_name = inp.name
        self.input_shape = tuple(shape)
        self.values[inp.name] = _Value(_INPUT, self.input_shape, self.input_shape)

    # ------------------------------------------------------------------ output
    def finish(self) -> tuple[str, dict[str, np.ndarray]]:
        outputs = []
        for o in self.model.graph.output:
            if o.name not in self.values:
                if o.name in self.g.consts:
                    raise self.error(f"output '{o.name}' is a constant, not computed from the "
                                     "input")
                raise self.error(f"output '{o.name}' is not computed by any node")
            v = self.values[o.name]
            if v.layer == _INPUT:
                raise self.error(f"output '{o.name}' is the network input itself")
            same = [n for n, w in outputs if w.layer == v.layer]
            if same:
                raise self.error(f"outputs '{same[0]}' and '{o.name}' are the same layer's "
                                 "output; squeezegen lists each layer once under output")
            self.check_declared(o, v)
            outputs.append((o.name, v))
        keep = self.reachable([v.layer for _, v in outputs])
        self.name_layers(keep)
        weights = {}
        for i in keep:
            layer = self.layers[i]
            for key, w in layer.weights.items():
                weights[f"{layer.name}.{key}"] = np.ascontiguousarray(w, dtype=np.float32)
        return self.render(keep, outputs), weights

    def check_declared(self, o, v: _Value) -> None:
        tt = o.type.tensor_type
        if not o.type.HasField("tensor_type") or not tt.HasField("shape"):
            return
        dims = list(tt.shape.dim)
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(declared) != len(v.shape) + 1 or any(
                d is not None and d != s for d, s in zip(declared[1:], v.shape)):
            shown = ", ".join("?" if d is None else str(d) for d in declared)
            raise self.error(f"output '{o.name}': squeezegen computes shape [N, "
                             f"{', '.join(map(str, v.shape))}] but the ONNX model declares "
                             f"[{shown}] (a pooling rounding rule squeezegen does not follow?)")

    def reachable(self, outs: list[int]) -> list[int]:
        seen, stack = set(), list(outs)
        while stack:
            i = stack.pop()
            if i == _INPUT or i in seen:
                continue
            seen.add(i)
            stack.extend(self.layers[i].inputs)
        return sorted(seen)

    # ------------------------------------------------------------------ names
    def base_name(self, layer: _Layer, scope_count: int) -> str:
        node = layer.node
        raw = node.name or (node.output[0] if node.output else "")
        raw = re.sub(r"_output_\d+$", "", raw)
        parts = [p for p in raw.split("/") if p]
        # torch names a node `/module/path/OpType[_k]`: the last part is the op, not a name
        if len(parts) > 1 and parts[-1].startswith(node.op_type):
            scope, last = parts[:-1], parts[-1]
        else:
            scope, last = [], "_".join(parts)
        # torch names nested modules `/features/features.3/squeeze/Conv`: drop the parents a
        # component repeats (`features` of `features.3`)
        scope = [p for i, p in enumerate(scope)
                 if not (i + 1 < len(scope) and scope[i + 1].startswith(p + "."))]
        if last.startswith(node.op_type):
            last = last.lower()
        if scope:
            base = "_".join(scope)
            if scope_count > 1:          # several layers from one module: add the op's name
                base += "_" + last
        else:
            base = last
        base = re.sub(r"[^A-Za-z0-9_]", "_", base)
        base = re.sub(r"_+", "_", base).strip("_")
        if not base:
            base = layer.op
        elif base[0].isdigit():
            base = f"{layer.op}_{base}"
        return base

    def name_layers(self, keep: list[int]) -> None:
        scopes: dict = {}
        keys = {}
        for i in keep:
            node = self.layers[i].node
            parts = [p for p in (node.name or "").split("/") if p]
            keys[i] = tuple(parts[:-1])
            scopes[keys[i]] = scopes.get(keys[i], 0) + 1
        used: set[str] = {"input"}
        for i in keep:
            layer = self.layers[i]
            room = MAX_NAME - max([len(g) - len("x") for g in layer.generated("x")] + [0]) - 4
            base = self.base_name(layer, scopes[keys[i]])[:room].rstrip("_")
            if base == "input" or identifier_problem(base):
                base = ("layer_" + base)[:room].rstrip("_")
            if identifier_problem(base):
                base = layer.op
            name, n = base, 0
            while (name in used or identifier_problem(name)
                   or any(g in used for g in layer.generated(name))):
                n += 1
                name = f"{base}_{n}"
            layer.name = name
            used.add(name)
            used.update(layer.generated(name))

    # ------------------------------------------------------------------ YAML
    def render(self, keep: list[int], outputs) -> str:
        def name_of(index):
            return "input" if index == _INPUT else self.layers[index].name

        source = Path(self.file).name
        producer = " ".join(p for p in (self.model.producer_name, self.model.producer_version) if p)
        lines = [f"# Imported from {_comment_safe(source)} by `squeezegen import` (ONNX opset "
                 f"{self.opset}" + (f", produced by {_comment_safe(producer)}" if producer else "")
                 + ").",
                 "# Weights: the .npz written with it, keyed <layer>.weight / <layer>.bias "
                 "(<fire>.squeeze.weight, ...)."]
        for oname, v in outputs:
            if v.shape != v.sg:
                lines.append(f"# ONNX output '{_comment_safe(oname)}' is [N, "
                             f"{', '.join(map(str, v.shape))}]: layer '{name_of(v.layer)}' "
                             f"({'x'.join(map(str, v.sg))}), flattened.")
        model_name = self.model_name()
        lines += [f"name: {model_name}",
                  f"description: {_yaml_scalar('imported from ' + source)}",
                  f"input: {{shape: [{', '.join(map(str, self.input_shape))}]}}",
                  "layers:"]
        body = []
        previous = _INPUT
        for i in keep:
            layer = self.layers[i]
            items = [f"name: {_yaml_scalar(layer.name)}", f"op: {layer.op}"]
            if layer.op in ("add", "concat"):
                items.append("inputs: [" + ", ".join(_yaml_scalar(name_of(j))
                                                     for j in layer.inputs) + "]")
            elif layer.inputs[0] != previous:
                items.append(f"input: {_yaml_scalar(name_of(layer.inputs[0]))}")
            f = layer.fields
            if layer.op in ("conv", "deconv", "linear"):
                items.append(f"out: {f['out']}")
            if layer.op == "fire":
                items += [f"squeeze: {f['squeeze']}", f"expand1x1: {f['expand1x1']}",
                          f"expand3x3: {f['expand3x3']}"]
            if f.get("global"):
                items.append("global: true")
            elif "kernel" in f:
                items.append(f"kernel: {_pair_text(f['kernel'])}")
                pool = layer.op in ("maxpool", "avgpool")
                if f["stride"] != ((f["kernel"]) if pool else (1, 1)):
                    items.append(f"stride: {_pair_text(f['stride'])}")
                if f["pad"] != (0, 0):
                    items.append(f"pad: {_pair_text(f['pad'])}")
                if pool:
                    items.append(f"ceil_mode: {'true' if f['ceil_mode'] else 'false'}")
            if layer.relu:
                items.append("relu: true")
            if "bias" in f and not f["bias"]:
                items.append("bias: false")
            body.append(("  - {" + ", ".join(items) + "}", "x".join(map(str, layer.sg))))
            previous = i
        width = min(max(len(text) for text, _ in body), 88)
        lines += [f"{text.ljust(width)}  # {shape}" for text, shape in body]
        names = [_yaml_scalar(name_of(v.layer)) for _, v in outputs]
        lines.append("output: " + (names[0] if len(names) == 1 else "[" + ", ".join(names) + "]"))
        return "\n".join(lines) + "\n"

    def model_name(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(self.file).stem)
        stem = re.sub(r"_+", "_", stem).strip("_")[:MAX_NAME] or "model"
        if stem[0].isdigit():
            stem = ("model_" + stem)[:MAX_NAME]
        if identifier_problem(stem):
            stem = ("model_" + stem)[:MAX_NAME]
        return stem if not identifier_problem(stem) else "model"


# ------------------------------------------------------------------------------- loading
def _check_external(onnx, model, folder: Path, file: str) -> None:
    """Refuse external-data paths that leave the model's folder; load the rest."""
    from onnx import external_data_helper

    base = folder.resolve()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                tensors.append(a.t)
            tensors.extend(a.tensors)
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        parts = re.split(r"[\\/]", location)
        if (not location or os.path.isabs(location) or location.startswith(("/", "\\"))
                or re.match(r"[A-Za-z]:", location) or ".." in parts):
            raise ModelError(f"tensor '{t.name}': external data location '{location}' leaves the "
                             "model's folder (absolute path or '..'); external data must sit in "
                             "the model's folder or below it", file=file)
        target = (base / location).resolve()
        if target != base and base not in target.parents:
            raise ModelError(f"tensor '{t.name}': external data location '{location}' resolves "
                             f"outside the model's folder (through a link)", file=file)
        if not target.is_file():
            raise ModelError(f"tensor '{t.name}': external data file '{location}' not found next "
                             "to the model", file=file)
        try:
            external_data_helper.load_external_data_for_tensor(t, str(base))
        except Exception as exc:
            raise ModelError(f"tensor '{t.name}': cannot read external data '{location}': {exc}",
                             file=file) from None


def _load(onnx, path) -> Any:
    file = str(path)
    p = Path(path)
    if not p.exists():
        raise ModelError("ONNX file not found", file=file)
    if p.is_dir():
        raise ModelError("is a folder, not an ONNX file", file=file)
    try:
        model = onnx.load(file, load_external_data=False)
    except Exception as exc:
        raise ModelError(f"not a readable ONNX model ({type(exc).__name__}: {exc})",
                         file=file) from None
    if not model.HasField("graph") or not len(model.graph.node):
        raise ModelError("not an ONNX model (no graph nodes)", file=file)
    _check_external(onnx, model, p.parent, file)
    return model


# ------------------------------------------------------------------------------- public API
def import_onnx(path) -> tuple[str, dict[str, np.ndarray]]:
    """Read an ONNX file: the model YAML text and its weights ({key: float32 array}).

    ModelError (a SqueezegenError) for anything squeezegen cannot express, naming the node, its
    op type and the attribute. The YAML is checked by parsing it before it is returned.
    """
    onnx = _need_onnx()
    file = str(path)
    model = _load(onnx, path)
    importer = _Importer(onnx, model, file)
    text, weights = importer.run()
    # a self-check: what we wrote must be a valid model that the weights fit
    from ..weights import check_weights
    from .parse import parse_model
    try:
        graph = parse_model(text, f"{file} (imported)")
        check_weights(graph, weights, f"{file} (imported weights)")
    except SqueezegenError as exc:
        raise ModelError(f"the imported model does not check (a squeezegen bug, please report "
                         f"it): {exc}", file=file) from None
    return text, weights


def write_import(onnx_path, yaml_out, weights_out=None):
    """Import `onnx_path` and write the YAML and the .npz (default: the YAML path with .npz).

    Both files are written atomically, and only after the whole import succeeded. Returns
    (graph, weights): the parsed model and the weights written.
    """
    from ..fsutil import write_text
    from ..weights import save_weights
    from .parse import parse_model

    yaml_out = Path(yaml_out)
    weights_out = Path(weights_out) if weights_out is not None else yaml_out.with_suffix(".npz")
    if yaml_out.resolve() == weights_out.resolve():
        raise ModelError("the YAML and the weights file would be the same file",
                         file=str(yaml_out))
    if Path(onnx_path).resolve() in (yaml_out.resolve(), weights_out.resolve()):
        raise ModelError("would overwrite the ONNX file itself", file=str(onnx_path))
    text, weights = import_onnx(onnx_path)
    graph = parse_model(text, str(yaml_out))
    save_weights(weights_out, weights)
    write_text(yaml_out, text)
    return graph, weights
