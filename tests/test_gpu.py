"""The generated CUDA on a real GPU against the NumPy reference and PyTorch on the same GPU.

Marker `gpu`: skipped, with the reason, where PyCUDA or a GPU is missing. Tolerance: max abs
error relative to the output's max magnitude <= 1e-4 (fp32).
    source .device/env.sh && python3 -m pytest -m gpu -q
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import squeezegen
from squeezegen import load_model, parse_model
from squeezegen.errors import InputError
from squeezegen.reference import ReferenceExecutor
from helpers import random_input, random_weights, torch_module
from random_models import random_model
from test_codegen import TEMPLATE_TOUR

TOL = 1e-4           # whole and random models (the 1000-model GPU fuzz peaks at 2.1e-5)
OP_TOL = 5e-6        # one op on odd shapes (measured on the H200: at most 4.7e-7)


def _gpu_reason():
    from squeezegen.runtime.network import GPUError, cuda    # a broken runtime fails, never skips
    try:
        cuda()
    except GPUError as exc:
        return str(exc)
    return None


REASON = _gpu_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"no GPU: {REASON}")]


def rel_err(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def outputs(y):
    return y if isinstance(y, tuple) else (y,)


def torch_gpu(graph, weights, x):
    torch = pytest.importorskip("torch")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    module = torch_module(graph, weights)
    module.params = {k: v.cuda() for k, v in module.params.items()}
    with torch.no_grad():
        y = module(torch.from_numpy(x).cuda())
    return tuple(t.cpu().numpy() for t in outputs(y))


def compare(graph, weights, x, against_torch=False, tol=TOL):
    want = outputs(ReferenceExecutor(graph, weights)(x))
    with squeezegen.compile(graph, weights, batch=x.shape[0]) as net:
        got = outputs(net(x))
        again = outputs(net(x))                                   # graph replay is repeatable
    for g, w, a in zip(got, want, again, strict=True):
        assert g.shape == w.shape
        assert rel_err(g, w) <= tol, f"vs reference: {rel_err(g, w):.2e}"
        np.testing.assert_array_equal(g, a)
    if against_torch:
        for g, t in zip(got, torch_gpu(graph, weights, x), strict=True):
            assert rel_err(g, t) <= tol, f"vs torch: {rel_err(g, t):.2e}"
    return got


OP_CASES = {
    "conv_odd": ("[3, 13, 10]", "  - {name: out, op: conv, out: 5, kernel: [3, 2], stride: [2, 3], pad: [1, 0]}"),
    "conv_stride_gt_kernel": ("[4, 17, 9]", "  - {name: out, op: conv, out: 7, kernel: 2, stride: 3, relu: true}"),
    "conv_1x1_nobias": ("[9, 5, 7]", "  - {name: out, op: conv, out: 21, kernel: 1, bias: false}"),
    "deconv_s4_k11": ("[21, 5, 4]", "  - {name: out, op: deconv, out: 21, kernel: 11, stride: 4, bias: false}"),
    "deconv_output_padding": ("[5, 7, 6]", "  - {name: out, op: deconv, out: 6, kernel: 3, stride: 2, pad: 1, output_padding: [1, 0]}"),
    "deconv_pad_nonsquare": ("[3, 6, 5]", "  - {name: out, op: deconv, out: 4, kernel: [3, 4], stride: [2, 3], pad: [1, 1]}"),
    "deconv_stride_gt_kernel": ("[2, 4, 3]", "  - {name: out, op: deconv, out: 3, kernel: 2, stride: 3}"),
    "maxpool_ceil_edge": ("[3, 8, 11]", "  - {name: out, op: maxpool, kernel: 3, stride: 2, pad: 1}"),
    "maxpool_floor": ("[2, 9, 7]", "  - {name: out, op: maxpool, kernel: [2, 3], stride: [2, 2], ceil_mode: false}"),
    "avgpool_ceil_pad": ("[3, 10, 7]", "  - {name: out, op: avgpool, kernel: 3, stride: 2, pad: 1}"),
    "avgpool_global": ("[6, 7, 5]", "  - {name: out, op: avgpool, global: true}"),
    "fire": ("[5, 9, 6]", "  - {name: out, op: fire, squeeze: 3, expand1x1: 4, expand3x3: 5}"),
    "linear_softmax": ("[3, 5, 4]", "  - {name: fc, op: linear, out: 7}\n  - {name: out, op: softmax}"),
    "softmax_image": ("[5, 3, 4]", "  - {name: out, op: softmax}"),
    "log_softmax_image": ("[5, 3, 4]", "  - {name: c, op: conv, out: 9, kernel: 1}\n"
                          "  - {name: out, op: softmax, log: true}"),
    "linear_log_softmax": ("[3, 5, 4]", "  - {name: fc, op: linear, out: 7}\n"
                           "  - {name: out, op: softmax, log: true}"),
    "groupnorm_relu": ("[6, 9, 7]", "  - {name: c, op: conv, out: 6, kernel: 3, pad: 1}\n"
                       "  - {name: gn, op: groupnorm, groups: 3}\n  - {name: out, op: relu}"),
    "instancenorm_odd": ("[5, 1, 13]", "  - {name: out, op: groupnorm, groups: 5, affine: false}"),
    "layernorm_big": ("[4, 40, 33]", "  - {name: out, op: groupnorm, groups: 1, eps: 0.001}"),
    "layernorm_channels_gelu": ("[3, 7, 5]", "  - {name: c, op: conv, out: 96, kernel: 2, stride: 2}\n"
                                "  - {name: ln, op: layernorm, eps: 1.0e-6}\n  - {name: out, op: gelu}"),
    "layernorm_channels_plain": ("[5, 1, 13]", "  - {name: out, op: layernorm, affine: false}"),
    "spatial_attention": ("[7, 6, 5]", "  - {name: m, op: reduce_channels, mode: mean}\n"
                          "  - {name: s, op: sigmoid}\n  - {name: out, op: mul, inputs: [input, s]}"),
    "reduce_channels_max": ("[9, 4, 11]", "  - {name: out, op: reduce_channels, mode: max}"),
    "l2_normalize": ("[9, 4, 11]", "  - {name: n, op: reduce_channels, mode: l2}\n"
                     "  - {name: e, op: clip, min: 1.0e-12}\n"
                     "  - {name: out, op: div, inputs: [input, e]}"),
    "div_per_channel": ("[6, 5, 7]", "  - {name: g, op: avgpool, global: true}\n"
                        "  - {name: s, op: sigmoid}\n  - {name: out, op: div, inputs: [s, input]}"),
    "add3_relu": ("[3, 6, 5]", "  - {name: a, op: conv, out: 3, kernel: 1}\n  - {name: b, op: maxpool, input: input, kernel: 1}\n"
                               "  - {name: out, op: add, inputs: [a, b, input], relu: true}"),
    "concat_copy": ("[2, 5, 5]", "  - {name: p, op: maxpool, kernel: 3, stride: 1, pad: 1}\n"
                                 "  - {name: out, op: concat, inputs: [input, p]}"),
    "conv_pool_floor": ("[3, 13, 10]", "  - {name: c, op: conv, out: 5, kernel: [3, 2]}\n"
                        "  - {name: out, op: maxpool, kernel: 2, stride: 2, ceil_mode: false}"),
    "conv_relu_pool_2x1": ("[4, 9, 7]", "  - {name: c, op: conv, out: 70, kernel: 3, pad: 1, relu: true}\n"
                           "  - {name: out, op: maxpool, kernel: [2, 1], stride: [2, 1], ceil_mode: false}"),
    "conv_pool_splitk": ("[40, 6, 6]", "  - {name: c, op: conv, out: 3, kernel: 3, pad: 1, bias: false}\n"
                         "  - {name: out, op: maxpool, kernel: 2, stride: 2}"),
    "relu_alone": ("[2, 3, 3]", "  - {name: p, op: avgpool, kernel: 1}\n  - {name: out, op: relu}"),
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_on_odd_shapes(case, batch):
    shape, layers = OP_CASES[case]
    g = parse_model(f"name: t\ninput: {{shape: {shape}}}\nlayers:\n{layers}\noutput: out\n")
    w = random_weights(g, 0)
    compare(g, w, random_input(g, batch), against_torch=True, tol=OP_TOL)


def test_template_tour_batch3():
    g = parse_model(TEMPLATE_TOUR, "tour.yaml")
    compare(g, random_weights(g, 1), random_input(g, 3), against_torch=True)


@pytest.mark.parametrize("seed", range(40))
def test_random_models(seed):
    g = parse_model(random_model(5000 + seed))
    compare(g, random_weights(g, seed), random_input(g, 1 + seed % 3), against_torch=seed < 10)


@pytest.mark.parametrize("batch", [1, 3, 32])
@pytest.mark.parametrize("model", ["lenet", "squeezeseg"])
def test_shipped_models(model, batch):
    g = load_model(f"models/{model}.yaml")
    w = random_weights(g, 7)
    x = np.random.default_rng(batch).uniform(-128, 128, (batch,) + g.input.type.shape)
    compare(g, w, x.astype(np.float32), against_torch=True)


def test_table3_pixel_mean(capsys):
    """The paper's Table 3 check: the mean output pixel of squeezeseg from three executors."""
    pytest.importorskip("torch")
    import sys
    sys.path.insert(0, "benchmarks")
    from table3 import pixel_means
    means = pixel_means()
    with capsys.disabled():
        print("\nTable 3 analogue (mean of all output pixels, seed 0):",
              ", ".join(f"{k} {v:.6f}" for k, v in means.items()))
    ref = means["numpy reference"]
    assert abs(means["squeezegen cuda"] - ref) <= 1e-6 * abs(ref)   # measured: 1.7e-9 absolute
    assert abs(means["pytorch cuda"] - ref) <= 1e-6 * abs(ref)


# Tests that read (or take) the whole GPU's free memory: other xdist workers allocate at the same
# time, so they run only in a serial session (pytest -m gpu tests/test_gpu.py -k "frees or leaks").
alone_on_the_gpu = pytest.mark.skipif(
    bool(os.environ.get("PYTEST_XDIST_WORKER")),
    reason="reads the whole GPU's free memory, which other xdist workers change at the same "
           "time: run it alone (pytest -m gpu tests/test_gpu.py -k 'frees or leaks')")


@alone_on_the_gpu
def test_network_survives_bad_calls_and_frees_memory():
    from squeezegen.runtime.network import cuda
    drv = cuda()
    g = load_model("models/lenet.yaml")
    w = random_weights(g, 0)
    x = random_input(g, 2)
    big = load_model("models/squeezeseg.yaml")
    free_before = drv.mem_get_info()[0]
    with squeezegen.compile(big, random_weights(big, 0), batch=32) as large:  # >= 100 MB
        footprint = large.build.plan.arena_bytes
        assert free_before - drv.mem_get_info()[0] >= footprint
    assert drv.mem_get_info()[0] >= free_before - (2 << 20)   # all of it back, not just most
    net = squeezegen.compile(g, w, batch=2)
    good = net(x)
    with pytest.raises(InputError, match="larger than this network's batch"):
        net(random_input(g, 3))
    with pytest.raises(InputError, match="dtype float64"):
        net(x.astype(np.float64))
    with pytest.raises(InputError, match="shape"):
        net(x[:, :, :5])
    np.testing.assert_array_equal(net(x), good)
    np.testing.assert_array_equal(net(x[:1]), good[:1])     # a smaller batch is fine
    net.close()
    assert drv.mem_get_info()[0] >= free_before - (2 << 20)


@alone_on_the_gpu
def test_out_of_memory_is_reported_and_nothing_leaks():
    from squeezegen.runtime.network import GPUError, cuda
    drv = cuda()
    free, _ = drv.mem_get_info()
    hog = drv.mem_alloc(free - (2 << 30))                  # leave 2 GiB free
    try:
        g = parse_model("name: big\ninput: {shape: [64, 256, 256]}\nlayers:\n"
                        "  - {name: c, op: conv, out: 256, kernel: 1}\n"
                        "  - {name: d, op: conv, out: 1, kernel: 1}\noutput: d\n")
        free_before = drv.mem_get_info()[0]
        with pytest.raises(GPUError, match="out of memory.*needs"):
            squeezegen.compile(g, random_weights(g, 0), batch=64)      # 4 GiB of arena
        assert drv.mem_get_info()[0] >= free_before - (4 << 20)
    finally:
        hog.free()
    small = load_model("models/lenet.yaml")
    with squeezegen.compile(small, random_weights(small, 0), batch=1) as net:  # still usable
        assert net(random_input(small, 1)).shape == (1, 10)


def test_run_accepts_device_pointers():
    torch = pytest.importorskip("torch")
    g = load_model("models/lenet.yaml")
    w = random_weights(g, 0)
    x = random_input(g, 4)
    with squeezegen.compile(g, w, batch=4) as net:
        xin = torch.from_numpy(x).cuda()
        out = torch.empty((4, 10), device="cuda")
        torch.cuda.synchronize()
        net.run(xin, out)
        net.stream.synchronize()
        assert rel_err(out.cpu().numpy(), ReferenceExecutor(g, w)(x)) <= TOL


def test_check_points_at_no_kernel_when_all_agree(tmp_path):
    import subprocess
    import sys
    from squeezegen.weights import save_weights
    g = load_model("models/squeezeseg.yaml")
    save_weights(tmp_path / "w.npz", random_weights(g, 3))
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "check", "models/squeezeseg.yaml",
                           "--weights", str(tmp_path / "w.npz"), "--batch", "2"],
                          capture_output=True, text=True)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: all 36 kernels" in proc.stdout


def test_run_cli_writes_a_segmentation_png(tmp_path):
    import subprocess
    import sys
    from PIL import Image
    from squeezegen.weights import save_weights
    g = load_model("models/squeezeseg.yaml")
    save_weights(tmp_path / "w.npz", random_weights(g, 3))
    Image.fromarray((np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "in.jpg")
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "run", "models/squeezeseg.yaml",
                           "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "in.jpg"),
                           "--output", str(tmp_path / "seg.png")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "backend cuda" in proc.stdout
    assert Image.open(tmp_path / "seg.png").size == (227, 227)


@pytest.mark.parametrize("seed", range(12))
def test_wide_random_models(seed):
    """Many channels at batch 1 and 32: split-K and the wide tile run on the GPU."""
    g = parse_model(random_model(50000 + seed, wide=True))
    w = random_weights(g, seed)
    for batch in (1, 32):
        compare(g, w, random_input(g, batch))


def test_wide_tile_with_a_k_tail():
    """K = 3*3*3 = 27 is not a multiple of the 16-deep K slices of the wide tile."""
    from squeezegen.build import build
    g = parse_model("name: t\ninput: {shape: [3, 32, 32]}\nlayers:\n"
                    "  - {name: out, op: conv, out: 64, kernel: 3, pad: 1, relu: true}\noutput: out\n")
    assert build(g, 64).output.kernels[0].template == "conv_gemm_wide.cu.j2"
    compare(g, random_weights(g, 0), random_input(g, 64), against_torch=True)


BIG_TENSOR_MODEL = """\
name: big
input: {shape: [4, 96, 97]}
layers:
  - {name: a, op: conv, out: 64, kernel: 3, pad: 1, relu: true}
  - {name: b, op: maxpool, kernel: 3, stride: 2}
  - {name: c, op: conv, out: 8, kernel: 1}
  - {name: up, op: deconv, out: 4, kernel: 2, stride: 2}
  - {name: e, op: conv, input: a, out: 4, kernel: 1}
  - {name: skip, op: add, inputs: [e, input], relu: true}
  - {name: cat, op: concat, inputs: [skip, input]}
  - {name: prob, op: softmax}
output: [prob, up]
"""


def test_a_tensor_over_2_31_elements():
    """Layer `a` holds 3,700 x 64 x 96 x 97 = 2.2e9 floats (> 2^31): every op that reads or writes
    past element 2^31 (conv, pool, deconv, add, concat, softmax) must still be right there. The
    images are independent, so the reference runs on the first and the last two only."""
    g = parse_model(BIG_TENSOR_MODEL)
    batch = 3700
    assert batch * g["a"].type.numel > 2**31
    w = random_weights(g, 0)
    base = random_input(g, 1)
    x = base + np.arange(batch, dtype=np.float32)[:, None, None, None] * np.float32(1e-3)
    with squeezegen.compile(g, w, batch=batch) as net:
        prob, up = net(x)
    ref = ReferenceExecutor(g, w)
    for rows in (slice(0, 1), slice(batch - 2, batch)):
        want_prob, want_up = ref(x[rows])
        assert rel_err(prob[rows], want_prob) <= TOL, f"prob, images {rows}"
        assert rel_err(up[rows], want_up) <= TOL, f"up, images {rows}"
