"""Activations (relu, relu6, clip, leaky_relu, sigmoid, hardsigmoid, hardswish, silu, tanh, elu,
gelu, softplus, mish, selu, celu, softsign, logsigmoid):
the model language, the NumPy reference against PyTorch (large magnitudes and NaN included),
fusion into the kernel before them, the standalone kernel, nvcc and (marker gpu) the H200."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError
from squeezegen.ir.ops import OPS
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from helpers import (ACTIVATIONS, assert_close, assert_compiles_with_nvcc, needs_gpu,
                     random_input, random_weights, small_model, torch_module, torch_run)

SPECS = ["relu", "relu6", "clip, min: -0.5, max: 1.5", "clip, min: -0.5", "clip, max: 0.75", "leaky_relu", "leaky_relu, negative_slope: -0.3",
         "sigmoid", "hardsigmoid", "hardswish", "silu", "tanh", "elu", "elu, alpha: 0.5", "gelu",
         "gelu, approximate: tanh", "softplus", "mish", "selu", "celu", "celu, alpha: 0.5",
         "softsign", "logsigmoid"]


def test_every_activation_of_the_registry_is_tested_here():
    assert {n for n, info in OPS.items() if info.activation} == set(ACTIVATIONS) \
        == {s.split(",")[0] for s in SPECS}


@pytest.mark.parametrize("spec", SPECS)
def test_reference_matches_pytorch_on_wide_values_and_nan(spec):
    g = small_model((3, 5, 7), f"- {{name: a, op: {spec}}}", "a")
    x = np.concatenate([random_input(g, 2) * 4, np.full((1, 3, 5, 7), 88.5, np.float32),
                        np.full((1, 3, 5, 7), -104.0, np.float32)])
    x[0, 0, 0, :3] = (-3.0, 3.0, 6.0)                  # the kinks of relu6 and the hard ones
    x[1, 2, 4, 6] = np.nan
    got = ReferenceExecutor(g, {})(x)
    want = torch_run(torch_module(g, {}), x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert_close(got[ok], want[ok], 1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_fused_into_conv_deconv_linear_and_batchnorm(spec):
    g = small_model((3, 6, 5), f"""
        - {{name: c, op: conv, out: 4, kernel: 3, pad: 1}}
        - {{name: a1, op: {spec}}}
        - {{name: up, op: deconv, out: 4, kernel: 2, stride: 2}}
        - {{name: a2, op: {spec}}}
        - {{name: p, op: maxpool, kernel: 2}}
        - {{name: bn, op: batchnorm}}
        - {{name: a3, op: {spec}}}
        - {{name: fc, op: linear, out: 5}}
        - {{name: a4, op: {spec}}}""", "a4")
    fused = run_passes(g)
    name = spec.split(",")[0]
    kinds = {n.name: [s.kind for s in n.epilogue] for n in fused.nodes}
    # the BatchNorm after the pool runs in the pool's store, the activation after it
    assert kinds == {"input": [], "c": [name], "up": [name], "p": ["batchnorm", name],
                     "fc": [name]}
    w = random_weights(g)
    x = random_input(g, 3)
    want = torch_run(torch_module(g, w), x)
    assert_close(ReferenceExecutor(fused, w)(x), want, 2e-6)
    cu = build(g, 3, weights=w).output.files["t.cu"].decode()
    assert f"// fused {name}" in cu and f"c_{name}" in cu


def test_fields_and_their_errors():
    g = small_model((2, 3, 3), """
        - {name: a, op: leaky_relu, negative_slope: 1e-2}
        - {name: b, op: clip, min: -1, max: 2.5}""", "b")
    assert g["a"].attrs["negative_slope"] == 0.01 and dict(g["b"].attrs) == {"min": -1.0, "max": 2.5}
    for layer, message in [("{name: b, op: clip, min: 2, max: 1}", "field 'max': min 2.0 is above max 1.0"),
                           ("{name: b, op: clip}", "field 'min': clip needs min, max or both"),
                           ("{name: b, op: clip, min: .nan, max: 1}", "field 'min': must be a number"),
                           ("{name: b, op: clip, min: -1e39, max: 1}", "field 'min': -1e.39 is beyond float32's range"),
                           ("{name: b, op: leaky_relu, negative_slope: 1.0e+39}", "beyond float32's range"),
                           ("{name: b, op: sigmoid, alpha: 1}", "unknown field 'alpha' for op sigmoid"),
                           ("{name: b, op: gelu, approximate: erf}", "field 'approximate': must be one of none, tanh")]:
        with pytest.raises(ModelError, match=message):
            small_model((2, 3, 3), f"- {layer}", "b")


def test_standalone_kernel_and_c_expressions():
    g = small_model((2, 5, 4), """
        - {name: p, op: maxpool, kernel: 2}
        - {name: s, op: hardswish}
        - {name: k, op: clip, min: -0.25, max: 0.75, input: p}
        - {name: cat, op: concat, inputs: [s, k]}""", "cat")
    cu = build(g, 2).output.files["t.cu"].decode()
    assert "xv * ((xv + 3.0f) < 0.0f ? 0.0f : ((xv + 3.0f) > 6.0f ? 6.0f : (xv + 3.0f)))" in cu
    assert "(xv < -0.25f ? -0.25f : (xv > 0.75f ? 0.75f : xv))" in cu
    g = small_model((2, 5, 4), "- {name: lo, op: clip, min: -0.25}\n"
                               "- {name: hi, op: clip, max: 0.75, input: input}", "[lo, hi]")
    cu = build(g, 2).output.files["t.cu"].decode()
    assert "(xv < -0.25f ? -0.25f : xv)" in cu and "(xv > 0.75f ? 0.75f : xv)" in cu


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_every_activation_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    layers = "\n".join(f"- {{name: a{i}, op: {spec}}}\n- {{name: c{i}, op: conv, out: 3, kernel: 1}}"
                       for i, spec in enumerate(SPECS))
    g = small_model((3, 5, 4), "- {name: c, op: conv, out: 3, kernel: 1}\n" + layers,
                    f"c{len(SPECS) - 1}")
    for precision in ("fp32", "fp16"):
        build(g, 2, precision=precision, write=tmp_path / precision)
        nvcc("-c", str(tmp_path / precision / "t" / "t.cu"), "-o", str(tmp_path / f"{precision}.o"))


@needs_gpu
@pytest.mark.parametrize("spec", SPECS)
def test_activations_on_the_gpu_match_the_reference(spec):
    g = small_model((3, 9, 7), f"""
        - {{name: c, op: conv, out: 5, kernel: 3, pad: 1}}
        - {{name: a1, op: {spec}}}
        - {{name: p, op: avgpool, kernel: 3, stride: 2}}
        - {{name: a2, op: {spec}}}""", "a2")
    w = random_weights(g)
    x = random_input(g, 3) * 3
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=3) as net:
        assert_close(net(x), want, 2e-6)


# ------------------------------------------------------------------ ONNX
class _Acts(__import__("torch").nn.Module if __import__("importlib").util.find_spec("torch")
            else object):
    """GELU (erf), Mish, ELU, Softplus and GELU's tanh form as torch.nn modules export them."""

    def __init__(self, tanh_gelu=False):
        import torch
        nn = torch.nn
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(3, 6, 3), nn.GELU()
        self.c2, self.a2 = nn.Conv2d(6, 6, 3), nn.Mish()
        self.a3, self.a4 = nn.ELU(0.5), nn.Softplus()
        self.a5 = nn.GELU(approximate="tanh") if tanh_gelu else nn.Identity()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        import torch
        y = self.a5(self.a4(self.a3(self.a2(self.c2(self.a1(self.c1(x)))))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_onnx_gelu_mish_elu_softplus_import_and_match_pytorch(opset, tmp_path):
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    text, _, _ = check_import(seeded(_Acts(tanh_gelu=True)), (3, 11, 9), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "gelu", "conv", "mish", "elu", "softplus", "gelu",
                            "avgpool", "linear"], text
    assert "op: elu, alpha: 0.5}" in text
    assert "approximate: tanh" in text


def test_onnx_erf_outside_gelu_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import export, refusal

    class Erf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.erf(self.c(x))
    message = refusal(export(Erf(), (3, 6, 6), tmp_path / "e.onnx"))
    assert "node '/Erf' (Erf): Erf is imported only inside GELU" in message, message


# ------------------------------------------------------------------ prelu
PRELU = """
- {name: p0, op: prelu, shared: true}
- {name: c, op: conv, out: 5, kernel: 3, pad: 1}
- {name: p, op: prelu}
- {name: fc, op: linear, out: 4}
- {name: q, op: prelu, shared: true, relu: true}"""


def test_prelu_reference_matches_pytorch_and_its_weights_are_pytorchs():
    g = small_model((3, 7, 5), PRELU, "q")
    from squeezegen.ir.ops import param_specs
    assert {k: v for k, v in param_specs(g).items() if k.startswith(("p", "q"))} == \
        {"p0.weight": (1,), "p.weight": (5,), "q.weight": (1,)}
    w = random_weights(g)
    x = random_input(g, 3) * 3
    want = torch_run(torch_module(g, w), x)
    assert_close(ReferenceExecutor(g, w)(x), want, 2e-6)
    # on the input: its own kernel; after the conv and the linear layer: in their stores
    fused = run_passes(g)
    assert [str(s) for s in fused["c"].epilogue] == ["prelu(p){shared=False}"]
    assert [str(s) for s in fused["fc"].epilogue] == ["prelu(q){shared=True}", "relu"]
    assert_close(ReferenceExecutor(fused, w)(x), want, 2e-6)
    assert_close(torch_run(torch_module(fused, w), x), want, 2e-6)
    cu = build(g, 3, weights=w).output.files["t.cu"].decode()
    assert "float v = xv > 0.0f ? xv : __ldg(w + 0) * xv;" in cu
    assert "s0_w = weights + 320LL;  // p.weight [5] (prelu in the epilogue)" in cu
    assert "v = v > 0.0f ? v : __ldg(s0_w + co) * v;  // fused prelu (its weights: s0_*)" in cu
    assert "v = v > 0.0f ? v : __ldg(s0_w + 0) * v;" in cu


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_prelu_compiles_with_nvcc_werror(tmp_path):
    assert_compiles_with_nvcc(small_model((3, 7, 5), PRELU, "q"), tmp_path, [(2, "fp32")])


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_prelu_imports_per_channel_and_shared(opset, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of
    nn = torch.nn

    class P(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.p = nn.Conv2d(3, 6, 3), nn.PReLU(6)
            self.fc, self.q = nn.Linear(6 * 5 * 4, 5), nn.PReLU()
            with torch.no_grad():
                self.p.weight.uniform_(-0.5, 0.5)

        def forward(self, x):
            return torch.relu(self.q(self.fc(torch.flatten(self.p(self.c(x)), 1))))
    torch.manual_seed(0)
    text, _, _ = check_import(P().eval(), (3, 7, 6), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "prelu", "linear", "prelu"], text
    assert "op: prelu, shared: true, relu: true}" in text


@needs_gpu
def test_prelu_on_the_gpu_matches_the_reference():
    g = small_model((3, 9, 7), PRELU, "q")
    w = random_weights(g)
    x = random_input(g, 3) * 3
    with squeezegen.compile(g, w, batch=3) as net:
        assert_close(net(x), ReferenceExecutor(g, w)(x), 2e-6)


def test_every_activation_runs_on_the_host(tmp_path):
    """Each activation's kernel (standalone, and fused into a conv's store), its generated CUDA
    run on the host (tests/host_kernels.py), against the NumPy reference."""
    from host_kernels import COMPILER, run_on_host
    if COMPILER is None:
        pytest.skip("no C++ compiler")
    layers = "\n".join(f"- {{name: a{i}, op: {spec}, input: input}}\n"
                       f"- {{name: f{i}, op: conv, out: 2, kernel: 1, input: input}}\n"
                       f"- {{name: g{i}, op: {spec}, input: f{i}}}"
                       for i, spec in enumerate(SPECS) if not spec.startswith("prelu"))
    outputs = [f"{k}{i}" for i, spec in enumerate(SPECS) if not spec.startswith("prelu")
               for k in "ag"]
    g = small_model((3, 5, 4), layers, "[" + ", ".join(outputs) + "]")
    w = random_weights(g, seed=4)
    x = random_input(g, 2) * 4                      # past the bounds and the knees
    got, stray, _ = run_on_host(g, w, x, tmp_path)
    assert stray == 0
    for a, b in zip(got, ReferenceExecutor(g, w)(x)):
        assert_close(a, b, 1e-5)
