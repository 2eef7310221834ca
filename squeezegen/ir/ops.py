"""The op registry: every fact about an IR op, in one entry per op.

Each op family is one module of `squeezegen/ops/` (gemm: conv and linear; deconv; pool; eltwise:
add and mul; concat; softmax; norm: batchnorm, affine; groupnorm; activation: relu, relu6, clip,
leaky_relu, sigmoid, hardsigmoid, hardswish, silu, tanh, elu, gelu, softplus, mish, selu, celu,
softsign, logsigmoid; resize;
pixel_shuffle: pixel_shuffle, pixel_unshuffle; pad: pad, crop; channels: slice, channel_shuffle, flatten; reduce: reduce_channels) whose `OPS`
list holds `OpInfo` entries: the op's fields in the model language, its output shape, its
weights (PyTorch's layouts, and the
layout the kernels want them packed in), FLOPs, the epilogues its kernel takes, its NumPy
reference, its lowering (template, compile-time constants, grid, tile kind) and its PyTorch
peer. Everything else (parser, passes, printer, reference executor, scheduler, code generator,
PyTorch peer, tuning-cache signature) looks an op up here instead of naming it.
"""
from __future__ import annotations

from math import prod

import numpy as np

from ..ops import (activation, channels, concat, deconv, eltwise, gemm, groupnorm, norm, pad,
                   pixel_shuffle, pool, reduce, resize, softmax)
from ..ops.base import (OpInfo, ShapeError, conv_out_size, deconv_out_size,  # noqa: F401
                        pool_out_size, pool_window)
from .graph import Graph, Node, TensorType

FAMILIES = (gemm, deconv, pool, eltwise, concat, softmax, norm, groupnorm, activation, resize,
            pixel_shuffle, channels, reduce, pad)

INPUT = OpInfo("input", 0, None, lambda a, i: TensorType(a["shape"]), reference=None,
               lower=None, torch=None)

OPS: dict[str, OpInfo] = {op.name: op for op in
                          [INPUT] + [op for family in FAMILIES for op in family.OPS]}


def infer(op: str, attrs, ins: list[TensorType]) -> TensorType:
    """The output type of `op` on inputs `ins`; ShapeError when it does not apply."""
    info = OPS[op]
    if info.arity is None and len(ins) < 2:
        raise ShapeError(f"{op} needs at least two inputs, got {len(ins)}", field="inputs")
    if info.arity and len(ins) != info.arity:
        raise ShapeError(f"{op} takes {info.arity} input{'s' if info.arity > 1 else ''}, got "
                         f"{len(ins)}", field="inputs")
    out = info.shape(attrs, ins)
    if any(d < 1 for d in out.shape):
        raise ShapeError(f"output shape {out} is empty")
    return out


def input_types(graph: Graph, node: Node) -> list[TensorType]:
    return [graph[i].type for i in node.inputs]


def node_params(graph: Graph, node: Node) -> dict[str, tuple[int, ...]]:
    """Parameter tensors of a node, keyed by their weight-file name (`conv1.weight`, ...)."""
    params = OPS[node.op].params(node.attrs, input_types(graph, node))
    return {f"{node.param_prefix}.{k}": v for k, v in params.items()}


def weights_under(weights: dict, prefix: str | None) -> dict:
    """The weights `<prefix>.<name>` of one node or epilogue step, by their short name."""
    if not prefix:
        return {}
    prefix += "."
    return {k[len(prefix):]: v for k, v in weights.items()
            if k.startswith(prefix) and "." not in k[len(prefix):]}


def step_params(node: Node, step) -> dict[str, tuple[int, ...]]:
    """Weight tensors of a per-channel epilogue step of `node` (a batchnorm run in its store),
    keyed by their weight-file name; {} for an activation or an add."""
    if not step.param_prefix:
        return {}
    params = OPS[step.kind].params(step.attrs, [node.type])
    return {f"{step.param_prefix}.{k}": v for k, v in params.items()}


def weight_specs(graph: Graph, node: Node) -> dict[str, tuple[int, ...]]:
    """Every weight tensor the kernel of `node` reads: its own, then its epilogue steps'."""
    specs = node_params(graph, node) if node.param_prefix else {}
    for step in node.epilogue:
        specs.update(step_params(node, step))
    return specs


def node_flops(graph: Graph, node: Node) -> int:
    """FLOPs per image of the node, its epilogue included (one per output element a step)."""
    return OPS[node.op].flops(node.attrs, input_types(graph, node), node.type) + sum(
        node.type.numel for _ in node.epilogue)


def node_param_count(graph: Graph, node: Node) -> int:
    return OPS[node.op].param_count(node.attrs, input_types(graph, node)) + sum(
        prod(shape) for step in node.epilogue for shape in step_params(node, step).values())


def param_specs(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every weight tensor the model needs, in graph order."""
    specs: dict[str, tuple[int, ...]] = {}
    for node in graph.nodes:
        specs.update(weight_specs(graph, node))
    return specs


def packed_layouts(graph: Graph, batch: int) -> dict[str, str]:
    """Weight tensors the kernels of a build at `batch` read in another layout than PyTorch's
    (weight name -> that layout): GEMM weights packed K-major, so a tile reads consecutive
    outputs. Packing transposes the weight seen as [OUT][everything else]."""
    packed = {}
    for n in graph.nodes:
        layout = OPS[n.op].packed(n.attrs, batch) if n.param_prefix else None
        if layout:
            packed[f"{n.param_prefix}.weight"] = layout
    return packed


def source_specs(graph: Graph) -> dict[str, tuple[int, ...]]:
    """The weights a user supplies for `graph`: what its nodes read, less the constants passes
    derived, plus what those are derived from (the original model's weights)."""
    made = {c.name for c in graph.constants}
    specs = {k: v for k, v in param_specs(graph).items() if k not in made}
    for c in graph.constants:
        for name, shape in c.inputs:
            if name not in made:
                specs.setdefault(name, shape)
    return specs


def resolve_weights(graph: Graph, weights: dict) -> dict:
    """`weights` with the graph's derived constants added (those not there yet), in float32."""
    out = dict(weights)
    for c in graph.constants:
        if c.name not in out:
            out[c.name] = np.ascontiguousarray(
                c.fn(*(out[name] for name, _ in c.inputs)), dtype=np.float32)
    return out


def takes_step(op: str, kind: str) -> bool:
    """Whether the kernel of `op` can apply the epilogue step `kind` ("add", an activation
    op's name, or a per-channel op's: batchnorm, affine, prelu) before its store. Every kernel
    that takes an activation stores each element knowing its channel, so it takes those too."""
    info = OPS[op]
    if kind == "add":
        return "add" in info.epilogues
    step = OPS.get(kind)
    return "activation" in info.epilogues and step is not None and (
        step.activation is not None or step.channel_step is not None)


def apply_step(step, y, operand=None, params=None):
    """The NumPy value of epilogue `step` applied to `y` (`operand`: the tensor an add adds;
    `params`: a per-channel step's weights, by short name)."""
    if step.kind == "add":
        return y + operand
    return OPS[step.kind].reference(step.attrs, [y], params or {})
