"""The generated kernels whose threads are independent, run on the host (`host_kernels`: g++,
every thread of every block in order, loads bounds-checked, outputs starting as NaN) against
the NumPy reference on odd shapes: the CPU suite's check of their indexing, for the kernels
that have had no GPU run since they changed (grouped deconvs, dilated max pools, pixel
(un)shuffle, layernorm, channel reductions, per-pixel broadcasts, log softmax) and for a few
that have, as a control."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_close, random_input, random_weights, small_model
import host_kernels
from host_kernels import COMPILER, NotEmulable, host_source, run_on_host
from squeezegen.reference import ReferenceExecutor

pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C++ compiler (g++) on this machine")

CASES = {
    "deconv_depthwise_up": ((6, 7, 5), """
        - {name: a, op: deconv, out: 6, kernel: 4, stride: 2, pad: 1, groups: 6}
        - {name: r, op: relu}"""),
    "deconv_grouped_odd": ((6, 5, 4), """
        - {name: a, op: deconv, out: 9, kernel: [2, 3], stride: [5, 4], pad: [1, 0], output_padding: [3, 2], groups: 3}
        - {name: r, op: batchnorm, relu: true}"""),
    "deconv_fcn_up8": ((4, 3, 2), """
        - {name: r, op: deconv, out: 4, kernel: 16, stride: 8, pad: 4, groups: 4, bias: false}"""),
    "maxpool_dilated_ceil": ((3, 11, 8), """
        - {name: a, op: maxpool, kernel: [2, 3], stride: [3, 2], pad: [1, 1], dilation: [3, 2]}
        - {name: r, op: maxpool, kernel: 3, stride: 1, pad: 1, dilation: 2, ceil_mode: false}"""),
    "pixel_unshuffle_and_back": ((4, 6, 9), """
        - {name: u, op: pixel_unshuffle, factor: 3}
        - {name: c, op: conv, out: 18, kernel: 1, groups: 2}
        - {name: r, op: pixel_shuffle, factor: 3}"""),
    "layernorm_gelu_add": ((6, 3, 7), """
        - {name: c, op: conv, out: 9, kernel: 1, groups: 3}
        - {name: n, op: layernorm, eps: 1.0e-6}
        - {name: g, op: gelu}
        - {name: c2, op: conv, input: input, out: 9, kernel: 3, pad: 2, dilation: 2, groups: 3}
        - {name: r, op: add, inputs: [g, c2]}"""),
    "spatial_attention": ((6, 5, 9), """
        - {name: m, op: reduce_channels, mode: max}
        - {name: s, op: sigmoid}
        - {name: r, op: mul, inputs: [input, s]}"""),
    "channel_mean_gate": ((6, 5, 9), """
        - {name: m, op: reduce_channels, mode: mean}
        - {name: r, op: add, inputs: [m, input]}"""),
    "log_softmax": ((5, 4, 3), """
        - {name: r, op: softmax, log: true}"""),
    "conv_grouped_dilated_control": ((6, 9, 8), """
        - {name: r, op: conv, out: 9, kernel: [3, 2], stride: [2, 1], dilation: [2, 3], pad: [2, 1, 1, 0], groups: 3}"""),
}


def run_mutated(monkeypatch, old: str, new: str, *args):
    """run_on_host with `old` replaced by `new` in the generated CUDA (which must contain it):
    a broken kernel, to show the harness fails it."""
    real = host_kernels.host_source

    def mutated(cu):
        assert old in cu, old
        return real(cu.replace(old, new, 1))
    monkeypatch.setattr(host_kernels, "host_source", mutated)
    return run_on_host(*args)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernels_on_the_host_match_the_reference(case, tmp_path):
    shape, layers = CASES[case]
    g = small_model(shape, layers, "r")
    w = random_weights(g, seed=11)
    x = random_input(g, 3)
    want = ReferenceExecutor(g, w)(x)
    try:
        (got,), stray, _ = run_on_host(g, w, x, tmp_path)
    except NotEmulable as exc:
        pytest.fail(f"{case} is meant to run on the host: {exc}")
    assert stray == 0, f"{stray} loads outside the network's buffers"
    assert not np.isnan(got).any(), "an output element no thread wrote"
    assert_close(got, want, 1e-5, what=case)


def test_a_tensor_core_kernel_is_refused():
    g = small_model((4, 5, 6), "- {name: r, op: conv, out: 8, kernel: 3}", "r")
    from squeezegen.build import build
    cu = build(g, 16, precision="fp16").output.files["t.cu"]
    with pytest.raises(NotEmulable, match="tensor cores"):
        host_source(cu.decode() if isinstance(cu, bytes) else cu)


def test_a_wrong_index_would_be_caught(tmp_path, monkeypatch):
    """The harness can fail: the same depthwise deconv with its tap rows off by one."""
    shape, layers = CASES["deconv_depthwise_up"]
    g = small_model(shape, layers, "r")
    w = random_weights(g, seed=11)
    x = random_input(g, 3)
    (got,), _, _ = run_mutated(monkeypatch, "const int i0 = (oh + PH) % SH",
                               "const int i0 = (oh + PH + 1) % SH", g, w, x, tmp_path)
    want = ReferenceExecutor(g, w)(x)
    assert not np.allclose(got, want, atol=1e-3)


def test_a_store_out_of_bounds_would_be_caught(tmp_path, monkeypatch):
    """The harness can fail on stores too: a pad kernel without its bounds check writes past
    its output, into the guard margin."""
    g = small_model((3, 1, 1), "- {name: r, op: pad, pad: 20, value: 2.0}", "r")
    x = random_input(g, 3)
    with pytest.raises(AssertionError, match="a store outside its buffer"):
        run_mutated(monkeypatch, "if (p >= (long long)N * CO * HO * WO) return;", "",
                    g, {}, x, tmp_path)


def test_groupnorm_with_its_block_reduction_on_the_host(tmp_path):
    """groupnorm's shared-memory tree reduction (fibers meet at each __syncthreads)."""
    g = small_model((6, 9, 7), """
        - {name: n, op: groupnorm, groups: 3}
        - {name: s, op: silu}
        - {name: r, op: groupnorm, groups: 6, affine: false, eps: 0.01}""", "r")
    w = random_weights(g, seed=3)
    x = random_input(g, 3)
    (got,), stray, _ = run_on_host(g, w, x, tmp_path)
    assert stray == 0
    assert_close(got, ReferenceExecutor(g, w)(x), 1e-5)


@pytest.mark.parametrize("model", ["odd", "deconvs"])
def test_every_fp32_candidate_tile_on_the_host(model, tmp_path):
    """Every fp32 tile the autotuner may pick (narrow and wide GEMMs, split-K with its last
    block's sum, fused max pools, the transposed convolution's phases, the matrix-vector
    kernel), on odd shapes at batch 3, as test_autotune's GPU test does on the GPU."""
    from squeezegen import parse_model
    from squeezegen.build import build
    from squeezegen.codegen.schedule import candidate_tiles, tunable
    from squeezegen.passes import run_passes
    from host_kernels import run_build
    from test_autotune import DECONVS, ODD
    g = parse_model(ODD if model == "odd" else DECONVS)
    w, x = random_weights(g, 4), random_input(g, 3)
    want = ReferenceExecutor(g, w)(x)
    fused = run_passes(g)
    todo = {n.name: candidate_tiles(fused, n, 3) for n in fused.nodes if tunable(n, 3)}
    rounds = [{name: c[r] for name, c in todo.items() if r < len(c)}
              for r in range(max(len(c) for c in todo.values()))]

    def check(tiles):
        result = build(g, 3, weights=w, tiles=tiles)
        got, stray, _ = run_build(result, x, tmp_path)
        assert stray == 0, tiles
        for name, a, b in zip(g.outputs, got, want):
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err <= 1e-5, (name, tiles, err)
        return {k.template for k in result.output.kernels}
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:              # g++ and the fibers, two rounds at once
        kinds = set().union(*pool.map(check, rounds))
    expected = {"conv_gemm.cu.j2", "conv_gemm_wide.cu.j2", "linear_gemv.cu.j2"} \
        if model == "odd" else {"deconv.cu.j2"}
    assert expected <= kinds, kinds


def test_a_missing_barrier_would_be_caught(tmp_path, monkeypatch):
    """Threads run in turn up to each barrier: groupnorm without the barrier between writing
    its partial sums and adding them up reads sums not written yet."""
    g = small_model((6, 9, 7), "- {name: r, op: groupnorm, groups: 2}", "r")
    w, x = random_weights(g, seed=3), random_input(g, 2)
    (got,), _, _ = run_mutated(monkeypatch, "partial[tid] = sum;\n    __syncthreads();",
                               "partial[tid] = sum;", g, w, x, tmp_path)
    assert not np.allclose(got, ReferenceExecutor(g, w)(x), atol=1e-3)


def test_random_models_on_the_host():
    """gpu_fuzz's first 30 models (three of them wide: split-K and wide tiles), as
    scripts/host_fuzz.py runs them: generated CUDA on the host against the reference."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from host_fuzz import check
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(check, range(30)))
    bad = [(r["index"], r["error"], r["stray"]) for r in rows if not r["ok"]]
    assert not bad, bad
    assert sum(r["wide"] for r in rows) == 3


def test_a_missing_barrier_in_split_k_would_be_caught(tmp_path, monkeypatch):
    """Split-K's last block reads `last_to_arrive` after a barrier; without it, a thread run
    before thread 0 in its round reads the value thread 0 has not written yet (threads run in
    a shuffled order each round)."""
    from squeezegen import parse_model
    from squeezegen.build import build
    from squeezegen.codegen.schedule import candidate_tiles, tunable
    from squeezegen.passes import run_passes
    from host_kernels import run_build
    from test_autotune import ODD
    g = parse_model(ODD)
    w, x = random_weights(g, 4), random_input(g, 3)
    fused = run_passes(g)
    split = {n.name: t for n in fused.nodes if tunable(n, 3)
             for t in candidate_tiles(fused, n, 3) if getattr(t, "splitk", 1) > 1}
    assert split
    result = build(g, 3, weights=w, tiles=split)
    real = host_kernels.host_source
    old = "last_to_arrive = atomicAdd(counters + tile, 1u) == SPLITK - 1;\n    __syncthreads();"

    def mutated(cu):
        assert old in cu
        return real(cu.replace(old, old.split("\n")[0]))
    monkeypatch.setattr(host_kernels, "host_source", mutated)
    got, _, _ = run_build(result, x, tmp_path)
    want = ReferenceExecutor(g, w)(x)
    assert not all(np.allclose(a, b, atol=1e-3, equal_nan=False) for a, b in zip(got, want))
