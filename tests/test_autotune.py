"""The autotuner's candidates, signatures and cache (CPU), and its choices on the GPU."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from squeezegen import load_model, parse_model
from squeezegen.build import build
from squeezegen.codegen.target import Target
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
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)     # a tile changes the plan, not the numbers
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
    assert "output channels x 1 pixel per thread" in src          # the deconv's
    out = build(parse_model(ODD), 9, tiles={"up": DeconvTile(3, 5, px=4)}).output
    assert "// tile: 3 output channels x 4 pixels per thread, 5 input channels" in \
        out.files["odd.cu"].decode()


def test_signature_tells_layers_and_batches_apart():
    fused = run_passes(parse_model(ODD))
    sigs = {at.layer_signature(fused, n, b) for n in fused.nodes if n.op != "input"
            for b in (1, 2)}
    assert len(sigs) == 2 * (len(fused.nodes) - 1)
    node = fused["a"]
    assert at.layer_signature(fused, node, 3) == "conv|5x23x17->70x12x16|bias=True;kernel=(3, 2);out=70;pad=(1, 0);stride=(2, 1)|relu||n3"
    assert at.layer_signature(fused, node, 3, "fp16") == at.layer_signature(fused, node, 3) + "|fp16"
    pooled = fused["d"]               # fp32 tiles only: one entry serves every precision
    assert "pool=(2, 1)" in at.layer_signature(fused, pooled, 3)
    assert at.layer_signature(fused, pooled, 3, "fp16") == at.layer_signature(fused, pooled, 3)


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


def test_shipped_database_is_used_and_the_cache_wins(tmp_path, monkeypatch):
    """The package's tuning database counts as cached, for its GPU and kernel digest only; the
    user's cache overrides it; scripts/ship_tuning.py keeps a GPU's current entries."""
    import importlib.util
    monkeypatch.setenv("SQUEEZEGEN_CACHE", str(tmp_path / "cache"))
    shipped = tmp_path / "shipped.json"
    monkeypatch.setattr(at, "shipped_tuning_file", lambda: shipped)
    fused = run_passes(parse_model(ODD))
    sig = at.layer_signature(fused, fused["up"], 1)
    first, second = candidate_tiles(fused, fused["up"], 1)[1:3]
    stale = f"GPU X|kernels 000000000000|{sig}"
    shipped.write_text(json.dumps({"format": 1, "entries": {
        at._entry_key("GPU X", sig): {"tile": at.tile_to_json(first)},
        stale: {"tile": at.tile_to_json(second)}}}))
    assert at.cached_tiles(fused, 1, "GPU X") == {"up": first}
    assert at.cached_tiles(fused, 1, "GPU Y") == {}
    at.save_tuning({at._entry_key("GPU X", sig): {"tile": at.tile_to_json(second)}})
    assert at.cached_tiles(fused, 1, "GPU X") == {"up": second}     # the user's timing wins
    spec = importlib.util.spec_from_file_location("ship_tuning", "scripts/ship_tuning.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    monkeypatch.setattr(ship, "shipped_tuning_file", lambda: shipped)
    assert ship.main(["--gpu", "GPU X"]) == 0
    entries = json.loads(shipped.read_text())["entries"]
    assert list(entries) == [at._entry_key("GPU X", sig)] and \
        entries[at._entry_key("GPU X", sig)]["tile"] == at.tile_to_json(second)   # stale dropped


def test_the_package_ships_a_readable_tuning_database():
    data = json.loads(at.shipped_tuning_file().read_text())
    assert data["format"] == at.CACHE_FORMAT and isinstance(data["entries"], dict)
    for key, entry in data["entries"].items():          # keyed and shaped like the cache
        gpu, digest, _ = key.split("|", 2)
        assert gpu and digest.startswith("kernels ") and at.tile_from_json(entry["tile"])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_digest_covers_every_template_a_tuned_kernel_runs(precision):
    """A tuned choice is keyed by the code it ran (`kernel_sources`): every template of a
    tunable node's kernel and the shared ones are in it; the kernels no tile runs (softmax,
    pools, copies, the host code) are not, so changing them keeps the choices."""
    import sys
    sys.path.insert(0, "tests")
    from random_models import random_model
    names = {p.name for p in at.kernel_sources()}
    assert {"_macros.cu.j2", "_mma.cu.j2", "gemm.py", "deconv.py", "activation.py"} <= names
    assert not {"softmax.cu.j2", "network.cu.j2", "pool.cu.j2", "softmax.py"} & names
    graphs = [load_model("models/squeezeseg.yaml"), load_model("models/lenet.yaml")]
    graphs += [parse_model(random_model(seed)) for seed in range(12)]
    seen = set()
    for g in graphs:                  # every candidate tile of every tunable layer, built
        fused = run_passes(g)
        todo = {n.name: candidate_tiles(fused, n, 3, precision) for n in fused.nodes
                if tunable(n, 3)}
        for result in at.candidate_rounds(g, 3, todo, precision=precision).values():
            for k in result.output.kernels:
                if k.node.name in todo:
                    assert k.template in names, (g.name, k.name, k.template)
                    seen.add(k.template)
    assert {"conv_gemm.cu.j2", "conv_gemm_wide.cu.j2", "deconv.cu.j2"} <= seen
    if precision == "fp16":
        assert {"conv_gemm_tc.cu.j2", "deconv_mma.cu.j2"} <= seen


@pytest.mark.parametrize("gpu", ["NVIDIA H100 80GB HBM3", "NVIDIA H200"])
def test_the_shipped_database_tunes_squeezeseg_without_timing_anything(gpu):
    """The package's choices for the H100 and the H200 (each timed there,
    scripts/ship_tuning.py) cover every layer of squeezeseg that has a choice, fp32 at batch
    1/32/128 and fp16 at 1/32, at the current kernels' digest: `compile(..., tune=True)` on a
    fresh H100 or H200 times nothing. A change to the kernels makes them stale: tune again on
    that GPU and ship (or re-key, where scripts/candidate_code.py shows the candidates' code
    unchanged), or say so here and in the README."""
    fused = run_passes(load_model("models/squeezeseg.yaml"))
    target = Target(gpu, "sm_90", 132)
    shipped = at.load_tuning(at.shipped_tuning_file())
    for precision, batches in (("fp32", (1, 32, 128)), ("fp16", (1, 32))):
        for batch in batches:
            choices = {n.name for n in fused.nodes if tunable(n, batch)
                       and len(candidate_tiles(fused, n, batch, precision, target)) > 1}
            known = at.cached_tiles(fused, batch, target.name, shipped, precision, target)
            assert choices and choices <= set(known), (precision, batch, choices - set(known))


DECONVS = """\
name: deconvs
input: {shape: [21, 5, 4]}
layers:
  - {name: up8, op: deconv, out: 21, kernel: 16, stride: 8, pad: 4, bias: false}
  - {name: up2, op: deconv, input: input, out: 10, kernel: [3, 4], stride: [2, 3], pad: [1, 0]}
  - {name: c, op: conv, input: up2, out: 40, kernel: 3, stride: [2, 1], pad: 1, relu: true}
  - {name: gap, op: avgpool, input: input, global: true}
  - {name: tiny, op: deconv, out: 5, kernel: 3, stride: 4}
  - {name: sparse, op: deconv, input: input, out: 6, kernel: [2, 7], stride: [3, 2], pad: [0, 3]}
  - {name: wide, op: deconv, input: c, out: 37, kernel: [4, 3], stride: [2, 3], pad: [1, 2]}
  - {name: wide_relu, op: relu, input: wide}
output: [up8, c, tiny, sparse, wide_relu]
"""

TOL = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3}   # as the tuner's own MATCH_TOL


def gpu_or_skip():
    pytest.importorskip("pycuda")
    from squeezegen.runtime.network import GPUError, cuda
    try:
        cuda()
    except GPUError as exc:
        pytest.skip(f"no GPU: {exc}")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
@pytest.mark.parametrize("model", ["odd", "deconvs"])
def test_every_candidate_tile_computes_the_reference(model, precision):
    """Every tile the autotuner may pick, on odd shapes at batch 3: a wrong tile must fail here,
    not be quietly rejected by the tuner's output check."""
    gpu_or_skip()
    from squeezegen.runtime.network import Network
    g = parse_model(ODD if model == "odd" else DECONVS)
    w, x = random_weights(g, 4), random_input(g, 3)
    want = ReferenceExecutor(g, w)(x)
    fused = run_passes(g)
    todo = {n.name: candidate_tiles(fused, n, 3, precision) for n in fused.nodes if tunable(n, 3)}
    builds = at.candidate_rounds(g, 3, todo, precision=precision)
    assert len(at.compile_rounds(builds)) == len(builds) == max(len(c) for c in todo.values())
    for r, result in builds.items():
        with Network(result, w) as net:
            got = net(x)
        for name, a, b in zip(g.outputs, got, want):
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err <= TOL[precision], (r, name, {k: c[r] for k, c in todo.items() if r < len(c)}, err)


@pytest.mark.gpu
def test_tuned_network_matches_the_reference(tmp_path, monkeypatch):
    gpu_or_skip()
    import squeezegen
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
            assert {k: net.build.plan.tiles[k] for k in chosen} == chosen
        for a, b in zip(got, want, strict=True):
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


class _FakeGPU:
    """Stands in for the GPU so the autotuner's bookkeeping runs on the CPU: networks compute
    with the planned NumPy executor, kernels 'take' a time that depends only on their tile, and
    chosen rounds can be made to fail to compile or to compute something else."""

    def __init__(self, monkeypatch, broken_compile=(), wrong_output=()):
        import squeezegen.runtime.bench as bench_mod
        import squeezegen.runtime.device as device_mod
        import squeezegen.runtime.network as net_mod
        self.rounds_run = []
        fake = self

        class Network:
            def __init__(self, result, weights, use_graph=True, device=0):
                fake.rounds_run.append(result)
                self.result, self.weights = result, weights

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def __call__(self, x):
                plan = self.result.plan
                out = PlannedExecutor(self.result.fused, plan, self.weights)(x)
                out = out if isinstance(out, tuple) else (out,)
                tiles = set(map(str, plan.tiles.values()))
                if any(str(t) in tiles for t in wrong_output):
                    out = tuple(o + 1.0 for o in out)
                return out

        def time_kernels(net):
            rows = []
            for k in net.result.output.kernels:
                t = net.result.plan.tiles.get(k.node.name)
                ms = 1.0 if t is None else (1.0 + 0.1 * (getattr(t, "tm", 0) != 2)
                                            + 0.001 * (len(str(t)) % 7))
                rows.append({"ms": ms})
            return rows

        def compile_cubin(files, source, arch, cache=None, extra_flags=()):
            text = b"".join(files.values()).decode()
            for marker in broken_compile:
                if marker in text:
                    raise at.BuildError(f"nvcc failed on {source}: fake error")
            return b""

        monkeypatch.setattr(device_mod, "device_name", lambda device=0: "Fake GPU")
        monkeypatch.setattr(device_mod, "device_target",
                            lambda device=0: Target("Fake GPU", "sm_90", 132))
        monkeypatch.setattr(net_mod, "device_arch", lambda device=0: "sm_90")
        monkeypatch.setattr(net_mod, "Network", Network)
        monkeypatch.setattr(bench_mod, "time_kernels", time_kernels)
        monkeypatch.setattr(at, "compile_cubin", compile_cubin)


def test_autotune_bookkeeping_on_a_fake_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZEGEN_CACHE", str(tmp_path))
    g = parse_model(ODD)
    fused = run_passes(g)
    cands = {n.name: candidate_tiles(fused, n, 9) for n in fused.nodes if tunable(n, 9)}
    wrong = cands["c"][1]                   # round 1 computes something else: never chosen
    fake = _FakeGPU(monkeypatch, wrong_output=[wrong])
    logged = []
    chosen = at.autotune(g, 9, random_weights(g, 0), log=logged.append)
    assert set(chosen) == set(cands)
    assert any("round 1: output differs" in line for line in logged)
    assert all(chosen[name] != c[1] for name, c in cands.items() if len(c) > 1)
    for name, c in cands.items():                               # the fake prefers tm == 2
        ok = [t for i, t in enumerate(c) if i != 1]
        if any(getattr(t, "tm", 0) == 2 for t in ok):
            assert getattr(chosen[name], "tm", 0) == 2, name
    assert len(fake.rounds_run) == max(len(c) for c in cands.values())
    again = at.autotune(g, 9, random_weights(g, 0))             # all cached now: no rounds run
    assert again == chosen and len(fake.rounds_run) == max(len(c) for c in cands.values())


def test_autotune_skips_rounds_that_do_not_compile(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZEGEN_CACHE", str(tmp_path))
    g = parse_model(ODD)
    _FakeGPU(monkeypatch, broken_compile=["split in 2"])        # every split-K-by-2 round
    logged = []
    chosen = at.autotune(g, 9, random_weights(g, 0), log=logged.append)
    assert any("skipped (nvcc failed" in line for line in logged)
    assert all(getattr(t, "splitk", 1) != 2 for t in chosen.values())


def test_autotune_keeps_the_heuristic_when_its_build_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZEGEN_CACHE", str(tmp_path))
    g = parse_model(ODD)
    _FakeGPU(monkeypatch, broken_compile=["extern"])            # every round
    logged = []
    chosen = at.autotune(g, 9, random_weights(g, 0), log=logged.append)
    fused = run_passes(g)
    assert chosen == schedule(fused, 9)
    assert "nothing was tuned" in logged[-1]
    assert at.load_tuning() == {}
