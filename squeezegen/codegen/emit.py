"""Render a planned graph into `<model>.cu`, `<model>.h`, `manifest.json` (and the weights blob).

The Jinja environment is strict (an undefined variable is an error, never silently broken C),
and the output is deterministic: the same model and options give byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from .. import __version__
from ..errors import BuildError
from ..ir.graph import Graph
from ..ir.ops import packed_layouts, param_specs, resolve_weights
from ..passes.plan_memory import MemoryPlan
from . import ctext
from .target import H200, Target
from .kernels import Kernel, check_index_range, check_launch, describe, lower_node

BLOB_MAGIC = b"SQZGWTS1"
BLOB_FORMAT = 3                   # bump whenever a packed weight layout changes (3: per-batch layouts)
BLOB_HEADER_BYTES = 256
WEIGHT_ALIGN_FLOATS = 64          # every weight tensor starts on a 256-byte boundary
MAX_WEIGHT_FLOATS = (1 << 31) - 1


def environment() -> jinja2.Environment:
    """Strict, and with the two gates of `ctext`: `| comment` for free text in comments,
    `| identifier` for names that become C symbols."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("squeezegen", "templates"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["comment"] = ctext.comment
    env.filters["identifier"] = ctext.identifier
    return env


def check_names(graph: Graph) -> None:
    """Refuse a graph whose names cannot become C symbols and file names (one built or edited
    from Python skips the front end's checks)."""
    ctext.identifier(graph.name)
    for node in graph.nodes:
        try:
            ctext.identifier(node.name)
        except BuildError as exc:
            raise exc.located(layer=ctext.comment(node.layer), line=node.line) from None


def model_hash(graph: Graph) -> str:
    """The sha256 the generated files and the weights blob carry: the model file's, or for a
    graph built in Python, one of its nodes."""
    if isinstance(graph.source_hash, str) and re.fullmatch(r"[0-9a-f]{64}", graph.source_hash):
        return graph.source_hash
    if graph.source_hash is not None:
        raise BuildError(f"model hash {ctext.comment(repr(graph.source_hash))} is not a sha256 "
                         "hex digest", field="source_hash")
    return hashlib.sha256(repr(graph.nodes).encode()).hexdigest()   # a graph built in Python


def weight_layout(graph: Graph) -> tuple[dict[str, int], int]:
    """Float offset of every weight tensor in the blob, and the total floats."""
    offsets, cursor = {}, 0
    for key, shape in param_specs(graph).items():
        offsets[key] = cursor
        size = int(np.prod(shape))
        cursor += -(-size // WEIGHT_ALIGN_FLOATS) * WEIGHT_ALIGN_FLOATS
    return offsets, cursor


def pack_weights(graph: Graph, weights: dict[str, np.ndarray], batch: int) -> np.ndarray:
    """All weights in one float32 array at their blob offsets, in the kernels' layouts for a
    build at `batch`."""
    offsets, total = weight_layout(graph)
    packed = packed_layouts(graph, batch)
    weights = resolve_weights(graph, weights)
    data = np.zeros(max(1, total), np.float32)
    for key, offset in offsets.items():
        value = np.asarray(weights[key], np.float32)
        if key in packed:
            value = value.reshape(value.shape[0], -1).T
        flat = np.ascontiguousarray(value).reshape(-1)
        data[offset: offset + flat.size] = flat
    return data


def weights_blob(graph: Graph, weights: dict[str, np.ndarray], batch: int) -> bytes:
    """The binary weights file the C API loads: header (magic, version, tensor count, float
    count, model hash), then every tensor at its float offset, in the kernels' layouts."""
    offsets, total = weight_layout(graph)
    data = pack_weights(graph, weights, batch)[:total]
    header = BLOB_MAGIC + struct.pack("<IIQ", BLOB_FORMAT, len(offsets), total)
    header += model_hash(graph).encode()
    header += struct.pack("<I", batch)          # layouts depend on the build's batch
    header += b"\0" * (BLOB_HEADER_BYTES - len(header))
    return header + data.tobytes()


@dataclass
class BuildOutput:
    files: dict[str, bytes]          # file name -> content (written beside each other)
    kernels: list[Kernel]
    manifest: dict


API_SUFFIXES = ("create", "create_from_file", "forward", "destroy", "net", "last_error")


def _name_kernels(kernels: list[Kernel], graph: Graph) -> None:
    """Unique readable names, and C symbols prefixed with the model name."""
    taken: set[str] = set()
    for k in kernels:
        name, i = k.name, 2
        while name in taken or name in API_SUFFIXES:
            name, i = f"{k.name}_{i}", i + 1
        k.name = name
        k.symbol = f"{graph.name}_{name}"
        taken.add(name)


def render(graph: Graph, original: Graph, plan: MemoryPlan,
           weights: dict[str, np.ndarray] | None = None, precision: str = "fp32",
           target: Target = H200) -> BuildOutput:
    """All generated files for a planned graph; `original` is the graph before passes."""
    check_names(graph)
    check_index_range(graph, plan)
    env = environment()
    offsets, total = weight_layout(graph)
    if total > MAX_WEIGHT_FLOATS:
        raise BuildError(f"the weights need {4 * total / 2**30:.1f} GiB, more than the "
                         f"{4 * MAX_WEIGHT_FLOATS >> 30} GiB squeezegen can address",
                         file=graph.source)
    kernels = [k for k in (lower_node(graph, plan, n, offsets) for n in graph.nodes[1:]) if k]
    for k in kernels:
        check_launch(graph, k)
    _name_kernels(kernels, graph)
    outputs = [{"name": o, "shape": list(graph[o].type.shape),
                "floats": plan.batch * graph[o].type.numel} for o in graph.outputs]
    out_vars = [f"out{i}" for i in range(len(outputs))]
    for k in kernels:
        k.extra["outputs"] = out_vars
        k.comment = describe(graph, original, k)
        k.extra["layers"] = list(dict.fromkeys(
            original[n].layer if n in original else k.node.layer
            for n in (k.node.name,) + k.node.fused))
        k.rendered = env.get_template(k.template).render(k=k).strip("\n")
    source = Path(graph.source).name if graph.source else "<string>"
    context = dict(
        model=graph, version=__version__, source=source, model_hash=model_hash(graph),
        precision=precision, target=target, tensor_cores=any(k.extra.get("mma") for k in kernels),
        batch=plan.batch, passes=list(graph.passes), kernels=kernels, outputs=outputs,
        input_shape=list(graph.input.type.shape),
        input_floats=plan.batch * graph.input.type.numel, arena_bytes=plan.arena_bytes,
        unshared_bytes=plan.unshared_bytes, buffers=plan.buffers, weight_floats=total,
        counters_offset=plan.counters_offset, counters_bytes=plan.counters_bytes,
        blob_header_bytes=BLOB_HEADER_BYTES, macro="SG_" + graph.name.upper(),
        blob_format=BLOB_FORMAT, weight_tensors=len(offsets),
        guard=f"SQUEEZEGEN_{graph.name.upper()}_H_")
    cu = env.get_template("network.cu.j2").render(**context)
    header = env.get_template("network.h.j2").render(**context)
    manifest = build_manifest(graph, plan, kernels, offsets, total, outputs, source, precision,
                              target)
    files = {f"{graph.name}.cu": cu.encode(), f"{graph.name}.h": header.encode(),
             "manifest.json": (json.dumps(manifest, indent=1) + "\n").encode()}
    if weights is not None:
        files[f"{graph.name}.weights.bin"] = weights_blob(graph, weights, plan.batch)
    return BuildOutput(files, kernels, manifest)


def build_manifest(graph, plan, kernels, offsets, total, outputs, source, precision,
                   target: Target) -> dict:
    specs = param_specs(graph)
    packed = packed_layouts(graph, plan.batch)
    return {
        "model": graph.name, "source": source, "model_hash": model_hash(graph),
        "squeezegen_version": __version__, "batch": plan.batch, "precision": precision,
        "target": {"name": target.name, "arch": target.arch, "sms": target.sms},
        "passes": list(graph.passes) + ["plan_memory"],
        "input": {"shape": [plan.batch] + list(graph.input.type.shape)},
        "outputs": [{"name": o["name"], "shape": [plan.batch] + o["shape"]} for o in outputs],
        "kernels": [{"name": k.name, "symbol": k.symbol, "op": k.node.op, "node": k.node.name,
                     "layers": k.extra["layers"],
                     "line": k.node.line, "grid": list(k.grid), "block": [k.block, 1, 1],
                     "epilogue": [str(s) for s in k.node.epilogue],
                     "tile": k.extra.get("tile"),
                     "flops": k.flops, "bytes": k.bytes} for k in kernels],
        "memory": {"arena_bytes": plan.arena_bytes, "unshared_bytes": plan.unshared_bytes,
                   "counters_offset": plan.counters_offset, "counters_bytes": plan.counters_bytes,
                   "buffers": [{"tensor": b.tensor, "offset": b.offset, "bytes": b.size,
                                "first": b.first, "last": b.last} for b in plan.buffers],
                   "tensors": {name: {"storage": p.storage, "offset_floats": p.offset,
                                      "image_stride_floats": p.image_stride}
                               for name, p in plan.placements.items()}},
        "weights": {"blob_header_bytes": BLOB_HEADER_BYTES, "blob_format": BLOB_FORMAT,
                    "floats": total,
                    "tensors": {k: {"offset_floats": offsets[k], "shape": list(specs[k]),
                                    "layout": packed.get(k, "as in PyTorch")}
                                for k in offsets}},
    }
