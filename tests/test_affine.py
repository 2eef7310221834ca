"""affine: a per-channel scale and shift, y = x * weight + bias. What an imported network's
Add/Sub/Mul/Div by a constant (one number, or one per channel) becomes: an input normalisation
(x - mean) / std, a layer scale. The reference against PyTorch, the fold into a conv, deconv or
linear layer before it, the standalone kernel (nvcc, and the GPU), the ONNX import and what it
refuses."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from squeezegen.build import build
from squeezegen.errors import SqueezegenError
from squeezegen.ir.ops import param_specs, source_specs
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from helpers import (assert_close, assert_compiles_with_nvcc, assert_gpu_matches_reference,
                     needs_gpu, random_input, random_weights, small_model, torch_module,
                     torch_run)

# norm: at the input (its own kernel); after conv (relu), deconv, linear: folded; after a pool
# read twice: its own kernel; after the add (fused into conv2): in conv2's store, then the relu
LAYERS = """
- {name: norm, op: affine}
- {name: conv1, op: conv, out: 6, kernel: 3, pad: 1, bias: false}
- {name: s1, op: affine, relu: true}
- {name: up, op: deconv, out: 5, kernel: 4, stride: 2, pad: 1}
- {name: s2, op: affine}
- {name: pool, op: maxpool, kernel: 2, input: s1}
- {name: sp, op: affine}
- {name: conv2, op: conv, out: 6, kernel: 1, input: pool}
- {name: sum, op: add, inputs: [conv2, sp]}
- {name: ss, op: affine, relu: true}
- {name: fc, op: linear, out: 5, input: ss}
- {name: sf, op: affine}
"""


def model():
    return small_model((3, 13, 11), LAYERS, "[s2, sf]", name="affnet")


def test_reference_matches_pytorch_on_odd_shapes():
    g = model()
    w = random_weights(g, seed=4)
    x = random_input(g, 3)
    for got, want in zip(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x)):
        assert_close(got, want, 2e-6)


def test_fold_pass_folds_into_conv_deconv_linear_and_keeps_the_rest():
    g = model()
    fused = run_passes(g)
    ops = {n.name: n.op for n in fused.nodes}
    assert {"s1", "s2", "sf"}.isdisjoint(ops)                          # folded away
    assert ops["norm"] == ops["sp"] == "affine"                        # nothing to fold into
    assert "ss" not in ops and [str(s) for s in fused["conv2"].epilogue] == [
        "add(sp)", "affine(ss)", "relu"]                                 # in conv2's store
    assert fused["conv1"].param_prefix == "conv1+s1" and fused["conv1"].attrs["bias"]
    assert [str(s) for s in fused["conv1"].epilogue] == ["relu"]
    assert {c.name for c in fused.constants} == {
        f"{p}.{k}" for p in ("conv1+s1", "up+s2", "fc+sf") for k in ("weight", "bias")}
    assert source_specs(fused) == param_specs(g)
    w = random_weights(g, seed=5)
    x = random_input(g, 3)
    for a, b in zip(ReferenceExecutor(g, w)(x), ReferenceExecutor(fused, w)(x)):
        assert_close(b, a, 2e-6)
    resolved = ReferenceExecutor(fused, w).weights          # with the folded constants
    for a, b in zip(torch_run(torch_module(g, w), x), torch_run(torch_module(fused, resolved), x)):
        assert_close(b, a, 2e-6)


def test_folded_weights_are_the_scaled_ones():
    g = small_model((2, 5, 4), """
        - {name: c, op: conv, out: 3, kernel: 1}
        - {name: a, op: affine}""", "a")
    w = random_weights(g, seed=1)
    r = ReferenceExecutor(run_passes(g), w).weights
    np.testing.assert_allclose(r["c+a.weight"], w["c.weight"] * w["a.weight"][:, None, None, None],
                               rtol=1e-6)
    np.testing.assert_allclose(r["c+a.bias"], w["c.bias"] * w["a.weight"] + w["a.bias"],
                               rtol=1e-6, atol=1e-7)


def test_generated_code_has_the_standalone_kernel_and_names_the_folded_ones():
    g = model()
    cu = build(g, 3, weights=random_weights(g)).output.files["affnet.cu"].decode()
    assert "fused: affine s1 (folded into the weights and bias: conv1+s1.*); relu" in cu
    assert "norm: affine, 3x13x11 -> 3x13x11 (batch 3)" in cu
    assert "xv * __ldg(w + c) + __ldg(b + c)" in cu


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_affine_model_compiles_with_nvcc_werror(tmp_path):
    assert_compiles_with_nvcc(model(), tmp_path)


@pytest.mark.parametrize("field, message", [
    ("eps: 0.1", "unknown field 'eps' for op affine"),
    ("relu: 3", "relu"),
])
def test_bad_affine_fields_are_named(field, message):
    with pytest.raises(SqueezegenError) as info:
        small_model((2, 5, 4), f"- {{name: a, op: affine, {field}}}", "a")
    assert message in str(info.value) and "<test>:4: layer 'a'" in str(info.value)


# ------------------------------------------------------------------ ONNX
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from test_onnx_import import check_import, export, ops_of, refusal, seeded  # noqa: E402

nn = torch.nn


class Normalised(nn.Module):
    """An input normalisation, a layer scale, scalar arithmetic: every form the importer maps."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.fc = nn.Linear(8 * 5 * 4, 6)

    def forward(self, x):
        x = (x - self.mean) / self.std                   # Sub, Div: one affine
        y = torch.relu(self.c(x) * self.gamma + 0.25)    # Mul, Add, Relu: folded into c
        y = 2.0 - y                                      # Sub from a number: weight -1
        y = nn.functional.max_pool2d(y, 2)
        return self.fc(torch.flatten(y, 1)) / 3.0 + 1.0  # Div, Add of a vector: folded


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_constant_arithmetic_imports_as_affine_layers(opset, tmp_path):
    text, weights, graph = check_import(seeded(Normalised()), (3, 11, 9), tmp_path, opset=opset)
    assert ops_of(text) == ["affine", "conv", "affine", "affine", "maxpool", "linear", "affine"]
    assert "relu: true" in [line for line in text.splitlines() if "op: affine" in line][1]
    first = [n for n in graph.nodes if n.op == "affine"][0].param_prefix
    np.testing.assert_allclose(weights[f"{first}.weight"], 1 / np.array([0.229, 0.224, 0.225]),
                               rtol=1e-6)
    np.testing.assert_allclose(weights[f"{first}.bias"],
                               -np.array([0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                               rtol=1e-6)
    # 2 - y after the conv's ReLU runs in the conv's store
    fused = run_passes(graph)
    assert [n.op for n in fused.nodes] == ["input", "affine", "conv", "maxpool", "linear"]
    assert [s.kind for s in fused.nodes[2].epilogue] == ["relu", "affine"]


class Chain(nn.Module):
    def forward(self, x):
        return ((x - 0.5) * 2.0 + 1.0) / 4.0                 # four constant ops: one affine


def test_a_chain_of_constant_arithmetic_is_one_affine_layer(tmp_path):
    text, weights, _ = check_import(Chain(), (3, 5, 4), tmp_path, name="chain")
    assert ops_of(text) == ["affine"], text
    w = {k.split(".")[-1]: v for k, v in weights.items()}
    np.testing.assert_allclose(w["weight"], np.full(3, 0.5), rtol=1e-6)
    np.testing.assert_allclose(w["bias"], np.full(3, 0.0), atol=1e-7)


class Arith(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv, self.fn = nn.Conv2d(3, 4, 3), fn

    def forward(self, x):
        return self.fn(self, self.conv(x))


@pytest.mark.parametrize("fn, needle", [
    (lambda m, y: torch.full((1, 4, 1, 1), 2.0) / y, "divides a constant by a layer output"),
    (lambda m, y: y / torch.zeros(1, 4, 1, 1), "zero in some channel"),
    (lambda m, y: y * torch.ones(5), "has shape [5] against the tensor's [N, 4, 4, 5]"),
    (lambda m, y: y + torch.ones(1, 1, 4, 1), "one number or one per channel ([4, 1, 1]"),
    (lambda m, y: y / y, "divides a tensor by itself"),
])
def test_onnx_constant_arithmetic_that_is_not_per_channel_is_refused(fn, needle, tmp_path):
    message = refusal(export(seeded(Arith(fn)), (3, 6, 7), tmp_path / "a.onnx"))
    assert needle in message, message


@needs_gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_affine_model_on_the_gpu_matches_the_reference(batch):
    g = model()
    assert_gpu_matches_reference(g, random_weights(g, seed=7), batch)


class Difference(nn.Module):
    """a - b of two layer outputs, and x - mean(x) over the pixels (broadcast per channel)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.a(x) - self.b(x)
        return torch.relu(y - y.mean((2, 3), keepdim=True))


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_sub_of_two_layer_outputs_is_an_add_of_the_negation(opset, tmp_path):
    text, _, graph = check_import(seeded(Difference()), (3, 9, 7), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "conv", "affine", "add", "avgpool", "affine", "add"], text
    fused = run_passes(graph)            # b's negation folds into b's weights
    # the mean's negation runs in the global pool's store
    assert [n.op for n in fused.nodes] == ["input", "conv", "conv", "avgpool", "add"]
    assert [s.kind for s in fused.nodes[3].epilogue] == ["affine"]


class AliasMerge(nn.Module):
    """y * 2 read twice, once through a Flatten: the + 1 after the Flatten must not merge into
    y's affine (the other reader needs y itself)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(80, 5)

    def forward(self, x):
        y = self.conv(x) * 2.0
        return self.fc(torch.flatten(y, 1) + 1.0), torch.relu(y)


class PooledVector(nn.Module):
    """A per-feature constant on a global pool's flattened vector: one per channel."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
        self.register_buffer("m", torch.tensor([0.5, -1.0, 2.0, 0.25]))

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x).mean((2, 3), keepdim=True), 1) - self.m)


@pytest.mark.parametrize("module, ops", [
    (AliasMerge, ["conv", "affine", "affine", "linear", "relu"]),
    (PooledVector, ["conv", "avgpool", "affine", "linear"]),
])
def test_onnx_affines_of_aliased_and_flattened_tensors(module, ops, tmp_path):
    text, _, _ = check_import(seeded(module()), (3, 6, 7), tmp_path)
    assert ops_of(text) == ops, text


def test_onnx_per_channel_constant_on_a_reshaped_image_is_refused(tmp_path):
    class Reshaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):               # 4 x 2 x 2 read as 1 x 4 x 4: axis 1 is not C
            return self.conv(x).reshape(1, 1, 4, 4) * torch.ones(4, 1, 1)
    message = refusal(export(seeded(Reshaped()), (3, 4, 4), tmp_path / "r.onnx"))
    assert "one number or one per channel" in message or "reshaped" in message, message


def test_onnx_scale_beyond_float32_is_refused_at_the_node(tmp_path):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) / torch.full((1, 4, 1, 1), 1e-39, dtype=torch.float64).float()
    message = refusal(export(seeded(Tiny()), (3, 6, 6), tmp_path / "t.onnx"))
    assert "(Div): the constant's scale or shift is beyond float32's range" in message, message
