"""Run a BatchNorm, affine or PReLU that could not be folded into the weights before it in the
store of the kernel that produces its input (a pool, an add, a conv whose activation comes
first, a resize): a per-channel step with its own weights.

    %p = maxpool(%x)                     %p = maxpool(%x) epilogue[batchnorm(bn1)]
    %b = batchnorm(%p) eps 1e-5   ==>    (readers of %b read %p)

The kernel reads the step's weights at each element's channel (`OpInfo.channel_step`, the same
C expression the op's own kernel uses). Only when the step is its producer's single reader and
the producer is not a graph output; the step's own epilogue (an activation fused into it) comes
after it. Runs after fold_batchnorm (which folds into the weights where it can) and fuse_pool
(a max does not commute with a negative scale, so a pooled conv takes the step after its pool).
"""
from __future__ import annotations

from ..ir.graph import EpilogueStep, Graph, Node
from ..ir.ops import OPS
from .rewrite import Rewrite, absorb, absorbable, apply_rules

NAME = "fuse_channel_step"


def match(graph: Graph, node: Node) -> Rewrite | None:
    if OPS[node.op].channel_step is None:
        return None
    producer = graph[node.inputs[0]]
    if not absorbable(graph, producer, node, node.op):
        return None
    step = EpilogueStep(node.op, attrs=node.attrs, param_prefix=node.param_prefix)
    fused = producer.replace(epilogue=producer.epilogue + (step,) + node.epilogue,
                             fused=producer.fused + (node.name,) + node.fused)
    return absorb(producer, node, fused)


def run(graph: Graph) -> Graph:
    return apply_rules(graph, match)
