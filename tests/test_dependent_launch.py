"""Programmatic dependent launch (Hopper): every kernel after the first may start while the one
before it finishes, and waits for it in its first instruction. A kernel that read or overwrote
memory before that wait would race with its predecessor; the results would then differ from
serial launches now and then. Our kernels are deterministic (split-K sums in a fixed order), so
dependent and serial launches must agree bit for bit, run after run. (Dependent launch is opt-in,
`compile(..., dependent_launch=True)`, which warns: on an H100 at 91a21f5 the wide random models
below were not bitwise equal to serial launches.)"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import squeezegen
from squeezegen import load_model, parse_model
from squeezegen.reference import ReferenceExecutor
from helpers import needs_gpu, random_input, random_weights
from random_models import random_model

RUNS = 30


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_c_api_compiles_with_and_without_dependent_launch(tmp_path):
    """The C API launches with <<<>>> by default; -DSG_DEPENDENT_LAUNCH=1 compiles the
    cudaLaunchKernelEx path, and every kernel starts with the griddepcontrol pair for sm_90."""
    from squeezegen.build import build
    from test_codegen import nvcc
    build("models/squeezeseg.yaml", 3, write=tmp_path)
    cu = tmp_path / "squeezeseg" / "squeezeseg.cu"
    text = cu.read_text()
    assert text.count("griddepcontrol.wait;") == text.count("__global__ void") == 36
    for flags in ([], ["-DSG_DEPENDENT_LAUNCH=1"]):
        nvcc("-c", *flags, str(cu), "-o", str(tmp_path / f"s{len(flags)}.o"))


def _agree_bitwise(net, x, runs: int = RUNS) -> np.ndarray:
    """Serial launches once, then `runs` dependent ones (replayed CUDA graph): all equal."""
    net.set_dependent_launch(False)
    serial = net(x)
    net.set_dependent_launch(True)
    if not net.dependent_launch:
        pytest.skip("this GPU (or its driver) has no programmatic dependent launch (sm_90+)")
    for run in range(runs):
        got = net(x)
        assert np.array_equal(got, serial), f"run {run}: dependent launch differs from serial"
    return serial


@needs_gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_squeezeseg_dependent_launch_is_bitwise_serial(batch):
    g = load_model("models/squeezeseg.yaml")
    w = random_weights(g, 3)
    x = np.random.default_rng(batch).uniform(-128, 128, (batch,) + g.input.type.shape)
    x = x.astype(np.float32)
    with squeezegen.compile(g, w, batch=batch, dependent_launch=True) as net:
        y = _agree_bitwise(net, x)
    want = ReferenceExecutor(g, w)(x)
    assert np.abs(y - want).max() / np.abs(want).max() < 1e-4


@needs_gpu
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_wide_models_dependent_launch_is_bitwise_serial(seed):
    """Wide random models: split-K tiles (counters and partials in the arena) and the wide
    tile, kernels of every op."""
    g = parse_model(random_model(seed, wide=True))
    w = random_weights(g, seed)
    x = random_input(g, 3, seed)
    with squeezegen.compile(g, w, batch=3, dependent_launch=True) as net:
        _agree_bitwise(net, x, runs=10)


@needs_gpu
def test_run_on_device_pointers_with_dependent_launch():
    """`net.run` on device buffers (launched directly, not through the CUDA graph): the same
    output as `net(x)`, bit for bit, and as a network that launches through PyCUDA."""
    from squeezegen.runtime.network import cuda
    g = load_model("models/lenet.yaml")
    w = random_weights(g, 5)
    with squeezegen.compile(g, w, batch=1, dependent_launch=True) as net, \
            net.active():
        drv = cuda()
        x = random_input(g, 1, 9)
        want = net(x)
        with squeezegen.compile(g, w, batch=1) as plain:
            assert not plain.dependent_launch
            assert np.array_equal(plain(x), want)
        d_in = drv.mem_alloc(x.nbytes)
        d_out = drv.mem_alloc(4 * 10)
        try:
            drv.memcpy_htod(d_in, x)
            net.run(d_in, d_out, net.stream)
            got = np.empty((1, 10, 1, 1), np.float32)
            drv.memcpy_dtoh_async(got, d_out, net.stream)
            net.stream.synchronize()
            assert np.array_equal(got.reshape(want.shape), want)
        finally:
            d_in.free()
            d_out.free()
