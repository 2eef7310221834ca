"""Concat without copies: producers write straight into their channel slice of the concat.

    %a = conv(%s) : 64x55x55               %a = conv(%s) -> %f[c0:]
    %b = conv(%s) : 64x55x55       ==>     %b = conv(%s) -> %f[c64:]
    %f = concat(%a, %b) : 128x55x55        %f = concat(%a, %b) {in_place}   (no kernel)

An operand can be written in place when its producer is a conv/deconv/linear kernel whose only
reader is the concat and which is not a graph output. Operands that cannot (the network input,
a pool, a tensor with other readers) are copied by a concat kernel that skips the in-place ones.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node, OutView
from ..ir.ops import OPS
from .rewrite import single_consumer

NAME = "fire_concat"


def in_place_operands(graph: Graph, concat: Node, consumers: dict) -> set[str]:
    return {i for i in concat.inputs
            if OPS[graph[i].op].takes_epilogue and graph[i].out_view is None
            and single_consumer(graph, i, consumers) == concat.name
            and concat.inputs.count(i) == 1}


def run(graph: Graph) -> Graph:
    consumers = graph.consumers()
    views: dict[str, OutView] = {}
    in_place: dict[str, tuple[str, ...]] = {}
    for node in graph.nodes:
        if node.op != "concat":
            continue
        chosen = in_place_operands(graph, node, consumers)
        offset = 0
        for i in node.inputs:
            if i in chosen:
                views[i] = OutView(node.name, offset)
            offset += graph[i].type.channels
        if chosen:
            in_place[node.name] = tuple(i for i in node.inputs if i in chosen)
    nodes = []
    for node in graph.nodes:
        if node.name in views:
            node = node.replace(out_view=views[node.name])
        if node.name in in_place:
            node = node.replace(attrs=node.attrs.replace(in_place=in_place[node.name]))
        nodes.append(node)
    return graph.replace(nodes=tuple(nodes))
