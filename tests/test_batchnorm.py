"""BatchNorm (inference form): the model language, the NumPy reference against PyTorch, the
fold_batchnorm pass and its constants, the standalone kernel, weights files, ONNX import, nvcc and
(marker gpu) the H200."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError, WeightsError
from squeezegen.ir.ops import param_specs, source_specs
from squeezegen.ir.printer import format_graph
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from squeezegen.weights import check_weights, init_weights
from helpers import (assert_close, assert_compiles_with_nvcc, assert_gpu_matches_reference,
                     needs_gpu, random_input, random_weights, small_model, torch_module,
                     torch_run)

# conv (no bias) -> bn -> relu: folded; conv -> bn relu: folded with its ReLU; deconv -> bn and
# linear -> bn (BatchNorm1d): folded; maxpool -> bn and add -> bn: standalone kernels
LAYERS = """
- {name: conv1, op: conv, out: 6, kernel: 3, pad: 1, bias: false}
- {name: bn1, op: batchnorm}
- {name: r1, op: relu}
- {name: conv2, op: conv, out: 6, kernel: [3, 1], stride: [2, 1], pad: [1, 0]}
- {name: bn2, op: batchnorm, eps: 0.001, relu: true}
- {name: up, op: deconv, out: 6, kernel: 4, stride: 2, pad: 1, input: bn2}
- {name: bn3, op: batchnorm}
- {name: pool, op: maxpool, kernel: 2, input: r1}
- {name: bnp, op: batchnorm, eps: 1e-3}
- {name: conv3, op: conv, out: 6, kernel: 1, input: pool}
- {name: sum, op: add, inputs: [conv3, bnp]}
- {name: bns, op: batchnorm, relu: true}
- {name: fc, op: linear, out: 5, input: bns}
- {name: bnf, op: batchnorm}
"""


def model():
    return small_model((3, 13, 11), LAYERS, "[bn3, bnf]", name="bnnet")


def test_reference_matches_pytorch_batchnorm_on_odd_shapes():
    g = model()
    w = random_weights(g, seed=4)
    x = random_input(g, 3)
    for got, want in zip(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x)):
        assert_close(got, want, 2e-6)


def test_fold_pass_folds_into_conv_deconv_linear_and_keeps_the_rest():
    g = model()
    fused = run_passes(g)
    ops = {n.name: n.op for n in fused.nodes}
    assert {"bn1", "bn2", "bn3", "bnf"}.isdisjoint(ops)              # folded away
    assert ops["bnp"] == "batchnorm"           # the pool it reads has two readers: own kernel
    # no layer to fold into: in the store of the conv the add after it is fused into
    assert "bns" not in ops and [str(s) for s in fused["conv3"].epilogue] == [
        "add(bnp)", "batchnorm(bns){eps=1e-05}", "relu"]
    assert fused["conv1"].param_prefix == "conv1+bn1" and fused["conv1"].attrs["bias"]
    assert "bn2" in fused["conv2"].fused and [str(s) for s in fused["conv2"].epilogue] == ["relu"]
    made = {c.name for c in fused.constants}
    assert made == {f"{p}.{k}" for p in ("conv1+bn1", "conv2+bn2", "up+bn3", "fc+bnf")
                    for k in ("weight", "bias")}
    # the user still supplies the original model's weights, and nothing else
    assert source_specs(fused) == param_specs(g)
    w = random_weights(g, seed=5)
    x = random_input(g, 3)
    for a, b in zip(ReferenceExecutor(g, w)(x), ReferenceExecutor(fused, w)(x)):
        assert_close(b, a, 2e-6)


def test_folded_weights_are_the_scaled_ones():
    g = small_model((2, 5, 4), """
        - {name: c, op: conv, out: 3, kernel: 1}
        - {name: bn, op: batchnorm, eps: 0.5}""", "bn")
    w = random_weights(g, seed=1)
    fused = run_passes(g)
    r = ReferenceExecutor(fused, w).weights
    scale = w["bn.weight"].astype(np.float64) / np.sqrt(w["bn.running_var"] + 0.5)
    np.testing.assert_allclose(r["c+bn.weight"], w["c.weight"] * scale[:, None, None, None],
                               rtol=1e-6)
    np.testing.assert_allclose(r["c+bn.bias"],
                               (w["c.bias"] - w["bn.running_mean"]) * scale + w["bn.bias"],
                               rtol=1e-6, atol=1e-7)
    assert "constant c+bn.weight [3, 2, 1, 1]" in format_graph(fused)


@pytest.mark.parametrize("layers, reason", [
    ("""- {name: c, op: conv, out: 3, kernel: 1}
        - {name: bn, op: batchnorm}
        - {name: other, op: relu, input: c}
        - {name: s, op: add, inputs: [bn, other]}""", "two readers"),
])
def test_not_folded_where_the_layer_has_other_readers(layers, reason):
    g = small_model((2, 5, 4), layers, layers.split("name: ")[-1].split(",")[0])
    fused = run_passes(g)
    assert any(n.op == "batchnorm" for n in fused.nodes), reason
    w = random_weights(g)
    x = random_input(g, 2)
    assert_close(ReferenceExecutor(fused, w)(x), ReferenceExecutor(g, w)(x), 1e-6)


def test_a_conv_that_is_also_an_output_is_not_folded():
    g = small_model((2, 5, 4), """
        - {name: c, op: conv, out: 3, kernel: 1}
        - {name: bn, op: batchnorm}""", "[c, bn]")
    assert [n.op for n in run_passes(g).nodes] == ["input", "conv", "batchnorm"]


@pytest.mark.parametrize("field, message", [
    ("eps: 0", "eps': must be a positive number, got 0"),
    ("eps: -1.0e-5", "must be a positive number"),
    ("eps: true", "must be a positive number, got True"),
    ("eps: '1e-5x'", "must be a positive number"),
    ("momentum: 0.1", "unknown field 'momentum' for op batchnorm"),
])
def test_bad_batchnorm_fields_are_named_with_their_line(field, message):
    text = ("name: t\ninput: {shape: [2, 4, 4]}\nlayers:\n  - {name: c, op: conv, out: 2, kernel: 1}\n"
            f"  - {{name: bn, op: batchnorm,\n     {field}}}\noutput: bn\n")
    with pytest.raises(ModelError) as err:
        squeezegen.parse_model(text, "m.yaml")
    assert message in str(err.value) and "m.yaml:6" in str(err.value) and "'bn'" in str(err.value)


def test_batchnorm_of_a_vector_and_exponent_eps():
    g = small_model((8,), """
        - {name: fc, op: linear, out: 4}
        - {name: r, op: relu}
        - {name: bn, op: batchnorm, eps: 1e-3}""", "bn")
    assert g["bn"].attrs["eps"] == 1e-3 and g["bn"].type.shape == (4,)
    w = random_weights(g)
    x = random_input(g, 3)
    assert_close(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x), 2e-6)


def test_weights_state_dict_with_num_batches_tracked_is_accepted_and_sources_are_named():
    g = model()
    w = random_weights(g)
    w["bn1.num_batches_tracked"] = np.array(7, np.int64)
    check_weights(g, w)
    del w["bn3.running_var"]
    with pytest.raises(WeightsError, match=r"missing 1 tensor\(s\): bn3.running_var"):
        check_weights(run_passes(g), w)        # the folded graph asks for the user's names


def test_init_weights_makes_a_usable_batchnorm():
    g = model()
    w = init_weights(g, seed=2)
    assert (w["bn1.running_var"] > 0).all() and np.isfinite(ReferenceExecutor(g, w)(
        random_input(g, 2))[0]).all()


def test_generated_code_names_the_folded_weights_and_the_standalone_kernel():
    g = model()
    out = build(g, 3, weights=random_weights(g)).output
    cu = out.files["bnnet.cu"].decode()
    assert "conv1+bn1.weight, packed K-major [27][6]" in cu
    assert "fused: batchnorm bn1 (folded into the weights and bias: conv1+bn1.*); relu" in cu
    assert "bnp: batchnorm, 6x7x6 -> 6x7x6 (batch 3)" in cu
    assert "__ldg(w + c) * (xv - __ldg(running_mean + c)) * (1.0f / sqrtf(__ldg(running_var + c)" \
           " + 0.001f)) + __ldg(b + c)" in cu
    # bns, after the add fused into conv3, runs in conv3's store with its own weights
    assert "implements: conv3 (<test>:13), sum (<test>:14), bns (<test>:15)" in cu
    assert "s1_running_var = weights + " in cu and "bns.running_var [6] (batchnorm in" in cu
    assert "v = __ldg(s1_w + co) * (v - __ldg(s1_running_mean + co)) * (1.0f / sqrtf(" \
           "__ldg(s1_running_var + co) + 1e-05f)) + __ldg(s1_b + co);" in cu
    kernels = [k["name"] for k in __import__("json").loads(out.files["manifest.json"])["kernels"]]
    assert kernels == ["conv1_relu", "conv2_relu", "up", "pool", "bnp",
                       "conv3_add_batchnorm_relu", "fc"], kernels


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_batchnorm_model_compiles_with_nvcc_werror(tmp_path):
    assert_compiles_with_nvcc(model(), tmp_path)


def test_onnx_batchnorm_imports_and_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8, eps=1e-3)
            self.p = nn.MaxPool2d(2)
            self.bn2 = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn2(self.p(torch.relu(self.bn(self.c(x)))))
    torch.manual_seed(0)
    net = Net()
    for bn in (net.bn, net.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    net.eval()
    x = torch.randn(2, 3, 12, 10)
    path = tmp_path / "bn.onnx"
    torch.onnx.export(net, x, str(path), dynamo=False, opset_version=13,
                      do_constant_folding=False)
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "import", str(path), "-o",
                           str(tmp_path / "bn.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "bn.yaml").read_text()
    assert "{name: bn, op: batchnorm, eps: 0.001, relu: true}" in text
    assert "{name: bn2, op: batchnorm, eps: 1.0e-05}" in text
    g = squeezegen.load_model(tmp_path / "bn.yaml")
    w = squeezegen.load_weights(tmp_path / "bn.npz")
    with torch.no_grad():
        want = net(x).numpy()
    assert_close(ReferenceExecutor(g, w)(x.numpy()), want, 2e-6)


@needs_gpu
@pytest.mark.parametrize("batch, precision, tol", [(1, "fp32", 1e-5), (3, "fp32", 1e-5),
                                                   (16, "fp32", 1e-5), (3, "fp16", 5e-3)])
def test_batchnorm_model_on_the_gpu_matches_the_reference(batch, precision, tol):
    g = model()
    assert_gpu_matches_reference(g, random_weights(g, seed=7), batch, precision, tol)
