"""Run a fused, planned graph in NumPy on the same memory layout as the generated CUDA.

One flat float32 arena with the planner's offsets, outputs written into their concat channel
slices, epilogues applied at the store: the same addresses the .cu reads and writes. Comparing this
with the unfused reference catches pass and planner bugs (overlapping lifetimes, wrong slice
offsets) on machines without a GPU.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..ir.ops import OPS, apply_step
from ..passes.plan_memory import FLOAT_BYTES, MemoryPlan, Placement
from .executor import ReferenceExecutor, check_input


def _view(storage: np.ndarray, place: Placement, shape: tuple, batch: int) -> np.ndarray:
    """The (batch, *shape) strided view of a tensor inside its storage."""
    per_image = int(np.prod(shape))
    itemsize = storage.itemsize
    base = storage[place.offset:]
    return np.lib.stride_tricks.as_strided(
        base, shape=(batch, per_image), strides=(place.image_stride * itemsize, itemsize),
        writeable=True).reshape((batch,) + tuple(shape))


class PlannedExecutor(ReferenceExecutor):
    """Like the reference executor, but every tensor lives where the memory plan puts it."""

    def __init__(self, graph: Graph, plan: MemoryPlan, weights: dict, weights_file=None):
        super().__init__(graph, weights, weights_file)
        self.plan = plan

    def run_all(self, x) -> dict[str, np.ndarray]:
        g, plan = self.graph, self.plan
        x = check_input(g, x)
        if x.shape[0] != plan.batch:
            raise ValueError(f"this plan is for batch {plan.batch}, got {x.shape[0]}")
        storages = {"input": x.reshape(-1).copy(),
                    "arena": np.full(plan.arena_bytes // FLOAT_BYTES, np.nan, np.float32)}
        for i, out in enumerate(g.outputs):
            storages[f"output{i}"] = np.full(plan.batch * g[out].type.numel, np.nan, np.float32)

        def view(name):
            place = plan[name]
            return _view(storages[place.storage], place, g[name].type.shape, plan.batch)

        scratch = {b.tensor[:-len(".partials")]: b for b in plan.buffers
                   if b.tensor.endswith(".partials")}
        env = {g.input.name: x}
        for node in g.nodes[1:]:
            self._check_no_overlap(node)
            if node.name in scratch:                       # the kernel's split-K partial sums:
                b = scratch[node.name]                     # poison them, so a live tensor placed
                lo = b.offset // FLOAT_BYTES               # there would show up as NaN
                storages["arena"][lo: lo + b.size // FLOAT_BYTES] = np.nan
            self._run_node(node, view)
            env[node.name] = view(node.name).copy()        # as it is right after this node
        return env

    def _extent(self, name: str) -> tuple[str, int, int]:
        """(storage, first float, end float) that a tensor's views span."""
        place = self.plan[name]
        numel = self.graph[name].type.numel
        return place.storage, place.offset, place.offset + (self.plan.batch - 1) * place.image_stride + numel

    def _check_no_overlap(self, node) -> None:
        """A kernel must never write where it reads (the NumPy ops would hide it)."""
        if node.op == "concat":
            return
        out = self._extent(node.name)
        for name in node.reads:
            src = self._extent(name)
            if src[0] == out[0] and src[1] < out[2] and out[1] < src[2]:
                raise AssertionError(f"memory plan bug: {node.name} writes floats "
                                     f"{out[1]}..{out[2]} of {out[0]}, over its input {name} "
                                     f"({src[1]}..{src[2]})")

    def _run_node(self, node, view) -> None:
        in_place = set(node.attrs.get("in_place", ())) if node.op == "concat" else set()
        if in_place == set(node.inputs):
            return                                         # written in place by its operands
        args = [view(i).copy() for i in node.inputs]
        if node.op == "concat":                            # copy only what is not in place
            offset, out = 0, view(node.name)
            for name, arr in zip(node.inputs, args):
                if name not in in_place:
                    out[:, offset:offset + arr.shape[1]] = arr
                offset += arr.shape[1]
            return
        y = OPS[node.op].reference(node.attrs, args, self._params(node))
        for step in node.epilogue:
            y = apply_step(step, y, view(step.operand) if step.operand else None,
                           self._weights_of(step.param_prefix))
        view(node.name)[...] = y
