"""Fold a BatchNorm (or an affine: a per-channel scale and shift) into the conv, deconv or
linear layer that produces its input.

    %y = conv(%x)                        %y = conv(%x) [weights conv1+bn1.weight, conv1+bn1.bias]
    %b = batchnorm(%y) eps 1e-5   ==>    (readers of %b read %y)

The layer's weights are scaled per output channel by weight / sqrt(running_var + eps) and its
bias becomes (bias - running_mean) * that scale + the BatchNorm's bias: two constants the pass
adds to the graph's constants store, named after both layers, computed in float64 from the
user's weights when they meet the graph. An affine folds the same way: the weights times its
weight, the bias times its weight plus its bias. Only when the BatchNorm is the layer's single
reader, the layer is not a graph output, and nothing is fused into it yet (this pass runs
first).
"""
from __future__ import annotations

from functools import partial

from ..ir.graph import Constant, Graph, Node
from ..ir.ops import OPS, node_params
from ..ops.norm import affine_bias, affine_weight, folded_bias, folded_weight
from .rewrite import Rewrite, apply_rules, single_consumer

NAME = "fold_batchnorm"


def foldable(graph: Graph, bn: Node) -> Node | None:
    """The layer the BatchNorm (or affine) `bn` can be folded into, if any."""
    if bn.op not in ("batchnorm", "affine"):
        return None
    layer = graph[bn.inputs[0]]
    if OPS[layer.op].scale_axis is None or layer.epilogue or layer.out_view is not None \
            or "pool" in layer.attrs:
        return None
    if layer.attrs.get("groups", 1) > 1 and OPS[layer.op].scale_axis != 0:
        return None      # a grouped deconv's weight axis 1 holds a group's outputs, not all

    if single_consumer(graph, layer.name, graph.consumers()) != bn.name:
        return None
    return layer


def match(graph: Graph, node: Node) -> Rewrite | None:
    layer = foldable(graph, node)
    if layer is None:
        return None
    axis = OPS[layer.op].scale_axis
    before, norm = node_params(graph, layer), node_params(graph, node)
    weight = f"{layer.param_prefix}.weight"
    prefix = f"{layer.param_prefix}+{node.param_prefix}"
    bias_in = ((f"{layer.param_prefix}.bias", before[f"{layer.param_prefix}.bias"]),) \
        if layer.attrs["bias"] else ()
    make = affine_constants if node.op == "affine" else batchnorm_constants
    constants = make(node, norm, weight, before[weight], prefix, axis, layer.attrs["out"], bias_in)
    fused = layer.replace(attrs=layer.attrs.replace(bias=True), param_prefix=prefix,
                          fused=layer.fused + (node.name,))
    return Rewrite(at=layer.name, new=fused, remove=(node.name,), renamed_to=layer.name,
                   constants=constants)


def batchnorm_constants(node: Node, norm: dict, weight: str, weight_shape, prefix: str,
                        axis: int, out: int, bias_in: tuple) -> tuple[Constant, Constant]:
    """The folded weight and bias of a layer followed by the BatchNorm `node`."""
    eps = node.attrs["eps"]
    gamma, beta, mean, var = ((k, norm[k]) for k in (f"{node.param_prefix}.{p}" for p in
                                                     ("weight", "bias", "running_mean",
                                                      "running_var")))
    return (
        Constant(f"{prefix}.weight", weight_shape, ((weight, weight_shape), gamma, var),
                 partial(folded_weight, axis=axis, eps=eps),
                 f"{weight} scaled by {node.name}'s weight / sqrt(running_var + eps)"),
        Constant(f"{prefix}.bias", (out,), (gamma, beta, mean, var) + bias_in,
                 partial(folded_bias, eps=eps),
                 f"({bias_in[0][0]} - running_mean) * scale + "
                 f"{node.name}.bias" if bias_in else f"-running_mean * scale + {node.name}.bias"),
    )


def affine_constants(node: Node, norm: dict, weight: str, weight_shape, prefix: str,
                     axis: int, out: int, bias_in: tuple) -> tuple[Constant, Constant]:
    """The folded weight and bias of a layer followed by the affine `node`."""
    scale, shift = ((k, norm[k]) for k in (f"{node.param_prefix}.{p}" for p in ("weight", "bias")))
    return (
        Constant(f"{prefix}.weight", weight_shape, ((weight, weight_shape), scale),
                 partial(affine_weight, axis=axis), f"{weight} scaled by {node.name}'s weight"),
        Constant(f"{prefix}.bias", (out,), (scale, shift) + bias_in, affine_bias,
                 f"{bias_in[0][0]} * {node.name}.weight + {node.name}.bias" if bias_in
                 else f"{node.name}.bias"),
    )


def run(graph: Graph) -> Graph:
    return apply_rules(graph, match)
