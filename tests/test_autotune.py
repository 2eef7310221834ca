"""The autotuner's candidates, signatures and cache (CPU), and its choices on the GPU."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from squeezegen import load_model, parse_model
from squeezegen.build import build
from squeezegen.codegen.schedule import ConvTile, DeconvTile, candidate_tiles, schedule, tunable
from squeezegen.passes import run_passes
from squeezegen.passes.plan_memory import plan_memory
from squeezegen.codegen.schedule import scratch_needs
from squeezegen.reference import ReferenceExecutor
from squeezegen.reference.planned import PlannedExecutor
from squeezegen.runtime import autotune as at
from helpers import random_input, random_weights

ODD = """\
name: odd
input: {shape: [5, 23, 17]}
layers:
  - {name: a, op: conv, out: 70, kernel: [3, 2], stride: [2, 1], pad: [1, 0], relu: true}
  - {name: b, op: conv, out: 3, kernel: 3, pad: 1}
  - {name: c, op: conv, input: a, out: 130, kernel: 1}
  - {name: up, op: deconv, input: b, out: 6, kernel: 4, stride: 2, pad: 1}
  - {name: fc, op: linear, input: c, out: 11}
  - {name: d, op: conv, input: a, out: 64, kernel: 1, relu: true}
  - {name: dp, op: maxpool, kernel: [2, 1], stride: [2, 1], ceil_mode: false}
  - {name: e, op: conv, input: b, out: 9, kernel: 3}
  - {name: ep, op: maxpool, kernel: 2, stride: 2, ceil_mode: false}
  - {name: f, op: conv, input: a, out: 528, kernel: 1}
  - {name: g, op: conv, out: 128, kernel: 1}
output: [up, fc, dp, ep, g]
"""


def rounds(graph, batch):
    fused = run_passes(graph)
    todo = {n.name: candidate_tiles(fused, n, batch) for n in fused.nodes if tunable(n, batch)}
    for r in range(max(len(c) for c in todo.values())):
        yield {name: c[r] for name, c in todo.items() if r < len(c)}


@pytest.mark.parametrize("batch", [1, 9, 40])
def test_candidates_start_with_the_heuristic_and_are_distinct(batch):
    fused = run_passes(parse_model(ODD))
    default = schedule(fused, batch)
    counts = []
    for node in fused.nodes:
        if tunable(node, batch):
            cands = candidate_tiles(fused, node, batch)
            assert cands[0] == default[node.name]
            assert len(cands) == len(set(cands))
            counts.append(len(cands))
    assert sum(c > 1 for c in counts) >= 3, counts


@pytest.mark.parametrize("batch", [1, 9])
def test_every_candidate_round_plans_and_computes_the_same(batch):
    """The planned executor (which poisons split-K scratch) agrees for every round's tiles."""
    g = parse_model(ODD)
    w, x = random_weights(g, 0), random_input(g, batch)
    want = ReferenceExecutor(g, w)(x)
    fused = run_passes(g)
    n = 0
    for tiles in rounds(g, batch):
        sched = schedule(fused, batch, tiles)
        plan = plan_memory(fused, batch, sched, scratch_needs(fused, batch, sched))
        got = PlannedExecutor(fused, plan, w)(x)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        n += 1
    assert n >= 8


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_every_candidate_round_compiles(tmp_path):
    from squeezegen.runtime.compile import compile_cubin
    g = parse_model(ODD)
    for i, tiles in enumerate(rounds(g, 9)):
        out = build(g, 9, tiles=tiles).output
        files = {k: v for k, v in out.files.items() if k.endswith((".cu", ".h"))}
        compile_cubin(files, "odd.cu", "sm_90", cache=tmp_path)
    assert i >= 8


def test_split_k_candidates_leave_no_slice_empty():
    from squeezegen.codegen.schedule import every_slice_has_work
    assert every_slice_has_work(560, 16, 7) and not every_slice_has_work(528, 16, 8)
    fused = run_passes(parse_model(ODD))
    seen_wide_split = False
    for batch in (1, 3):
        for node in fused.nodes:
            if tunable(node, batch) and node.op != "deconv":
                k = fused[node.inputs[0]].type.numel if node.op == "linear" else \
                    fused[node.inputs[0]].type.channels * node.attrs["kernel"][0] * node.attrs["kernel"][1]
                for t in candidate_tiles(fused, node, batch)[1:]:   # [0]: the heuristic's
                    if t.splitk > 1:          # (the narrow tile skips an empty slice safely)
                        steps = -(-k // t.bk)
                        assert (t.splitk - 1) * -(-steps // t.splitk) < steps, (node.name, t)
                        seen_wide_split |= t.wide
    assert seen_wide_split


def test_the_kernel_comment_names_the_tile():
    out = build(parse_model(ODD), 9, tiles={"a": ConvTile(2, 4, splitk=2)}).output
    src = out.files["odd.cu"].decode()
    assert "tile: 64 pixels x 32 channels per block (2x4 per thread), K in slices of 16, split in 2" in src
    assert "output channels per thread" in src          # the deconv's


def test_signature_tells_layers_and_batches_apart():
    fused = run_passes(parse_model(ODD))
    sigs = {at.layer_signature(fused, n, b) for n in fused.nodes if n.op != "input"
            for b in (1, 2)}
    assert len(sigs) == 2 * (len(fused.nodes) - 1)
    node = fused["a"]
    assert at.layer_signature(fused, node, 3) == "conv|5x23x17->70x12x16|bias=True;kernel=(3, 2);pad=(1, 0);stride=(2, 1)|relu||n3"


def test_cache_round_trip_and_bad_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZEGEN_CACHE", str(tmp_path))
    fused = run_passes(parse_model(ODD))
    sig = at.layer_signature(fused, fused["up"], 1)
    tile = candidate_tiles(fused, fused["up"], 1)[1]
    at.save_tuning({at._entry_key("GPU X", sig): {"tile": at.tile_to_json(tile), "ms": 0.1}})
    assert at.cached_tiles(fused, 1, "GPU X") == {"up": tile}
    assert at.cached_tiles(fused, 1, "GPU Y") == {}            # another GPU: not used
    assert at.cached_tiles(fused, 2, "GPU X") == {}            # another batch: not used
    at.tuning_file().write_text("{not json")
    assert at.load_tuning() == {}
    at.tuning_file().write_text(json.dumps({"format": 99, "entries": {}}))
    assert at.load_tuning() == {}
    at.tuning_file().write_text(json.dumps({"format": 1, "entries": {
        at._entry_key("GPU X", sig): {"tile": {"kind": "deconv", "nonsense": 1}}}}))
    assert at.cached_tiles(fused, 1, "GPU X") == {}            # a broken entry is ignored
    for bad in ("8x8", {"kind": "deconv", "cob": 5, "cib": 1}, None):   # 5 does not divide 6
        at.tuning_file().write_text(json.dumps({"format": 1, "entries": {
            at._entry_key("GPU X", sig): {"tile": bad}}}))
        assert at.cached_tiles(fused, 1, "GPU X") == {}, bad   # nor a tile we never offer


@pytest.mark.gpu
def test_tuned_network_matches_the_reference(tmp_path, monkeypatch):
    pytest.importorskip("pycuda")
    import squeezegen
    from squeezegen.runtime.network import GPUError, cuda
    try:
        cuda()
    except GPUError as exc:
        pytest.skip(f"no GPU: {exc}")
    monkeypatch.setenv("SQUEEZEGEN_CACHE", str(tmp_path))
    g = parse_model(ODD)
    w = random_weights(g, 2)
    for batch in (1, 3, 40):
        logged = []
        chosen = at.autotune(g, batch, w, log=logged.append)
        assert set(chosen) == {n.name for n in run_passes(g).nodes if tunable(n, batch)}
        assert any("candidates" in line for line in logged)
        x = random_input(g, batch)
        want = ReferenceExecutor(g, w)(x)
        with squeezegen.compile(g, w, batch=batch, tune=True) as net:   # from the cache now
            got = net(x)
        for a, b in zip(got, want):
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    entries = at.load_tuning()
    assert len(entries) >= 3


def test_tune_without_a_gpu_is_one_clear_line():
    import subprocess
    import sys
    from squeezegen.runtime.network import gpu_available
    if gpu_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "tune", "models/lenet.yaml"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("squeezegen: error:")
    assert "Traceback" not in proc.stderr
