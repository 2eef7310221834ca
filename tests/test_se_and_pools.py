"""Squeeze-and-excitation pieces and the pool variants: `mul` and `add` with a per-channel
C x 1 x 1 operand broadcast over the pixels, `avgpool count_include_pad: false`, global max
pooling; the reference against PyTorch, the kernels, nvcc, ONNX import and (marker gpu) the
H200."""
from __future__ import annotations

import shutil

import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError
from squeezegen.reference import ReferenceExecutor
from helpers import (assert_close, needs_gpu, random_input, random_weights, small_model,
                     torch_module, torch_run)

# torchvision's SqueezeExcitation (MobileNetV3): pool, 1x1 conv, ReLU, 1x1 conv, hardsigmoid,
# scale; then a broadcast add and the pool variants
SE = """
- {name: c, op: conv, out: 8, kernel: 3, pad: 1}
- {name: gap, op: avgpool, global: true}
- {name: fc1, op: conv, out: 4, kernel: 1, relu: true}
- {name: fc2, op: conv, out: 8, kernel: 1}
- {name: gate, op: hardsigmoid}
- {name: scaled, op: mul, inputs: [c, gate]}
- {name: shifted, op: add, inputs: [fc2, scaled], relu: true}
- {name: avg, op: avgpool, kernel: 3, stride: 2, pad: 1, count_include_pad: false}
- {name: avgc, op: avgpool, kernel: [2, 3], stride: 2, pad: [1, 1], ceil_mode: true, count_include_pad: false, input: shifted}
- {name: gmax, op: maxpool, global: true, input: shifted}
"""


def model():
    return small_model((3, 11, 9), SE, "[avg, avgc, gmax]", name="se")


def test_reference_matches_pytorch():
    g = model()
    w = random_weights(g, seed=2)
    x = random_input(g, 3)
    for got, want in zip(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x)):
        assert_close(got, want, 1e-6)
    assert g["scaled"].type.shape == (8, 11, 9) and g["gmax"].type.shape == (8, 1, 1)


def test_kernels_read_the_broadcast_operand_at_its_channel():
    out = build(model(), 3)
    cu = out.output.files["se.cu"].decode()
    assert "const float product = __ldg(x0 + n * X0_IMAGE + r) * __ldg(x1 + n * X1_IMAGE + c);" in cu
    assert "const float sum = __ldg(x0 + n * X0_IMAGE + c) + __ldg(x1 + n * X1_IMAGE + r);" in cu
    assert "average over the window's part inside the input (count_include_pad=False)" in cu
    fused = out.fused
    assert fused["fc2"].epilogue == () and "gate" in fused, "fc2 has two readers: not fused"
    assert [str(s) for s in fused["shifted"].epilogue] == ["relu"], "relu fused into the add"
    assert [n.name for n in fused.nodes if n.op == "relu"] == []


@pytest.mark.parametrize("layers, message", [
    ("- {name: a, op: conv, out: 4, kernel: 1}\n- {name: b, op: conv, out: 3, kernel: 1, input: input}\n"
     "- {name: g, op: avgpool, global: true}\n- {name: m, op: mul, inputs: [a, g]}",
     "mul needs inputs of one shape (or C x 1 x 1 ones, broadcast over the pixels, or 1 x H x W ones, broadcast over the channels), got 4x5x5 and 3x1x1"),
    ("- {name: a, op: conv, out: 3, kernel: 1}\n- {name: b, op: conv, out: 3, kernel: 1, input: input}\n"
     "- {name: c, op: conv, out: 3, kernel: 1, input: input}\n- {name: m, op: mul, inputs: [a, b, c]}",
     "mul takes 2 inputs, got 3"),
    ("- {name: g, op: avgpool, global: true, count_include_pad: false}", "'count_include_pad' cannot be given with global: true"),
    ("- {name: g, op: avgpool, global: true}\n- {name: l, op: linear, out: 3, input: input}\n"
     "- {name: m, op: add, inputs: [l, g]}", "add needs inputs of one shape (or C x 1 x 1 ones, broadcast over the pixels, or 1 x H x W ones, broadcast over the channels), got 3 and 3x1x1"),
    ("- {name: g, op: avgpool, global: true}\n- {name: l, op: linear, out: 3, input: input}\n"
     "- {name: m, op: mul, inputs: [g, l]}", "mul needs inputs of one shape"),
])
def test_bad_layers_are_named(layers, message):
    with pytest.raises(ModelError) as err:
        small_model((3, 5, 5), layers, layers.split("name: ")[-1].split(",")[0])
    assert message in str(err.value), str(err.value)


def test_globalavgpool_and_globalmaxpool_are_the_global_pools():
    g = small_model((3, 7, 5), """
        - {name: a, op: globalavgpool}
        - {name: m, op: globalmaxpool, input: input}
        - {name: s, op: add, inputs: [a, m]}""", "s")
    assert (g["a"].op, g["m"].op) == ("avgpool", "maxpool") and g["a"].attrs["global"]
    x = random_input(g, 2)
    assert_close(ReferenceExecutor(g, {})(x), torch_run(torch_module(g, {}), x), 1e-6)
    with pytest.raises(ModelError, match="unknown field 'kernel' for op globalmaxpool"):
        small_model((3, 7, 5), "- {name: m, op: globalmaxpool, kernel: 3}", "m")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    for precision in ("fp32", "fp16"):
        build(model(), 3, precision=precision, write=tmp_path / precision)
        nvcc("-c", str(tmp_path / precision / "se" / "se.cu"), "-o", str(tmp_path / f"{precision}.o"))


def test_onnx_squeeze_excitation_imports(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn, F = torch.nn, torch.nn.functional

    class SqueezeExcitation(nn.Module):          # torchvision.ops.SqueezeExcitation's structure
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc1 = nn.Conv2d(8, 4, 1)
            self.fc2 = nn.Conv2d(4, 8, 1)

        def forward(self, x):
            x = self.conv(x)
            scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
            y = scale * x
            return F.avg_pool2d(y, 3, 2, 1, count_include_pad=False)
    for opset in (13, 17):
        text, _, _ = check_import(seeded(SqueezeExcitation()), (3, 9, 11), tmp_path, opset=opset)
        assert ops_of(text) == ["conv", "avgpool", "conv", "conv", "hardsigmoid", "mul", "avgpool"]
        assert "count_include_pad: false" in text


@needs_gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_on_the_gpu(batch):
    g = model()
    w = random_weights(g, seed=2)
    x = random_input(g, batch)
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=batch) as net:
        for a, b in zip(net(x), want):
            assert_close(a, b, 1e-5)
