"""tf32 / fp16 builds: the conv and linear GEMMs on tensor cores (WMMA, fp32 accumulation, fp32
storage), and fp16 transposed convolutions on deconv_mma (mma.sync). CPU: the schedule, the
generated code and nvcc. GPU (marker `gpu`): the numbers against
the fp32 NumPy reference, within a tolerance that fits 10-bit mantissas."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from squeezegen import load_model, parse_model
from squeezegen.build import build
from squeezegen.codegen.schedule import (ConvTile, DeconvMmaTile, DeconvTile, candidate_tiles,
                                         deconv_mma_shared_bytes, schedule, shared_bytes, tunable,
                                         uses_tensor_cores)
from squeezegen.errors import BuildError
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from helpers import random_input, random_weights
from random_models import random_model

PRECISIONS = ("tf32", "fp16")
# Whole networks, relative to the output's max magnitude. Measured on the H200 (aed6fbd+): vs the
# fp32 reference at most 9.6e-4 (squeezeseg) and 1.9e-3 (random models); vs the reference whose
# tensor-core operands are rounded the same way, at most 7.1e-4 (squeezeseg: roundings flip
# where earlier layers differ in the last bit, and flips add up over 26 layers) and 1.6e-4.
TOL = {"tf32": 3e-3, "fp16": 3e-3}
ROUNDED_TOL = 1e-3
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gemms_go_to_tensor_cores_and_pooled_convs_do_not(precision):
    out = build("models/lenet.yaml", 2048, precision=precision).output
    templates = {k.name: k.template for k in out.kernels}
    assert templates["ip1_relu"] == "conv_gemm_tc.cu.j2"
    assert templates["ip2"] == "conv_gemm.cu.j2"     # 10 channels: 16 blocks; the fp32 tile splits K
    assert templates["conv1_maxpool"] == "conv_gemm.cu.j2"      # whole windows per thread
    assert out.manifest["precision"] == precision
    src = out.files["lenet.cu"].decode()
    assert f"precision {precision}" in src and "#include <mma.h>" in src
    assert f"on tensor cores ({precision}, fp32 accumulation" in src


def test_fp32_builds_do_not_change():
    src = build("models/squeezeseg.yaml", 1).output.files["squeezeseg.cu"].decode()
    assert "mma.h" not in src and "wmma" not in src


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tensor_core_candidates_fit_shared_memory(precision):
    fused = run_passes(load_model("models/squeezeseg.yaml"))
    for batch in (1, 32):
        for node in fused.nodes:
            if tunable(node, batch) and uses_tensor_cores(node, precision):
                cands = candidate_tiles(fused, node, batch, precision)
                mma = [t for t in cands if isinstance(t, ConvTile) and t.mma]
                assert all(t.mma == precision for t in mma) and len(mma) >= 8
                assert all(shared_bytes(t) <= 48 * 1024 for t in mma)
                assert any(not t.mma for t in cands)       # the fp32 tiles are timed too
    for node in fused.nodes:
        if node.op == "deconv":
            cands = candidate_tiles(fused, node, 32, precision)
            assert any(isinstance(t, DeconvTile) for t in cands)      # the fp32 kernel is timed too
            if precision == "fp16":          # deconv_mma first
                mma = [t for t in cands if isinstance(t, DeconvMmaTile)]
                assert cands[0] == mma[0] and len(mma) >= 3
                (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
                ci = fused[node.inputs[0]].type.channels
                assert all(deconv_mma_shared_bytes(t, ci, (-(-kh // sh), -(-kw // sw))) <= 48 * 1024
                           for t in mma)
            else:                            # the fp32 kernel first, deconv_tc tiles timed too
                assert isinstance(cands[0], DeconvTile)
                assert sum(isinstance(t, ConvTile) and t.mma == precision for t in cands) >= 8


@pytest.mark.parametrize("precision", PRECISIONS)
def test_small_layers_keep_fp32_tiles_that_split_k(precision):
    """Where a tensor-core tile would leave most SMs idle and K is long, the heuristic keeps the
    fp32 tile (which splits K); large layers go to tensor cores."""
    fused = run_passes(load_model("models/squeezeseg.yaml"))
    small = schedule(fused, 1, precision=precision)["score"]         # K = 1000, 13x13 pixels
    assert not small.mma and small.splitk > 1
    big = schedule(fused, 32, precision=precision)
    assert big["conv1"].mma == big["fire4_expand3x3"].mma == big["conv10"].mma == precision


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_tile_the_layer_cannot_run_is_refused(precision):
    g = load_model("models/squeezeseg.yaml")
    other = "tf32" if precision == "fp16" else "fp16"
    for name, tile in [("conv13", ConvTile(1, 1)), ("conv1", DeconvTile(3, 3)),
                       ("conv1", ConvTile(2, 2, mma=other)), ("conv1", ConvTile(2, 2, mma=precision, splitk=2))]:
        with pytest.raises(BuildError, match=f"cannot run a (conv|deconv) layer in a {precision} build"):
            build(g, 2, precision=precision, tiles={name: tile})
    with pytest.raises(BuildError, match="in a fp32 build"):
        build(g, 2, tiles={"conv1": ConvTile(2, 2, mma=precision)})


@pytest.mark.parametrize("precision", PRECISIONS)
def test_deconvs_on_tensor_cores_when_chosen(precision):
    tile = ConvTile(1, 1, bk=16, mma=precision)
    out = build("models/squeezeseg.yaml", 2, precision=precision, tiles={"conv13": tile}).output
    templates = {k.name: k.template for k in out.kernels}
    default = "deconv_mma.cu.j2" if precision == "fp16" else "deconv.cu.j2"
    assert templates["conv13"] == "deconv_tc.cu.j2" and templates["conv12"] == default
    src = out.files["squeezeseg.cu"].decode()
    assert "Transposed convolution on tensor cores" in src


def test_fp16_deconvs_run_deconv_mma():
    """fp16 builds put every deconv on deconv_mma: squeezeseg's conv13 (21 -> 21 channels, 11x11
    stride 4) on 256-pixel rectangles of a 57x57 phase grid, its 21 channels in one 24-wide
    block; the mma helpers are defined once; a tile it cannot run is refused."""
    out = build("models/squeezeseg.yaml", 32, precision="fp16").output
    deconvs = {k.name: k for k in out.kernels if k.node.op == "deconv"}
    assert {k.template for k in deconvs.values()} == {"deconv_mma.cu.j2"}
    conv13 = deconvs["conv13"]
    assert conv13.extra["tile"] == {"r": 4, "c": 64, "bn": 24, "mma": "fp16"}
    assert conv13.grid == (32 * 15 * 1 * 16, 1, 1)       # batch x rectangles x phases
    src = out.files["squeezeseg.cu"].decode()
    assert src.count("static __device__ __forceinline__ void sg_mma_16x8x8") == 1
    assert "mma.sync m16n8k8" in src
    for bad in (DeconvMmaTile(4, 30, 24), DeconvMmaTile(4, 64, 20), DeconvMmaTile(64, 64, 32)):
        with pytest.raises(BuildError, match="cannot run a deconv layer in a fp16 build"):
            build("models/squeezeseg.yaml", 2, precision="fp16", tiles={"conv13": bad})
    with pytest.raises(BuildError, match="cannot run a deconv layer in a tf32 build"):
        build("models/squeezeseg.yaml", 2, precision="tf32", tiles={"conv13": DeconvMmaTile(4, 64, 24)})


def test_small_phases_keep_the_fp32_deconv_but_time_deconv_mma():
    """A deconv whose stride phases are smaller than any 128-pixel rectangle stays on the fp32
    kernel by default; the autotuner still times deconv_mma rectangles for it."""
    g = parse_model("""
name: small
input: {shape: [21, 5, 4]}
layers:
  - {name: up8, op: deconv, out: 21, kernel: 16, stride: 8, pad: 4}
output: up8
""")
    fused = run_passes(g)
    cands = candidate_tiles(fused, fused["up8"], 3, "fp16")
    assert isinstance(cands[0], DeconvTile)                   # phases of 5x4 pixels
    assert sum(isinstance(t, DeconvMmaTile) for t in cands) == 8
    assert build(g, 3, precision="fp16").output.kernels[0].template == "deconv.cu.j2"


def test_deconv_mma_narrows_its_channel_block_to_fit_shared_memory():
    """A 7x7 stride-2 deconv with 64 -> 64 channels: 32 channels of staged weights per block do
    not fit in 48 KB with any rectangle, 16 do; the tile round-trips the tuning cache's JSON and
    the kernel comment says what it is."""
    from squeezegen.runtime.autotune import tile_from_json, tile_to_json
    g = parse_model("""
name: wide
input: {shape: [64, 30, 30]}
layers:
  - {name: up, op: deconv, out: 64, kernel: 7, stride: 2, pad: 3}
output: up
""")
    out = build(g, 4, precision="fp16").output
    (kernel,) = out.kernels
    assert kernel.template == "deconv_mma.cu.j2" and kernel.extra["tile"]["bn"] == 16
    assert kernel.grid[1] == 4                                # 64 channels in blocks of 16
    tile = DeconvMmaTile(kernel.extra["tile"]["r"], kernel.extra["tile"]["c"], 16)
    assert tile_from_json(tile_to_json(tile)) == tile and tile_to_json(tile)["kind"] == "deconv_mma"
    src = out.files["wide.cu"].decode()
    assert f"tile: {tile.r}x{tile.c} pixels of a stride phase x 16 channels per block on tensor cores" in src


@needs_nvcc
@pytest.mark.parametrize("precision", PRECISIONS)
def test_tensor_core_builds_compile(precision, tmp_path):
    """Every candidate round of LeNet and three wide random models (one of squeezeseg) compiles
    with nvcc -Werror; the nvcc runs are parallel, one per core."""
    import os
    from concurrent.futures import ThreadPoolExecutor
    from squeezegen.runtime.compile import compile_cubin
    models = [load_model("models/squeezeseg.yaml"), load_model("models/lenet.yaml")]
    models += [parse_model(random_model(52000 + s, wide=True)) for s in range(3)]
    builds = []
    for g in models:
        fused = run_passes(g)
        todo = {n.name: candidate_tiles(fused, n, 16, precision) for n in fused.nodes
                if tunable(n, 16)}
        rounds = 1 if g.name == "squeezeseg" else max(len(c) for c in todo.values())
        for r in range(rounds):                  # one round of the big one is enough here
            out = build(g, 16, precision=precision,
                        tiles={k: c[r] for k, c in todo.items() if r < len(c)}).output
            builds.append((g.name, {k: v for k, v in out.files.items() if k.endswith((".cu", ".h"))}))
    assert len(builds) > len(models)
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(lambda b: compile_cubin(b[1], f"{b[0]}.cu", "sm_90", cache=tmp_path), builds))


# ----------------------------------------------------------------------------------- GPU
def _gpu():
    from squeezegen.runtime.network import GPUError, cuda    # a broken runtime fails, never skips
    try:
        cuda()
    except GPUError as exc:                       # no driver, no PyCUDA or no GPU
        pytest.skip(f"no GPU: {exc}")


def _rel(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def _tf32(a: np.ndarray) -> np.ndarray:
    """Round float32 to tf32 as the kernels do (cvt.rna: to nearest, ties away from zero)."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


ROUND = {"tf32": _tf32, "fp16": lambda a: np.asarray(a, np.float32).astype(np.float16).astype(np.float32)}


def tensor_core_kernels(result, precision) -> list[str]:
    """The kernels of a build that run on tensor cores at `precision`, as its manifest says."""
    return [k["name"] for k in result.output.manifest["kernels"]
            if (k["tile"] or {}).get("mma") == precision]


def rounded_reference(result, weights, x, precision):
    """The fp32 reference of the build's graph with the operands and weights of exactly its
    tensor-core kernels rounded to `precision` first (then only summation order differs)."""
    rnd = ROUND[precision]
    rounded = {k.node.name: rnd for k in result.output.kernels if k.extra.get("mma")}
    return ReferenceExecutor(result.fused, weights, rounded=rounded)(x)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model, batch", [("lenet", 2048), ("squeezeseg", 1), ("squeezeseg", 3)])
def test_tensor_core_networks_match_the_reference(model, batch, precision):
    """What ran is read from the manifest; that it ran at `precision` is shown by the output
    being ROUNDED_TOL-close to the reference with that rounding, and closer to it than to the
    fp32 reference (lenet: 9.2e-5 against 7.2e-4; squeezeseg: 4.2e-4 to 7.1e-4 against 7.4e-4 to
    9.6e-4, measured)."""
    _gpu()
    import squeezegen
    g = load_model(f"models/{model}.yaml")
    w = random_weights(g, 7)
    x = np.random.default_rng(batch).uniform(-1, 1, (batch,) + g.input.type.shape)
    x = x.astype(np.float32)
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=batch, precision=precision) as net:
        got = net(x)
        result = net.build
    assert tensor_core_kernels(result, precision), "no kernel ran on tensor cores"
    err = _rel(got, rounded_reference(result, w, x, precision))
    err_fp32 = _rel(got, want)
    print(f"{model} batch {batch} {precision}: {err:.2e} vs the rounded reference, "
          f"{err_fp32:.2e} vs fp32 ({len(tensor_core_kernels(result, precision))} tensor-core kernels)")
    assert err <= ROUNDED_TOL
    assert err_fp32 <= TOL[precision]
    assert err < err_fp32                        # it rounded like `precision` does


@pytest.mark.gpu
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("seed", range(8))
def test_tensor_core_random_models(seed, precision):
    _gpu()
    import squeezegen
    g = parse_model(random_model(53000 + seed, wide=seed % 2 == 0))
    w = random_weights(g, seed)
    x = random_input(g, 1 + seed % 3)
    want = ReferenceExecutor(g, w)(x)
    want = want if isinstance(want, tuple) else (want,)
    with squeezegen.compile(g, w, batch=x.shape[0], precision=precision) as net:
        got = net(x)
        rounded = rounded_reference(net.build, w, x, precision)
    got = got if isinstance(got, tuple) else (got,)
    rounded = rounded if isinstance(rounded, tuple) else (rounded,)
    for a, b, r in zip(got, want, rounded):
        print(f"seed {seed} {precision}: {_rel(a, r):.2e} vs the rounded reference, "
              f"{_rel(a, b):.2e} vs fp32")
        assert _rel(a, b) <= TOL[precision]
        assert _rel(a, r) <= ROUNDED_TOL
