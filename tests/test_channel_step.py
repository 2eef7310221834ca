"""fuse_channel_step: a batchnorm, affine or prelu that cannot be folded into the weights before
it runs in the store of the kernel that produces its input, with its own weights read at each
element's channel. Before/after IR, the reference and the PyTorch peer of the fused graph against
PyTorch on the original, the generated code, nvcc, and (marker gpu) the GPU on every kind of
producing kernel."""
from __future__ import annotations

import json
import shutil

import pytest

from squeezegen.build import build
from squeezegen.ir.ops import param_specs, source_specs
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from helpers import (assert_close, assert_compiles_with_nvcc, assert_gpu_matches_reference,
                     needs_gpu, random_input, random_weights, small_model, torch_module,
                     torch_run)

# every kind of kernel that stores per channel, each followed by a step it cannot fold
LAYERS = """
- {name: c1, op: conv, out: 8, kernel: 3, pad: 1, relu: true}
- {name: b1, op: batchnorm, eps: 0.001}
- {name: c2, op: conv, out: 12, kernel: 1, stride: [2, 1], relu: true}
- {name: p2, op: prelu}
- {name: c3, op: conv, out: 12, kernel: 3, pad: 1, groups: 12, relu: true}
- {name: a3, op: affine, relu: true}
- {name: c4, op: conv, out: 6, kernel: 2, relu: true}
- {name: c4p, op: maxpool, kernel: 2, stride: 2, ceil_mode: false}
- {name: b4, op: batchnorm}
- {name: d5, op: deconv, out: 5, kernel: 4, stride: 2, pad: 1}
- {name: d5r, op: relu}
- {name: b5, op: batchnorm}
- {name: p6, op: maxpool, kernel: 3, stride: 2, pad: 1}
- {name: b6, op: batchnorm, relu: true}
- {name: s7, op: sigmoid, input: b6}
- {name: a7, op: affine}
- {name: sum, op: add, inputs: [a7, b6]}
- {name: b8, op: batchnorm}
- {name: up, op: resize, scale: 2, mode: bilinear, coordinates: half_pixel}
- {name: p9, op: prelu, shared: true}
- {name: g, op: avgpool, global: true}
- {name: bg, op: batchnorm}
- {name: fc, op: linear, out: 7, relu: true}
- {name: bf, op: batchnorm}
"""


def model():
    return small_model((3, 13, 11), LAYERS, "[p9, bf]", name="steps")


def test_each_step_runs_in_its_producers_store():
    fused = run_passes(model())
    steps = {n.name: [str(s) for s in n.epilogue] for n in fused.nodes if n.epilogue}
    assert steps == {
        "c1": ["relu", "batchnorm(b1){eps=0.001}"],
        "c2": ["relu", "prelu(p2){shared=False}"],
        "c3": ["relu", "affine(a3)", "relu"],
        "c4": ["relu", "batchnorm(b4){eps=1e-05}"],       # after the pool fused into c4
        "d5": ["relu", "batchnorm(b5){eps=1e-05}"],
        "p6": ["batchnorm(b6){eps=1e-05}", "relu"],
        "s7": ["affine(a7)", "add(p6)", "batchnorm(b8){eps=1e-05}"],
        "up": ["prelu(p9){shared=True}"],
        "g": ["batchnorm(bg){eps=1e-05}"],
        "fc": ["relu", "batchnorm(bf){eps=1e-05}"],
    }, steps
    assert "pool" in fused["c4"].attrs
    assert not {"batchnorm", "affine", "prelu"} & {n.op for n in fused.nodes}
    # the user supplies the same weights; the kernels read the steps' own
    assert source_specs(fused) == param_specs(model())
    assert "b8.running_var" in param_specs(fused)


def test_fused_graph_matches_pytorch_on_the_original():
    g = model()
    w = random_weights(g, seed=3)
    x = random_input(g, 3)
    want = torch_run(torch_module(g, w), x)
    fused = run_passes(g)
    resolved = ReferenceExecutor(fused, w).weights
    for got in (ReferenceExecutor(fused, w)(x), torch_run(torch_module(fused, resolved), x)):
        for a, b in zip(got, want):
            assert_close(a, b, 2e-6)


@pytest.mark.parametrize("layers, output, kept", [
    ("- {name: b, op: batchnorm}\n- {name: c, op: conv, out: 2, kernel: 1}", "c", "b"),
    ("""- {name: p, op: maxpool, kernel: 2}
        - {name: b, op: batchnorm}
        - {name: s, op: add, inputs: [p, b]}""", "s", "b"),
    ("""- {name: c, op: conv, out: 2, kernel: 1, relu: true}
        - {name: b, op: affine}""", "[c, b]", "b"),
])
def test_not_fused_on_the_input_a_tensor_read_twice_or_an_output(layers, output, kept):
    g = small_model((2, 5, 4), layers, output)
    fused = run_passes(g)
    assert kept in {n.name for n in fused.nodes}
    w = random_weights(g)
    x = random_input(g, 2)
    assert_close(ReferenceExecutor(fused, w)(x), ReferenceExecutor(g, w)(x), 1e-6)


def test_generated_code_reads_the_steps_weights_at_the_channel():
    g = model()
    out = build(g, 3, weights=random_weights(g)).output
    cu = out.files["steps.cu"].decode()
    kernels = [k["name"] for k in json.loads(out.files["manifest.json"])["kernels"]]
    assert kernels == ["c1_relu_batchnorm", "c2_relu_prelu", "c3_relu_affine_relu",
                       "c4_maxpool_relu_batchnorm", "d5_relu_batchnorm", "p6_batchnorm_relu",
                       "s7_affine_add_batchnorm", "up_prelu", "g_batchnorm",
                       "fc_relu_batchnorm"], kernels
    assert "const float* __restrict__ s1_running_mean = weights + " in cu
    assert "// b1.running_mean [8] (batchnorm in the epilogue)" in cu
    assert "v = v * __ldg(s0_w + c) + __ldg(s0_b + c);  // fused affine (its weights: s0_*)" in cu
    assert "v = v > 0.0f ? v : __ldg(s0_w + 0) * v;  // fused prelu (its weights: s0_*)" in cu
    assert "implements: s7 (<test>:18), a7 (<test>:19), sum (<test>:20), b8 (<test>:21)" in cu


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_compiles_with_nvcc_werror(tmp_path):
    assert_compiles_with_nvcc(model(), tmp_path)


@needs_gpu
@pytest.mark.parametrize("batch, precision, tol", [(1, "fp32", 1e-5), (3, "fp32", 1e-5),
                                                   (3, "tf32", 5e-3), (2, "fp16", 5e-3)])
def test_on_the_gpu_matches_the_reference(batch, precision, tol):
    g = model()
    assert_gpu_matches_reference(g, random_weights(g, seed=11), batch, precision, tol)


@pytest.mark.parametrize("between", ["- {name: a, op: relu}",
                                     "- {name: a0, op: sigmoid}\n- {name: a, op: batchnorm}"])
def test_x_plus_a_step_of_x_keeps_x(between):
    """x + act(x): the add goes into act's kernel, which then reads x twice (as its input and as
    the tensor it adds), so act must not be fused into x's kernel."""
    g = small_model((3, 7, 6), "- {name: c, op: conv, out: 4, kernel: 3, pad: 1}\n" + between
                    + "\n- {name: s, op: add, inputs: [a, c]}", "s")
    w = random_weights(g, seed=2)
    x = random_input(g, 3)
    fused = run_passes(g)
    assert not fused["c"].epilogue
    assert_close(ReferenceExecutor(fused, w)(x), torch_run(torch_module(g, w), x), 2e-6)
    build(g, 3, weights=w)


def test_the_benchmarks_torch_peer_runs_the_steps_with_their_weights():
    """runtime/torch_peer.py (what `bench --compare torch` times) on the fused graph."""
    torch = pytest.importorskip("torch")
    from squeezegen.runtime.torch_peer import torch_module as peer
    g = model()
    w = random_weights(g, seed=3)
    x = random_input(g, 2)
    fused = run_passes(g)
    reference = ReferenceExecutor(fused, w)
    with torch.no_grad():
        got = peer(fused, reference.weights)(torch.from_numpy(x))
    for a, b in zip(got, reference(x), strict=True):
        assert_close(a.numpy(), b, 2e-6)
