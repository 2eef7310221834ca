"""Check the invariants of a graph; run after parsing and after every pass.

A failure here after a pass is a bug in squeezegen, not in the user's model; the error names the
node, its YAML layer and line, so the culprit is easy to find either way.
"""
from __future__ import annotations

from ..errors import SqueezegenError
from .graph import Graph
from .ops import OPS, ShapeError, infer, takes_step


class VerifyError(SqueezegenError):
    """The IR breaks an invariant (a compiler bug when it happens after a pass)."""


def verify(graph: Graph, after: str | None = None) -> Graph:
    stage = f" after pass '{after}'" if after else ""

    def fail(node, message):
        raise VerifyError(f"invalid IR{stage}: node '{node.name}' ({node.op}): {message}",
                          file=graph.source, line=node.line, layer=node.layer)

    seen: dict = {}
    if not graph.nodes or graph.nodes[0].op != "input":
        raise VerifyError(f"invalid IR{stage}: the first node must be the input")
    for node in graph.nodes:
        if node.name in seen:
            fail(node, "name defined twice")
        if node.op not in OPS:
            fail(node, f"unknown op '{node.op}'")
        if node.op == "input" and seen:
            fail(node, "only the first node may be the input")
        for name in node.reads:
            if name not in seen:
                fail(node, f"reads '{name}', which is not defined before it")
        operands = [seen[i].type for i in node.inputs]
        try:
            expected = infer(node.op, node.attrs, operands)
        except ShapeError as exc:
            fail(node, str(exc))
        if expected != node.type:
            fail(node, f"type {node.type} but its op gives {expected}")
        for step in node.epilogue:
            if not OPS[node.op].takes_epilogue:
                fail(node, "this op cannot carry an epilogue")
            if not takes_step(node.op, step.kind):
                fail(node, f"unknown epilogue step '{step.kind}'")
            if step.kind == "add" and seen[step.operand].type != node.type:
                fail(node, f"epilogue add of '{step.operand}' does not match its inputs")
        seen[node.name] = node
    for node in graph.nodes:
        if node.out_view is not None:
            target = seen.get(node.out_view.into)
            if target is None or target.op != "concat" or node.name not in target.inputs:
                fail(node, f"writes into '{node.out_view.into}', which is not a concat of it")
    for out in graph.outputs:
        if out not in seen:
            raise VerifyError(f"invalid IR{stage}: output '{out}' is not a node")
    return graph
