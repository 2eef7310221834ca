"""The small machinery every pass uses: match a node, rebuild the graph, rename uses.

A rule is a function `(graph, node) -> Rewrite | None` (None: no match). `apply_rules` runs a
rule over the nodes until nothing matches any more, building a new graph each time; the input
graph is never mutated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..ir.graph import Constant, Graph, Node
from ..ir.ops import takes_step


@dataclass(frozen=True)
class Rewrite:
    """Put `new` at the position of node `at` and delete the nodes in `remove` (which may
    include `at`); readers of a removed node read `renamed_to` instead."""
    at: str
    new: Node
    remove: tuple[str, ...] = ()
    renamed_to: str | None = None
    constants: tuple[Constant, ...] = ()     # weights the rewrite derives (the constants store)


Rule = Callable[[Graph, Node], "Rewrite | None"]


def absorbable(graph: Graph, producer: Node, node: Node, kind: str) -> bool:
    """Whether `node` (its op applied as epilogue step `kind`, then its own epilogue) can go
    into the store of `producer`: the producer's kernel takes those steps, writes no concat
    slice yet, and `node` is its only reader, reading it once (not `x + act(x)`)."""
    return (producer.out_view is None
            and all(takes_step(producer.op, k) for k in (kind, *(s.kind for s in node.epilogue)))
            and single_consumer(graph, producer.name, graph.consumers()) == node.name
            and node.reads.count(producer.name) == 1)


def absorb(producer: Node, node: Node, fused: Node) -> Rewrite:
    """`node` absorbed into its producer (now `fused`): readers of `node` read the producer.
    The fused node stays where the producer was, unless `node`'s epilogue adds a tensor (which
    may be computed between the two): then it takes `node`'s place."""
    if any(s.kind == "add" for s in node.epilogue):
        return Rewrite(at=node.name, new=fused, remove=(producer.name, node.name),
                       renamed_to=producer.name)
    return Rewrite(at=producer.name, new=fused, remove=(node.name,), renamed_to=producer.name)


def single_consumer(graph: Graph, name: str, consumers: dict) -> str | None:
    """The one node reading `name`, if exactly one does and `name` is not a graph output."""
    readers = consumers[name]
    if len(readers) != 1 or name in graph.outputs:
        return None
    return readers[0]


def _rename(node: Node, old: str, new: str) -> Node:
    if old not in node.reads:
        return node
    inputs = tuple(new if i == old else i for i in node.inputs)
    epilogue = tuple(s if s.operand != old else s.replace(operand=new) for s in node.epilogue)
    return node.replace(inputs=inputs, epilogue=epilogue)


def apply(graph: Graph, rw: Rewrite) -> Graph:
    nodes = []
    for node in graph.nodes:
        if node.name == rw.at:
            nodes.append(rw.new)
        elif node.name not in rw.remove:
            nodes.append(node)
    outputs = graph.outputs
    if rw.renamed_to:
        for old in rw.remove:
            if old == rw.renamed_to:
                continue
            nodes = [_rename(n, old, rw.renamed_to) for n in nodes]
            outputs = tuple(rw.renamed_to if o == old else o for o in outputs)
    return graph.replace(nodes=tuple(nodes), outputs=outputs,
                         constants=graph.constants + rw.constants)


def apply_rules(graph: Graph, rule: Rule) -> Graph:
    """Apply `rule` until it matches nowhere."""
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            rw = rule(graph, node)
            if rw is not None:
                graph = apply(graph, rw)
                changed = True
                break
    return graph
