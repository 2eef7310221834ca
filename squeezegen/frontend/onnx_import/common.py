"""What every part of the ONNX importer shares: the op lists, the value and layer records,
and small text helpers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import SqueezegenError

# What `import_onnx` maps (for error messages and the docs).
SUPPORTED_OPS = ("Conv", "ConvTranspose", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "GlobalMaxPool", "Add", "Concat", "Gemm", "MatMul", "Softmax", "LogSoftmax",
                 "Flatten",
                 "Reshape", "Squeeze", "Unsqueeze", "Dropout", "Identity", "Constant",
                 "Mul", "BatchNormalization", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid",
                 "HardSwish", "Tanh", "Resize", "Pad", "ReduceMean", "ReduceMax", "ReduceSum",
                 "Sub", "Div", "Elu", "Gelu", "Softplus", "Mish", "Erf", "DepthToSpace", "Split",
                 "Upsample", "PRelu", "InstanceNormalization", "Transpose",
                 "LayerNormalization", "Pow", "Sqrt", "Expand", "Neg", "Tile", "Selu", "Celu",
                 "Softsign", "Abs", "Log", "Gather", "ReduceL2")


# Why an op the importer refuses arrives, where the exporter makes it from something familiar.
UNSUPPORTED_HINTS: dict[str, str] = {
    "ArgMax": "export the network without its final argmax (a segmentation net's scores, "
              "N x classes x H x W): `squeezegen run` and `squeezegen segment` take the argmax "
              "of the scores themselves, and `squeezegen.compile` returns the scores",
    "ArgMin": "squeezegen's networks end in float tensors; export the scores instead",
    "If": "squeezegen imports graphs without control flow; PyTorch writes an If for "
          "nn.LocalResponseNorm (AlexNet's and GoogLeNet's original LRN; torchvision's have "
          "none), which no squeezegen layer computes, and for branches on a tensor's values",
    "LRN": "local response normalisation (the original AlexNet's and GoogLeNet's; "
           "torchvision's have none) divides by a power of a sum over neighbouring channels, "
           "which no squeezegen layer computes",
    "MaxUnpool": "max unpooling (SegNet's and ENet's decoders) puts each value back where its "
                 "MaxPool's indices say it came from, and squeezegen has no layer that "
                 "scatters by computed indices; upsample with a ConvTranspose or a Resize "
                 "instead",
}

# What a channels-last tensor (x.permute(0, 2, 3, 1)) may flow through before the permute back.
CHANNELS_LAST_OPS = ("LayerNormalization (over the last axis), MatMul with a constant weight "
                     "(+ Add of a bias), element-wise activations, Add/Mul/Sub/Div of a "
                     "constant per channel, Add/Mul of two channels-last tensors, Softmax, "
                     "Concat, ReduceMean and ReduceMax over the last axis")


# Evaluated at import time when all their inputs are constants (shape arithmetic, weight prep).
# The element-wise ops and reductions after "Where" prepare learned parameters (EfficientDet's
# BiFPN fusion weights, relu(w) / (w.sum() + eps); a softmax or sigmoid of a parameter).
_FOLDABLE = ("Constant", "ConstantOfShape", "Identity", "Cast", "Shape", "Gather", "Unsqueeze",
             "Squeeze", "Concat",
             "Reshape", "Flatten", "Slice", "Transpose", "Add", "Sub", "Mul", "Div", "Equal",
             "Where", "Relu", "Sigmoid", "Exp", "Sqrt", "Neg", "Abs", "Pow", "ReduceSum",
             "ReduceMean", "ReduceMax", "Softmax")


_INPUT = -1                       # the layer index of the network input


_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def _supported_list() -> str:
    return ", ".join(SUPPORTED_OPS)


def _need_onnx():
    try:
        import onnx  # an optional dependency
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
    Flatten: ONNX has [C*H*W], the layer still [C, H, W] (same values, same order), and in a
    channels-last stretch (`channels_last`: after x.permute(0, 2, 3, 1), until the permute
    back): ONNX has [H, W, C], the layer C, H, W, and ops over the last axis are over its
    channels."""
    layer: int
    shape: tuple[int, ...]
    sg: tuple[int, ...]
    channels_last: bool = False

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


def _f32_decimal(value) -> float:
    """A float32 (an ONNX float attribute or constant) as the shortest decimal that reads back as
    that float32: 1.7, not 1.7000000476837158 (the float32 widened), so that squeezegen computes
    with the number the exporter was given, as PyTorch did."""
    with np.errstate(over="ignore"):
        return float(str(np.float32(value)))


def _yaml_float(value: float) -> str:
    """A float as YAML 1.1 reads back as the same float (1e-05 would be a string: 1.0e-05)."""
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        mantissa += ".0"
    if e and exponent[0] not in "+-":
        exponent = "+" + exponent
    return mantissa + (e + exponent if e else "")


def _yaml_scalar(text: str) -> str:
    """`text` as a YAML scalar that reads back as the same string."""
    import yaml
    try:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) and yaml.safe_load(text) == text:
            return text
    except yaml.YAMLError:
        pass
    return '"' + "".join(_yaml_char(ch) for ch in text) + '"'


def _yaml_char(ch: str) -> str:
    """One character inside a YAML double-quoted scalar: itself where YAML reads it back as
    itself (printable ASCII but backslash and quote; printable non-ASCII), else an escape:
    \\xHH, \\uHHHH or \\UHHHHHHHH (control characters, line breaks such as U+2028, a lone
    surrogate standing for a byte of a file name that is not UTF-8)."""
    code = ord(ch)
    if ch in '\\"':
        return "\\" + ch
    if 0x20 <= code < 0x7F or (code >= 0xA0 and ch.isprintable()
                               and not 0xD800 <= code < 0xE000 and code != 0xFEFF):
        return ch
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _comment_safe(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(text))[:200]
