"""Fuse a ReLU, or any other activation (relu6, clip, leaky_relu, sigmoid, hardsigmoid,
hardswish, silu, tanh), into the kernel that produces its input (conv, deconv, linear,
batchnorm): the activation's C expression is applied in the store.

    %y = conv(%x)                 %y = conv(%x) epilogue[hardswish]
    %r = hardswish(%y)     ==>    (readers of %r read %y)

Only when the activation is the producer's single reader and the producer is not a graph
output. (The name is the pass's first job: the ReLU of `relu: true`.)
"""
from __future__ import annotations

from ..ir.graph import EpilogueStep, Graph, Node
from ..ir.ops import OPS
from .rewrite import Rewrite, absorb, absorbable, apply_rules

NAME = "fuse_relu"


def match(graph: Graph, node: Node) -> Rewrite | None:
    if OPS[node.op].activation is None:
        return None
    producer = graph[node.inputs[0]]
    if not absorbable(graph, producer, node, node.op):
        return None
    already = node.op == "relu" and producer.epilogue and producer.epilogue[-1].kind == "relu"
    steps = producer.epilogue if already else (      # relu(relu(x)) is relu(x)
        producer.epilogue + (EpilogueStep(node.op, attrs=node.attrs),))
    # the activation's own epilogue (a step fused into it by an earlier pass) comes after it
    fused = producer.replace(epilogue=steps + node.epilogue,
                             fused=producer.fused + (node.name,) + node.fused)
    return absorb(producer, node, fused)


def run(graph: Graph) -> Graph:
    return apply_rules(graph, match)
