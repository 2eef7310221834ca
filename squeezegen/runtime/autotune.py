"""The autotuner: time every candidate tile of every tunable layer on the GPU, keep the fastest.

A round builds the whole network with the r-th candidate of every layer (the heuristic's tile
where a layer has fewer candidates), compiles it (the rounds' nvcc runs are parallel), times
each kernel alone (`bench.time_kernels`) and checks that the network's output still matches the
heuristic build's (a tile that computes something else is never chosen). Per layer, the fastest
candidate wins.

Choices are cached in `tuning.json` in the build cache, keyed by GPU name, a digest of the
kernel code (every template, the ops' lowerings in `ops/`, `codegen/schedule.py`, `kernels.py`
and `tiles.py`) and the layer's signature (op, shapes, attributes, fused epilogue, batch,
precision), so a layer is tuned once per GPU and kernel code, whatever model it appears in; a
cached tile that is no longer a candidate is ignored. The package ships a database of the same
form (`squeezegen/data/tuning.json`, written by `scripts/ship_tuning.py` from a tuning run on the
H200): its choices count as cached, so `compile(..., tune=True)` on a fresh H200 times only what
it lacks. Without a GPU, or for a layer never tuned, builds use the heuristic of
`codegen/schedule.py`.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..build import Build, build
from ..codegen.schedule import (ConvTile, DeconvMmaTile, DeconvTile, Tile, candidate_tiles,
                                tensor_core_candidates, tunable)
from ..codegen.target import H200, Target
from ..errors import BuildError, SqueezegenError
from ..frontend import load_model
from ..fsutil import atomic_write, private_dir
from ..ir.graph import Graph, Node
from ..passes import run_passes
from .compile import cache_dir, compile_cubin

CACHE_FORMAT = 1
# a round's output vs the heuristic build's, relative to its max magnitude: rounds differ in
# summation order, and in tf32/fp16 builds also in which layers round their inputs to 10 bits
MATCH_TOL = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3}


def layer_signature(graph: Graph, node: Node, batch: int, precision: str = "fp32") -> str:
    """What the kernel's speed depends on: op, shapes, every attribute of the node (those its op
    declares, and those passes add, like a fused pool), fused epilogue, batch, and the
    precision where it has tensor-core candidates (a layer that only has fp32 tiles is tuned
    once for every precision)."""
    ins = ",".join("x".join(map(str, graph[i].type.shape)) for i in node.inputs)
    attrs = ";".join(f"{k}={node.attrs[k]}" for k in sorted(node.attrs))
    epilogue = "+".join(step.kind for step in node.epilogue)
    view = f"into{graph[node.out_view.into].type.channels}" if node.out_view else ""
    out = "x".join(map(str, node.type.shape))
    tail = f"|{precision}" if tensor_core_candidates(node, precision) else ""
    return f"{node.op}|{ins}->{out}|{attrs}|{epilogue}|{view}|n{batch}{tail}"


TILE_KINDS = {"conv": ConvTile, "deconv": DeconvTile, "deconv_mma": DeconvMmaTile}


def tile_to_json(tile: Tile) -> dict:
    kind = next(k for k, cls in TILE_KINDS.items() if isinstance(tile, cls))
    return {"kind": kind, **asdict(tile)}


def tile_from_json(data: dict) -> Tile:
    data = dict(data)
    return TILE_KINDS[data.pop("kind")](**data)


def tuning_file() -> Path:
    return private_dir(cache_dir(), "tuning cache") / "tuning.json"


# Kernels no tile runs: ops that are never tuned nor fused into a tuned kernel's store, and the
# host code (timings are of each kernel alone). Changing them leaves every tuned choice valid.
UNTUNED_TEMPLATES = ("softmax", "pool", "concat", "resize", "pixel_shuffle", "channels",
                     "segment_masks", "image_inputs", "network", "groupnorm", "layernorm",
                     "reduce_channels", "eltwise", "conv_direct", "deconv_direct", "pad")
UNTUNED_OPS = ("softmax", "concat", "resize", "pixel_shuffle", "channels", "groupnorm",
               "reduce", "eltwise", "pad")


def kernel_sources() -> list[Path]:
    """What decides the code a tile runs: the templates of tuned kernels and of what they
    include, and the Python that schedules and lowers them and their fused steps (every op
    module but `UNTUNED_OPS`)."""
    package = Path(__file__).resolve().parents[1]
    templates = [p for p in sorted((package / "templates").glob("*.j2"))
                 if p.name.split(".")[0] not in UNTUNED_TEMPLATES]
    ops = [p for p in sorted((package / "ops").glob("*.py")) if p.stem not in UNTUNED_OPS]
    return (templates + ops
            + [package / "codegen" / name for name in ("schedule.py", "kernels.py", "tiles.py")])


@lru_cache(maxsize=None)
def kernels_digest() -> str:
    """A short hash of `kernel_sources()`: a choice timed against other kernel code is re-timed."""
    digest = hashlib.sha256()
    for path in kernel_sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _entry_key(gpu: str, signature: str) -> str:
    return f"{gpu}|kernels {kernels_digest()}|{signature}"


def shipped_tuning_file() -> Path:
    """The tuning database shipped in the package: choices timed on the GPUs squeezegen is
    tuned on (the H200), keyed like the cache, so used only on a GPU of that name and while the
    kernels' digest is the one they were timed with (`scripts/ship_tuning.py` writes it)."""
    return Path(__file__).resolve().parents[1] / "data" / "tuning.json"


def known_tuning() -> dict:
    """Every choice there is: the shipped database's, then the user's cache (which wins)."""
    return {**load_tuning(shipped_tuning_file()), **load_tuning()}


def load_tuning(path: Path | None = None) -> dict:
    """The cached choices ({key: entry}); an unreadable or foreign file counts as empty."""
    path = path or tuning_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def save_tuning(new: dict, path: Path | None = None) -> None:
    """Merge `new` entries into the cache file, atomically, under a lock."""
    path = path or tuning_file()
    private_dir(path.parent, "tuning cache")
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = load_tuning(path)
        entries.update(new)
        text = json.dumps({"format": CACHE_FORMAT, "entries": dict(sorted(entries.items()))},
                          indent=1)
        atomic_write(path, lambda f: f.write(text.encode() + b"\n"))


def cached_tiles(fused: Graph, batch: int, gpu: str, entries: dict | None = None,
                 precision: str = "fp32", target: Target = H200) -> dict[str, Tile]:
    """The known choice (shipped or cached) of every tunable node of a fused graph that has
    one."""
    entries = known_tuning() if entries is None else entries
    chosen = {}
    for node in fused.nodes:
        if tunable(node, batch):
            entry = entries.get(_entry_key(gpu, layer_signature(fused, node, batch, precision)))
            try:
                tile = tile_from_json(entry["tile"])
            except (KeyError, TypeError, ValueError):     # missing or malformed: not used
                continue
            if tile in candidate_tiles(fused, node, batch, precision, target):   # ours only
                chosen[node.name] = tile
    return chosen


def _rel(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(b).max()), 1e-30))


def autotune(model, batch: int, weights: dict | None = None, force: bool = False,
             log=None, precision: str = "fp32", device: int = 0) -> dict[str, Tile]:
    """Tune every tunable layer of `model` at `batch` not yet in the cache (all of them with
    `force`) on GPU `device`; returns the choice for every tunable node and updates the cache.

    The steps: build one network per round (round r gives every layer its r-th candidate),
    compile the rounds in parallel, run each once against the heuristic's round (round 0) and
    time its kernels, then keep each layer's fastest tile."""
    from .device import device_name, device_target
    from ..weights import check_weights, init_weights
    graph = load_model(model)
    fused = run_passes(graph)
    gpu, target = device_name(device), device_target(device)
    known = {} if force else cached_tiles(fused, batch, gpu, precision=precision, target=target)
    todo = {n.name: candidate_tiles(fused, n, batch, precision, target) for n in fused.nodes
            if tunable(n, batch) and n.name not in known}
    known.update({name: c[0] for name, c in todo.items() if len(c) == 1})   # nothing to time
    todo = {name: c for name, c in todo.items() if len(c) > 1}
    if not todo:
        return known
    weights = check_weights(graph, init_weights(graph, 0) if weights is None else weights, None)
    builds = compile_rounds(candidate_rounds(graph, batch, todo, known, precision, log, target),
                            log, device)
    if 0 not in builds:                  # no heuristic baseline to check against: keep it
        _say(log, "the heuristic build failed; nothing was tuned")
        return {**{name: c[0] for name, c in todo.items()}, **known}
    timings = _time_rounds(builds, todo, weights, precision, log, device)
    chosen, entries = dict(known), {}
    for name, rows in timings.items():
        if not rows:
            continue
        ms, tile = min(rows, key=lambda t: t[0])
        chosen[name] = tile
        entries[_entry_key(gpu, layer_signature(fused, fused[name], batch, precision))] = {
            "tile": tile_to_json(tile), "ms": ms, "heuristic_ms": rows[0][0],
            "candidates": [[m, tile_to_json(t)] for m, t in rows]}
        _say(log, f"{name}: {ms * 1e3:8.2f} us with {tile}, heuristic {rows[0][0] * 1e3:8.2f} us "
                  f"({len(rows)} candidates)")
    save_tuning(entries)
    return chosen


def candidate_rounds(graph: Graph, batch: int, todo: dict[str, list[Tile]],
                     known: dict[str, Tile] | None = None, precision: str = "fp32",
                     log=None, target: Target = H200) -> dict[int, Build]:
    """Round r's build gives each layer of `todo` its r-th candidate (the others keep `known`
    or the heuristic's). A round whose tiles cannot be built is left out."""
    builds = {}
    for r in range(max((len(c) for c in todo.values()), default=0)):
        tiles = {**(known or {}), **{name: c[r] for name, c in todo.items() if r < len(c)}}
        try:
            builds[r] = build(graph, batch, precision=precision, tiles=tiles, target=target)
        except BuildError as exc:        # a candidate CUDA cannot launch: drop the round's new ones
            _say(log, f"round {r}: skipped ({exc})")
    return builds


def compile_rounds(builds: dict[int, Build], log=None, device: int = 0) -> dict[int, Build]:
    """Compile every build with nvcc for GPU `device`, in parallel, into the build cache (so that
    opening its Network later costs nothing); the builds that compiled."""
    from .network import device_arch
    arch = device_arch(device)

    def compile_one(r):
        files = {k: v for k, v in builds[r].output.files.items() if k.endswith((".cu", ".h"))}
        try:
            compile_cubin(files, f"{builds[r].fused.name}.cu", arch)
        except SqueezegenError as exc:
            return r, exc
        return r, None
    done = dict(builds)
    with ThreadPoolExecutor(max(1, min(len(builds), os.cpu_count() or 4))) as pool:
        for r, exc in list(pool.map(compile_one, list(builds))):
            if exc is not None:
                _say(log, f"round {r}: skipped ({exc})")
                del done[r]
    return done


def _time_rounds(builds: dict[int, Build], todo: dict[str, list[Tile]], weights: dict,
                 precision: str, log, device: int = 0) -> dict[str, list[tuple[float, Tile]]]:
    """Each layer's (ms, tile) for every round whose output matches round 0's."""
    from .bench import time_kernels
    from .network import Network
    shape = builds[0].fused.input.type.shape
    x = np.random.default_rng(0).uniform(-1, 1, (builds[0].plan.batch,) + shape).astype(np.float32)
    timings: dict[str, list[tuple[float, Tile]]] = {name: [] for name in todo}
    baseline = None
    for r, result in sorted(builds.items()):
        try:
            with Network(result, weights, device=device) as net:
                out = net(x)
                out = out if isinstance(out, tuple) else (out,)
                if baseline is None:
                    baseline = out
                elif any(_rel(a, b) > MATCH_TOL[precision] for a, b in zip(out, baseline)):
                    _say(log, f"round {r}: output differs from the heuristic build; its tiles "
                              "are not used")
                    continue
                per_kernel = time_kernels(net)
        except SqueezegenError as exc:
            if r == 0:
                raise
            _say(log, f"round {r}: skipped ({exc})")
            continue
        for kernel, row in zip(result.output.kernels, per_kernel):
            name = kernel.node.name
            if name in todo and r < len(todo[name]):
                timings[name].append((row["ms"], todo[name][r]))
    return timings


def _say(log, message: str) -> None:
    if log:
        log(message)
