"""`squeezegen check`: run the generated network kernel by kernel against the reference.

Each kernel's output tensor is read back from the GPU right after it runs and compared with the
same tensor of the NumPy executor of the fused, planned graph. Because each kernel reads what the
GPU kernels before it wrote, the first kernel beyond tolerance is the one to look at.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..reference.planned import PlannedExecutor
from .network import Network


@dataclass
class KernelCheck:
    kernel: str
    node: str
    layers: list
    line: int | None
    max_abs: float
    max_rel: float
    ok: bool


def check_kernels(net: Network, x: np.ndarray, tolerance: float = 1e-4) -> list[KernelCheck]:
    graph, plan = net.graph, net.build.plan
    expected = PlannedExecutor(graph, plan, net.weights).run_all(x)
    with net.active() as drv:
        drv.memcpy_htod(net._input, np.ascontiguousarray(x))
        outs = [int(o) for o in net._outputs]
        got_all = {}
        for i, k in enumerate(net.build.output.manifest["kernels"]):
            net.launch_kernels(net.stream, int(net._input), outs, only=i)
            net.stream.synchronize()
            got_all[k["node"]] = net.tensor(k["node"])
    rows = []
    for k in net.build.output.manifest["kernels"]:
        got, want = got_all[k["node"]], expected[k["node"]]
        scale = max(float(np.abs(want).max()), 1e-30)
        err = np.abs(got.astype(np.float64) - want)
        max_abs = float(np.nanmax(err)) if err.size else 0.0
        if np.isnan(err).any() and not np.array_equal(np.isnan(got), np.isnan(want)):
            max_abs = float("nan")
        rel = max_abs / scale
        rows.append(KernelCheck(k["name"], k["node"], k["layers"], k["line"], max_abs, rel,
                                bool(rel <= tolerance)))
    return rows


def format_checks(rows: list[KernelCheck], source: str | None, tolerance: float) -> str:
    name = Path(source).name if source else "model"
    lines = [f"{'kernel':34s} {'max abs err':>12s} {'max rel err':>12s}  layer"]
    first_bad = next((r for r in rows if not r.ok), None)
    for r in rows:
        mark = "  <-- first divergence" if r is first_bad else ("  !" if not r.ok else "")
        lines.append(f"{r.kernel:34s} {r.max_abs:12.3e} {r.max_rel:12.3e}  "
                     f"{', '.join(r.layers)} ({name}:{r.line}){mark}")
    if first_bad:
        lines.append(f"FAIL: kernel {first_bad.kernel} (layer {', '.join(first_bad.layers)}, "
                     f"{name}:{first_bad.line}) is the first beyond the tolerance {tolerance:g}")
    else:
        lines.append(f"OK: all {len(rows)} kernels within {tolerance:g} of the reference")
    return "\n".join(lines)
