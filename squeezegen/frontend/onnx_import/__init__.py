"""ONNX model -> squeezegen model YAML + weights (`squeezegen import model.onnx -o NAME.yaml`).

The graph is read with the `onnx` package (an optional extra, imported only here) and each node
is mapped onto the model language: Conv -> conv, ConvTranspose -> deconv, MaxPool/AveragePool ->
maxpool/avgpool, GlobalAveragePool -> avgpool global, GlobalMaxPool -> maxpool over the whole
image, Add -> add, Concat -> concat, Gemm and MatMul(+Add) -> linear, Softmax -> softmax
(LogSoftmax -> softmax `log: true`), Relu ->
`relu: true` on the layer before it (or a relu layer). Flatten, flattening Reshape/Squeeze,
Dropout and Identity are no-ops (squeezegen's linear flattens in C,H,W order itself). A squeeze
conv + ReLU feeding exactly a 1x1 and a 3x3 (pad 1) conv + ReLU that are concatenated becomes one
`fire` layer. Gather of channels and Slice with a step over them (x[:, 0], x[:, [2, 1, 0]],
x.flip(1)) are `slice` layers, concatenated. Constant sub-graphs (Shape, Gather, Concat of
shapes..., and learned parameters prepared by Relu, Softmax, ReduceSum...) are evaluated here.

Anything squeezegen cannot express is refused with a ModelError naming the node, its op type and
the attribute at fault: nothing is approximated. Every refusal happens before anything is written.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ModelError, SqueezegenError
from .common import SUPPORTED_OPS, _need_onnx
from .importer import Importer

__all__ = ["SUPPORTED_OPS", "import_onnx", "write_import"]


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
    importer = Importer(onnx, model, file)
    text, weights = importer.run()
    # a self-check: what we wrote must be a valid model that the weights fit
    from ...weights import check_weights
    from ..parse import parse_model
    try:
        graph = parse_model(text, f"{file} (imported)")
        check_weights(graph, weights, f"{file} (imported weights)")
    except SqueezegenError as exc:
        node = importer.layer_node(exc.layer)
        if node is not None:        # a value of the ONNX model that squeezegen cannot take
            what = f"squeezegen's field '{exc.field}': " if exc.field else ""
            raise importer.fail(node, f"{what}{exc.message}") from None
        raise ModelError(f"the imported model does not check (a squeezegen bug, please report "
                         f"it): {exc}", file=file) from None
    return text, weights


def write_import(onnx_path, yaml_out, weights_out=None):
    """Import `onnx_path` and write the YAML and the .npz (default: the YAML path with .npz).

    Both files are written together (`atomic_write_all`: both or, on a failure, neither), and
    only after the whole import succeeded. Returns (graph, weights): the parsed model and the
    weights written.
    """
    from ...fsutil import atomic_write_all
    from ...weights import npz_bytes
    from ..parse import parse_model

    yaml_out = Path(yaml_out)
    weights_out = Path(weights_out) if weights_out is not None else yaml_out.with_suffix(".npz")
    if yaml_out.resolve() == weights_out.resolve():
        raise ModelError("the YAML and the weights file would be the same file",
                         file=str(yaml_out))
    if Path(onnx_path).resolve() in (yaml_out.resolve(), weights_out.resolve()):
        raise ModelError("would overwrite the ONNX file itself", file=str(onnx_path))
    text, weights = import_onnx(onnx_path)
    graph = parse_model(text, str(yaml_out))
    atomic_write_all({weights_out: npz_bytes(weights, weights_out), yaml_out: text.encode()},
                     ModelError)
    return graph, weights
