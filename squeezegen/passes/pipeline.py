"""The passes, in the order they run. `squeezegen build --dump-ir` prints the IR after each.

    fold_batchnorm  conv/deconv/linear + batchnorm  -> the layer, the BatchNorm in its weights
    fuse_relu       any kernel + an activation      -> one kernel, the activation in its store
    fuse_pool       conv + 2- or 4-pixel max pool   -> one kernel, the max taken before the store
    fuse_channel_step any kernel + a batchnorm/affine/prelu not folded -> one kernel, per channel
                    in its store
    fuse_add        conv/deconv/linear + add (skip) -> one kernel, add in its epilogue
    fuse_relu       again: an add's relu (`add relu: true`) now follows a fused kernel
    fire_concat     concat operands written in place -> no concat kernel, no copy

Memory planning (plan_memory.py) runs after these, for a chosen batch size.
"""
from __future__ import annotations

from typing import Callable

from ..ir.graph import Graph
from ..ir.verify import verify
from . import fire_concat, fold_batchnorm, fuse_add, fuse_channel_step, fuse_pool, fuse_relu

PIPELINE: list[tuple[str, Callable[[Graph], Graph]]] = [
    (fold_batchnorm.NAME, fold_batchnorm.run),
    (fuse_relu.NAME, fuse_relu.run),
    (fuse_pool.NAME, fuse_pool.run),
    (fuse_channel_step.NAME, fuse_channel_step.run),
    (fuse_add.NAME, fuse_add.run),
    (fuse_relu.NAME, fuse_relu.run),
    (fire_concat.NAME, fire_concat.run),
]


def run_passes(graph: Graph, on_step: Callable[[str, Graph], None] | None = None) -> Graph:
    """Run the pipeline, verifying the graph after each pass; on_step(name, graph) sees each."""
    for name, fn in PIPELINE:
        graph = verify(fn(graph), after=name).replace(passes=graph.passes + (name,))
        if on_step:
            on_step(name, graph)
    return graph
