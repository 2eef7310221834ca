"""Naming the layers after the ONNX nodes and writing the model YAML."""
from __future__ import annotations

import re
from pathlib import Path

from ..schema import MAX_NAME, identifier_problem
from .common import _INPUT, _comment_safe, _Layer, _pair_text, _yaml_float, _yaml_scalar


class YamlWriting:
    """Naming the layers after the ONNX nodes and writing the model YAML."""

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
        if self.input_channels_last:
            h, w, c = self.input_shape[1], self.input_shape[2], self.input_shape[0]
            lines.append(f"# ONNX input '{_comment_safe(self.input_name)}' is channels-last, "
                         f"[N, {h}, {w}, {c}]; this network takes it as N, C, H, W "
                         f"([N, {c}, {h}, {w}]: x.transpose(0, 3, 1, 2)).")
        for oname, v in outputs:
            if v.channels_last:
                lines.append(f"# ONNX output '{_comment_safe(oname)}' is channels-last, [N, "
                             f"{', '.join(map(str, v.shape))}]; this network gives it as N, C, "
                             f"H, W (layer '{name_of(v.layer)}', "
                             f"{'x'.join(map(str, v.sg))}).")
            elif v.shape != v.sg:
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
            if layer.op in ("add", "mul", "div", "concat"):
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
                if "pad_end" in f:
                    items.append(f"pad: [{', '.join(map(str, f['pad'] + f['pad_end']))}]")
                elif f["pad"] != (0, 0):
                    items.append(f"pad: {_pair_text(f['pad'])}")
                if "dilation" in f:
                    items.append(f"dilation: {_pair_text(f['dilation'])}")
                if "output_padding" in f:
                    items.append(f"output_padding: {_pair_text(f['output_padding'])}")
                if "groups" in f:
                    items.append(f"groups: {f['groups']}")
                if pool:
                    items.append(f"ceil_mode: {'true' if f['ceil_mode'] else 'false'}")
                if f.get("count_include_pad") is False:
                    items.append("count_include_pad: false")
            if layer.op == "pad":
                if "pad_end" in f:
                    items.append(f"pad: [{', '.join(map(str, f['pad'] + f['pad_end']))}]")
                else:
                    items.append(f"pad: {_pair_text(f['pad'])}")
                if f["mode"] != "constant":
                    items.append(f"mode: {f['mode']}")
                elif f["value"] != 0:
                    items.append(f"value: {_yaml_float(f['value'])}")
            if layer.op == "crop":
                items.append(f"crop: [{', '.join(map(str, f['crop']))}]")
            if layer.op == "reduce_channels":
                items.append(f"mode: {f['mode']}")
            if layer.op == "resize":
                items.append(f"mode: {f['mode']}")
                if "scale" in f:
                    items.append("scale: " + (_yaml_float(f["scale"][0]) if f["scale"][0] ==
                                              f["scale"][1] else
                                              f"[{', '.join(map(_yaml_float, f['scale']))}]"))
                else:
                    items.append(f"size: {_pair_text(f['size'])}")
                if f["coordinates"] != ("half_pixel" if f["mode"] == "bilinear" else
                                        "asymmetric"):
                    items.append(f"coordinates: {f['coordinates']}")
            if "factor" in f:
                items.append(f"factor: {f['factor']}")
            if layer.op == "slice":
                items.append(f"channels: [{f['channels'][0]}, {f['channels'][1]}]")
            if layer.op in ("channel_shuffle", "groupnorm"):
                items.append(f"groups: {f['groups']}")
            if f.get("affine") is False:
                items.append("affine: false")
            if f.get("shared"):
                items.append("shared: true")
            if f.get("log"):
                items.append("log: true")
            for key in ("eps", "min", "max", "negative_slope", "alpha"):
                if key in f:
                    items.append(f"{key}: {_yaml_float(f[key])}")
            if f.get("approximate", "none") != "none":
                items.append(f"approximate: {f['approximate']}")
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
