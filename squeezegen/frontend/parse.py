"""YAML model file -> validated, shape-checked IR graph.

The YAML layers are lowered to IR nodes as they are read: `conv` with `relu: true` becomes a conv
node and a relu node (the fusion pass joins them again), `fire` becomes squeeze/expand convs,
their ReLUs and a concat. Every node remembers its YAML layer and line, so any later error can
point the user back at the file.
"""
from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path

from ..errors import ModelError
from ..ir.graph import Attrs, Graph, Node
from ..ir.ops import OPS, ShapeError, infer
from ..ir.verify import verify
from .schema import ALIASES, COMMON_FIELDS, OP_FIELDS, TOP_LEVEL_FIELDS, identifier_problem
from .yaml_loader import MAX_DOCUMENT_BYTES, LocatedList, LocatedMap, load_yaml

INPUT_NAME = "input"


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _relu_hint(op: str) -> str:
    """What to write instead of `relu: true` on an op that has no relu field."""
    if op == "fire":
        return " (a fire module's convolutions already end in a ReLU)"
    fused = f": it is fused into the {op}'s kernel" if op in OPS and OPS[op].takes_epilogue else ""
    return f" (for a ReLU, add a layer {{name: ..., op: relu}} after it{fused})"


class _Lowering:
    """Reads layers one by one, producing nodes with inferred types."""

    def __init__(self, file: str):
        self.file = file
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.layer_output: dict[str, str] = {}     # YAML layer name -> its output tensor
        self.layer_line: dict[str, int] = {}
        self.generated_by: dict[str, str] = {}     # auxiliary node name -> layer that made it
        self.layer_ops: list[tuple[str, str]] = []

    def error(self, message, *, line=None, layer=None, field=None) -> ModelError:
        return ModelError(message, file=self.file, line=line, layer=layer, field=field)

    def add(self, name, op, inputs, attrs, *, layer, line, param_prefix=None, field_lines=None):
        if name in self.by_name:
            owner = self.generated_by.get(name, name)
            first = self.layer_line.get(owner)
            why = (f"the name '{name}' is already used by layer '{owner}'" if owner == name else
                   f"the name '{name}' collides with a name squeezegen generates for layer '{owner}'")
            raise self.error(f"{why}" + (f" (line {first})" if first else "") + "; rename one of them",
                             line=line, layer=layer, field="name")
        try:
            out_type = infer(op, attrs, [self.by_name[i].type for i in inputs])
        except ShapeError as exc:
            field_line = (field_lines or {}).get(exc.field, line)
            raise self.error(str(exc), line=field_line, layer=layer, field=exc.field) from None
        node = Node(name=name, op=op, inputs=tuple(inputs), attrs=attrs, type=out_type,
                    layer=layer, line=line, param_prefix=param_prefix)
        self.nodes.append(node)
        self.by_name[name] = node
        if name != layer:
            self.generated_by[name] = layer
        return name


def _read_top(doc, file: str) -> LocatedMap:
    if not isinstance(doc, LocatedMap):
        raise ModelError("a model file must be a YAML mapping with name, input, layers and output",
                         file=file, line=getattr(doc, "line", None))
    for key in doc:
        if key not in TOP_LEVEL_FIELDS:
            raise ModelError(f"unknown top-level field '{key}'{_suggest(key, TOP_LEVEL_FIELDS)}; "
                             f"expected {', '.join(TOP_LEVEL_FIELDS)}",
                             file=file, line=doc.key_lines[key], field=key)
    for key, required in TOP_LEVEL_FIELDS.items():
        if required and key not in doc:
            raise ModelError(f"missing top-level field '{key}'", file=file, line=doc.line, field=key)
    return doc


def _read_input_shape(doc: LocatedMap, file: str) -> tuple[int, ...]:
    spec = doc["input"]
    line = doc.key_lines["input"]
    if not isinstance(spec, LocatedMap) or set(spec) != {"shape"}:
        raise ModelError("must be a mapping {shape: [C, H, W]}", file=file, line=line,
                         field="input")
    shape = spec["shape"]
    if (not isinstance(shape, list) or len(shape) not in (1, 3)
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= (1 << 20)
                       for d in shape)):
        raise ModelError(f"must be [C, H, W] (or [K]) of positive integers, got {shape!r}",
                         file=file, line=line, field="input.shape")
    return tuple(shape)


def _layer_fields(layer: LocatedMap, index: int, low: _Lowering):
    """Name, op, line and the checked, defaulted fields of one YAML layer."""
    line = layer.line
    name = layer.get("name")
    if "name" not in layer:
        raise low.error(f"layer #{index + 1} has no 'name'", line=line, field="name")
    problem = identifier_problem(name)
    if problem:
        raise low.error(f"bad layer name: {problem}", line=layer.key_lines["name"],
                        layer=str(name), field="name")
    if name == INPUT_NAME:
        raise low.error("'input' is the name of the network's input; choose another",
                        line=layer.key_lines["name"], layer=name, field="name")
    if "op" not in layer:
        raise low.error("missing 'op'", line=line, layer=name, field="op")
    op = layer["op"]
    if not isinstance(op, str) or op not in OP_FIELDS:
        raise low.error(f"unknown op '{op}'{_suggest(op, OP_FIELDS)}; ops are "
                        f"{', '.join(OP_FIELDS)}", line=layer.key_lines["op"], layer=name,
                        field="op")
    spec = OP_FIELDS[op]
    values = {}
    for key in layer:
        if key in COMMON_FIELDS:
            continue
        if key not in spec:
            hint = _suggest(key, spec) if key != "relu" else _relu_hint(op)
            raise low.error(f"unknown field '{key}' for op {op}{hint}; {op} takes "
                            f"{', '.join(spec)}", line=layer.key_lines[key], layer=name, field=key)
        try:
            values[key] = spec[key].check(layer[key])
        except ValueError as exc:
            raise low.error(str(exc), line=layer.key_lines[key], layer=name, field=key) from None
    for key, f in spec.items():
        if key not in values:
            if f.required:
                raise low.error(f"missing field '{key}' ({f.describe()})", line=line,
                                layer=name, field=key)
            if f.default is not None:
                values[key] = f.check(f.default)
    return name, op, line, {key: values[key] for key in spec if key in values}


def _resolve(ref: str, field: str, line: int, name: str, low: _Lowering,
             later: dict[str, int]) -> str:
    if ref == INPUT_NAME:
        return INPUT_NAME
    if ref in low.layer_output:
        return low.layer_output[ref]
    if ref == name:
        raise low.error(f"layer '{name}' cannot read its own output", line=line, layer=name,
                        field=field)
    if ref in later:
        raise low.error(f"'{ref}' is defined later (line {later[ref]}); a layer may only read "
                        "earlier layers", line=line, layer=name, field=field)
    raise low.error(f"no layer named '{ref}'{_suggest(ref, list(low.layer_output) + [INPUT_NAME])}",
                    line=line, layer=name, field=field)


def _lower_fire(name, line, v, inputs, low: _Lowering, field_lines):
    """A fire module: squeeze 1x1 conv, expand 1x1 and 3x3 convs on it, each with its ReLU, and
    the concat of the two expands."""
    at = dict(layer=name, line=line, field_lines=field_lines)

    def conv(role, src, out, kernel, pad):
        made = low.add(f"{name}_{role}", "conv", [src],
                       Attrs(out=out, kernel=(kernel, kernel), stride=(1, 1), pad=(pad, pad),
                             bias=True), param_prefix=f"{name}.{role}", **at)
        return low.add(f"{made}_relu", "relu", [made], Attrs(), **at)
    squeezed = conv("squeeze", inputs[0], v["squeeze"], 1, 0)
    e1 = conv("expand1x1", squeezed, v["expand1x1"], 1, 0)
    e3 = conv("expand3x3", squeezed, v["expand3x3"], 3, 1)
    return low.add(name, "concat", [e1, e3], Attrs(axis="channels"), **at)


def _lower_layer(name, op, line, v, inputs, low: _Lowering, field_lines):
    """The nodes of one layer: its op's node (attributes from `OpInfo.from_yaml`), then a relu
    node where the layer says `relu: true` (the fusion pass joins them again)."""
    if op == "fire":
        return _lower_fire(name, line, v, inputs, low, field_lines)
    if op in ALIASES:                   # globalavgpool: avgpool with global: true
        op, preset = ALIASES[op]
        v = {**{k: f.check(f.default) for k, f in OP_FIELDS[op].items()
                if f.default is not None}, **v, **preset}
    at = dict(layer=name, line=line, field_lines=field_lines)
    if len(set(inputs)) != len(inputs):
        raise low.error("the same input is listed twice", line=field_lines.get("inputs", line),
                        layer=name, field="inputs")
    info = OPS[op]
    try:
        attrs = info.from_yaml(v, [low.by_name[i].type for i in inputs], set(field_lines))
    except ShapeError as exc:
        raise low.error(str(exc), line=field_lines.get(exc.field, line), layer=name,
                        field=exc.field) from None
    out = low.add(name, op, inputs, Attrs(attrs),
                  param_prefix=name if info.has_weights else None, **at)
    if v.get("relu"):
        return low.add(f"{name}_relu", "relu", [out], Attrs(), **at)
    return out


def _read_outputs(doc: LocatedMap, low: _Lowering, file: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The output tensors and the YAML layer names they came from."""
    line = doc.key_lines["output"]
    raw = doc["output"]
    names = raw if isinstance(raw, list) else [raw]
    if not names or not all(isinstance(n, str) for n in names):
        raise ModelError("must name a layer, or be a list of layer names", file=file, line=line,
                         field="output")
    seen = set()
    outputs = []
    for n in names:
        if n in seen:
            raise ModelError(f"'{n}' is listed twice", file=file, line=line, field="output")
        seen.add(n)
        if n not in low.layer_output:
            raise ModelError(f"no layer named '{n}'{_suggest(n, low.layer_output)}", file=file,
                             line=line, field="output")
        outputs.append(low.layer_output[n])
    return tuple(outputs), tuple(names)


def _check_all_used(graph: Graph, low: _Lowering, file: str):
    used = {i for n in graph.nodes for i in n.inputs} | set(graph.outputs)
    for layer, out in low.layer_output.items():
        if out not in used:
            raise ModelError(f"layer '{layer}' is never used: no layer reads it and it is not an "
                             "output (remove it, or list it under output)", file=file,
                             line=low.layer_line[layer], layer=layer)


def parse_model(text: str, file: str = "<string>") -> Graph:
    """Parse model YAML text into a verified IR graph; ModelError on any problem."""
    if not isinstance(text, str):
        raise ModelError(f"a model's text is a str, got {type(text).__name__}", file=file)
    doc = _read_top(load_yaml(text, file), file)
    name = doc["name"]
    problem = identifier_problem(name)
    if problem:
        raise ModelError(f"bad model name: {problem}", file=file, line=doc.key_lines["name"],
                         field="name")
    if "description" in doc and not isinstance(doc["description"], str):
        raise ModelError("must be a string", file=file, line=doc.key_lines["description"],
                         field="description")
    low = _Lowering(file)
    low.add(INPUT_NAME, "input", [], Attrs(shape=_read_input_shape(doc, file)), layer=INPUT_NAME,
            line=doc.key_lines["input"])
    layers = doc["layers"]
    if not isinstance(layers, LocatedList) or not layers:
        raise ModelError("must be a non-empty list of layers", file=file,
                         line=doc.key_lines["layers"], field="layers")
    later: dict[str, int] = {}
    for item, item_line in zip(layers, layers.item_lines):
        if isinstance(item, LocatedMap) and isinstance(item.get("name"), str):
            later.setdefault(item["name"], item_line)
    previous = INPUT_NAME
    for index, layer in enumerate(layers):
        if not isinstance(layer, LocatedMap):
            raise ModelError(f"layer #{index + 1} must be a mapping like {{name: ..., op: ...}}",
                             file=file, line=layers.item_lines[index], field="layers")
        lname, op, line, values = _layer_fields(layer, index, low)
        if lname in low.layer_line:
            raise low.error(f"duplicate layer name '{lname}' (first defined on line "
                            f"{low.layer_line[lname]})", line=line, layer=lname, field="name")
        later.pop(lname, None)
        if "inputs" in values:
            refs = [(r, "inputs") for r in values["inputs"]]
        else:
            refs = [(values.get("input", previous), "input")]
        field_lines = dict(layer.key_lines)
        inputs = [_resolve(r, f, field_lines.get(f, line), lname, low, later) for r, f in refs]
        low.layer_line[lname] = line
        out = _lower_layer(lname, op, line, values, inputs, low, field_lines)
        low.layer_output[lname] = out
        low.layer_ops.append((lname, op))
        previous = lname
    outputs, output_names = _read_outputs(doc, low, file)
    graph = Graph(name=name, nodes=tuple(low.nodes), outputs=outputs, output_names=output_names,
                  source=file, source_hash=hashlib.sha256(text.encode()).hexdigest(),
                  layer_ops=tuple(low.layer_ops))
    _check_all_used(graph, low, file)
    verify(graph)
    return graph


def load_model(path) -> Graph:
    """Read and validate a model file; `path` may also be a Graph, returned as it is."""
    if isinstance(path, Graph):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise ModelError(f"a model is a path to a .yaml file or a Graph, got "
                         f"{type(path).__name__}")
    file = str(path)
    try:
        if not Path(path).is_file():
            raise ModelError("not a regular file" if Path(path).exists() else
                             "model file not found", file=file)
        if Path(path).suffix.lower() == ".onnx":
            raise ModelError(f"is an ONNX model, not a squeezegen model file; convert it first: "
                             f"squeezegen import {file} -o models/{Path(path).stem}.yaml",
                             file=file)
        with open(path, "rb") as f:
            data = f.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise ModelError(f"model file is larger than the {MAX_DOCUMENT_BYTES} bytes allowed",
                             file=file)
    except FileNotFoundError:
        raise ModelError("model file not found", file=file) from None
    except OSError as exc:
        raise ModelError(f"cannot read the model file: {exc.strerror or exc}", file=file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"model file is not UTF-8 text (byte {exc.start})", file=file) from None
    return parse_model(text, file)
