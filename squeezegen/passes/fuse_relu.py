"""Fuse a ReLU into the kernel that produces its input (conv, deconv, linear).

    %y = conv(%x)            %y = conv(%x) epilogue[relu]
    %r = relu(%y)     ==>    (readers of %r read %y)

Only when the ReLU is the producer's single reader and the producer is not a graph output.
"""
from __future__ import annotations

from ..ir.graph import EpilogueStep, Graph, Node
from ..ir.ops import OPS
from .rewrite import Rewrite, apply_rules, single_consumer

NAME = "fuse_relu"


def match(graph: Graph, node: Node) -> Rewrite | None:
    if node.op != "relu":
        return None
    producer = graph[node.inputs[0]]
    if not OPS[producer.op].takes_epilogue or producer.out_view is not None:
        return None
    if single_consumer(graph, producer.name, graph.consumers()) != node.name:
        return None
    already = producer.epilogue and producer.epilogue[-1].kind == "relu"   # relu(relu(x))
    steps = producer.epilogue if already else producer.epilogue + (EpilogueStep("relu"),)
    fused = producer.replace(epilogue=steps, fused=producer.fused + (node.name,))
    return Rewrite(at=producer.name, new=fused, remove=(node.name,), renamed_to=producer.name)


def run(graph: Graph) -> Graph:
    return apply_rules(graph, match)
