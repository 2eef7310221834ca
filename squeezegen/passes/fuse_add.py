"""Fuse an add into the kernel that produces one of its operands (a skip connection).

    %s = conv(%p)                         %s = conv(%p) epilogue[add(%u)]
    %a = add(%u, %s)           ==>        (readers of %a read %s)

The absorbing operand is a conv/deconv/linear read only by this add; of several candidates the
latest one in the graph is taken. The fused node takes the add's place in the order, so every
other operand is computed before it.
"""
from __future__ import annotations

from ..ir.graph import EpilogueStep, Graph, Node
from ..ir.ops import takes_step
from .rewrite import Rewrite, apply_rules, single_consumer

NAME = "fuse_add"


def match(graph: Graph, node: Node) -> Rewrite | None:
    if node.op != "add":
        return None
    consumers = graph.consumers()
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    candidates = [graph[i] for i in node.inputs
                  if takes_step(graph[i].op, "add") and graph[i].out_view is None
                  and all(graph[j].type == node.type for j in node.inputs)
                  and single_consumer(graph, i, consumers) == node.name]
    if not candidates:
        return None
    producer = max(candidates, key=lambda n: order[n.name])
    steps = tuple(EpilogueStep("add", i) for i in node.inputs if i != producer.name)
    if not all(takes_step(producer.op, s.kind) for s in node.epilogue):
        return None
    # the add's own epilogue (an activation fused into it) follows the add
    fused = producer.replace(epilogue=producer.epilogue + steps + node.epilogue,
                             fused=producer.fused + (node.name,) + node.fused)
    # the fused node takes the add's place; readers of the add read the fused node
    return Rewrite(at=node.name, new=fused, remove=(producer.name, node.name),
                   renamed_to=producer.name)


def run(graph: Graph) -> Graph:
    return apply_rules(graph, match)
