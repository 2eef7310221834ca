"""Run a graph with the NumPy reference ops: the oracle every other backend is checked against.

Works on any graph, before or after passes: fused epilogues (relu, add) are applied in order, and
an `out_view` (a slice of a concat) changes where a value is stored, not what it is.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from ..errors import InputError
from ..frontend import load_model
from ..ir.graph import Graph
from ..ir.ops import OPS, apply_step, resolve_weights, weights_under
from ..weights import check_weights, load_weights


def check_input(graph: Graph, x, what: str = "input", check_values: bool = True) -> np.ndarray:
    """x as a batch for `graph`: float32 of shape (N, *input shape), N >= 1; InputError otherwise.
    Non-finite values only warn (a RuntimeWarning; not looked for with check_values=False): they
    are legal floats, and propagate as they would anywhere."""
    expected = graph.input.type.shape
    if not isinstance(x, np.ndarray):
        raise InputError(f"{what} must be a NumPy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise InputError(f"{what} has dtype {x.dtype}, expected float32 "
                         "(convert with x.astype(np.float32))")
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != tuple(expected) or x.shape[0] < 1:
        want = "(N, " + ", ".join(str(d) for d in expected) + ")"
        empty = " (no images: N must be at least 1)" if x.ndim and x.shape[0] < 1 else ""
        raise InputError(f"{what} has shape {tuple(x.shape)}, expected {want} for model "
                         f"'{graph.name}'{empty}")
    bad = ~np.isfinite(x) if check_values else None
    if bad is not None and bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        warnings.warn(f"{what} holds {int(bad.sum())} non-finite value(s) (NaN/Inf), first at "
                      f"index {first}; they propagate through the network",
                      RuntimeWarning, stacklevel=3)
    return np.ascontiguousarray(x)


class ReferenceExecutor:
    """`ReferenceExecutor(graph, weights)(x)` -> the output (a tuple if the model has several).

    `rounded` maps node names to a rounding function applied to that node's operands and weight
    before it computes (fp32 otherwise): the reference of a reduced-precision build, whose
    tensor-core kernels round exactly those to tf32 or fp16 and accumulate in fp32."""

    def __init__(self, graph: Graph, weights: dict, weights_file: str | None = None,
                 rounded: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None):
        self.graph = graph
        self.weights = resolve_weights(graph, check_weights(graph, weights, weights_file))
        self.rounded = rounded or {}

    def _params(self, node) -> dict:
        return self._weights_of(node.param_prefix)

    def _weights_of(self, prefix: str | None) -> dict:
        return weights_under(self.weights, prefix)

    def run_all(self, x) -> dict[str, np.ndarray]:
        """Every tensor of the graph, by node name."""
        env = {self.graph.input.name: check_input(self.graph, x)}
        for node in self.graph.nodes[1:]:
            args = [env[i] for i in node.inputs]
            params = self._params(node)
            if node.name in self.rounded:
                rnd = self.rounded[node.name]
                args = [rnd(a) for a in args]
                params = {k: rnd(v) if k == "weight" else v for k, v in params.items()}
            y = OPS[node.op].reference(node.attrs, args, params)
            for step in node.epilogue:
                y = apply_step(step, y, env.get(step.operand), self._weights_of(step.param_prefix))
            env[node.name] = y
        return env

    def __call__(self, x):
        env = self.run_all(x)
        outs = tuple(env[o] for o in self.graph.outputs)
        return outs[0] if len(outs) == 1 else outs


def reference(model, weights) -> ReferenceExecutor:
    """The reference executor of a model (path or Graph) with weights (path or dict)."""
    graph = load_model(model)
    file = None if isinstance(weights, dict) else str(weights)
    return ReferenceExecutor(graph, load_weights(weights), file)
