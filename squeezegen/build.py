"""The whole build, as one readable sequence: model -> passes -> memory plan -> generated files.

    graph = load_model(path)                 # frontend: YAML -> verified IR
    fused = run_passes(graph)                # passes: fusion, in-place concat
    tiles = schedule(fused, batch, ...)      # tile sizes (split-K, tensor cores) per kernel
    plan = plan_memory(fused, batch, ...)    # one arena, offsets, lifetimes, scratch
    out = render(fused, graph, plan, w)      # codegen: .cu, .h, manifest.json (+ weights blob)

`build()` is `squeezegen.build(...)` from Python, and what `squeezegen build` runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .codegen.emit import BuildOutput, render
from .codegen.schedule import PRECISIONS, Tile, schedule, scratch_needs
from .codegen.target import H200, Target
from .errors import BuildError
from .frontend import load_model
from .fsutil import atomic_write_all
from .ir.graph import Graph
from .passes import run_passes
from .passes.plan_memory import MemoryPlan, plan_memory
from .weights import check_weights, load_weights



@dataclass
class Build:
    graph: Graph            # as parsed
    fused: Graph            # after the passes
    plan: MemoryPlan
    output: BuildOutput
    written: list[Path] = field(default_factory=list)     # the files `write=` put on disk

    @property
    def files(self) -> dict[str, bytes]:
        """The generated files by name: `<model>.cu`, `<model>.h`, `manifest.json` (and
        `<model>.weights.bin` with weights)."""
        return self.output.files


def build(model, batch: int = 1, weights=None, precision: str = "fp32",
          on_pass: Callable[[str, Graph], None] | None = None,
          tiles: dict[str, Tile] | None = None, write=None, target: Target | None = None) -> Build:
    """Model (a path to its YAML, or a Graph) -> the generated files, in memory: no GPU, nvcc or
    PyCUDA is needed. `weights` (an .npz path or a dict) adds the weights blob; `write=DIR` also
    writes the files to DIR/<model>/, as `squeezegen build -o DIR` does. `on_pass(name, graph)`
    sees the graph after each pass; `tiles` overrides the heuristic's tile of the named nodes
    (the autotuner's choices); `target` is the GPU the heuristics schedule for (the H200 when
    not given; `squeezegen.compile` passes the GPU it runs on)."""
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
        raise BuildError(f"batch must be a positive integer, got {batch!r}", field="batch")
    batch = int(batch)                       # numpy's integers too (a shape's entry)
    if precision not in PRECISIONS:
        raise BuildError(f"precision '{precision}' is not supported (supported: "
                         f"{', '.join(PRECISIONS)})", field="precision")
    graph = load_model(model)
    checked = None
    if weights is not None:
        file = None if isinstance(weights, dict) else str(weights)
        checked = check_weights(graph, load_weights(weights), file)
    fused = run_passes(graph, on_step=on_pass)
    target = target or H200
    tiles = schedule(fused, batch, tiles, precision, target)
    plan = plan_memory(fused, batch, tiles, scratch_needs(fused, batch, tiles))
    result = Build(graph, fused, plan, render(fused, graph, plan, checked, precision, target))
    if write is not None:
        result.written = write_outputs(result.output, Path(write) / graph.name)
    return result


def write_outputs(output: BuildOutput, folder) -> list[Path]:
    """Write every file atomically into `folder` (created if needed)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BuildError("output path exists and is not a folder", file=str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the output folder: {exc.strerror or exc}",
                         file=str(folder)) from None
    if not os.access(folder, os.W_OK):
        raise BuildError("output folder is not writable", file=str(folder))
    files = {folder / name: content for name, content in output.files.items()}
    atomic_write_all(files)                  # all the new files, or (on a failure) the old ones
    return list(files)


def stale_files(output: BuildOutput, folder) -> tuple[list[str], list[str]]:
    """Names of generated files that are missing from `folder`, and of those that differ from
    `output`."""
    folder = Path(folder)
    missing, differ = [], []
    for name, content in output.files.items():
        path = folder / name
        if not path.is_file():
            missing.append(name)
        elif path.read_bytes() != content:
            differ.append(name)
    return missing, differ
