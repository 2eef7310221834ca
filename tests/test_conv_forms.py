"""Grouped, depthwise and dilated convolutions and asymmetric padding: the model language, the
NumPy reference against PyTorch on odd shapes, which kernel runs them (conv_direct for groups,
the GEMMs with dilated taps), nvcc, ONNX import and (marker gpu) the H200."""
from __future__ import annotations

import shutil

import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError
from squeezegen.ir.printer import format_summary, summarize
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from helpers import (assert_close, needs_gpu, random_input, random_weights, small_model,
                     torch_module, torch_run)

FORMS = {
    "depthwise": "{name: c, op: conv, out: 6, kernel: 3, stride: 2, pad: 1, groups: 6}",
    "depthwise_x2": "{name: c, op: conv, out: 12, kernel: [3, 5], pad: [1, 2], groups: 6}",
    "grouped": "{name: c, op: conv, out: 4, kernel: [3, 2], stride: [2, 1], pad: [1, 0, 2, 1], groups: 2}",
    "dilated": "{name: c, op: conv, out: 5, kernel: 3, dilation: [2, 3], pad: [2, 3]}",
    "dilated_strided": "{name: c, op: conv, out: 7, kernel: [2, 3], stride: [3, 2], dilation: 2}",
    "asymmetric": "{name: c, op: conv, out: 3, kernel: 2, stride: 2, pad: [0, 0, 1, 1]}",
    "asymmetric_wide": "{name: c, op: conv, out: 70, kernel: 3, pad: [2, 0, 0, 1], bias: false}",
}


def model(form):
    return small_model((6, 11, 9), f"- {FORMS[form]}\n- {{name: r, op: relu}}", "r")


@pytest.mark.parametrize("form", FORMS)
def test_reference_matches_pytorch(form):
    g = model(form)
    w = random_weights(g, seed=3)
    x = random_input(g, 3)
    assert_close(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x), 1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_the_kernel_that_runs_it(form):
    out = build(model(form), 3)
    (kernel, ) = out.output.kernels
    grouped = "groups" in FORMS[form]
    assert kernel.template == ("conv_direct.cu.j2" if grouped else "conv_gemm.cu.j2"), kernel.template
    cu = out.output.files["t.cu"].decode()
    assert ("r / KW * DH" in cu) == ("dilation" in FORMS[form] and not grouped)
    assert out.fused["c"].epilogue[0].kind == "relu"


def test_yaml_fields():
    g = model("grouped")
    assert dict(g["c"].attrs) == {"out": 4, "kernel": (3, 2), "stride": (2, 1), "pad": (1, 0),
                                  "bias": True, "pad_end": (2, 1), "groups": 2}
    plain = small_model((2, 5, 5), "- {name: c, op: conv, out: 2, kernel: 3, pad: [1, 1, 1, 1]}", "c")
    assert "pad_end" not in plain["c"].attrs and "groups" not in plain["c"].attrs
    summary = format_summary(summarize(g))
    assert "3x2/2x1 pad 1x0+2x1 g2" in summary


@pytest.mark.parametrize("layer, message", [
    ("{name: c, op: conv, out: 4, kernel: 3, groups: 4}", "groups 4 must divide the 6 input"),
    ("{name: c, op: conv, out: 6, kernel: 3, pad: [1, 1, 1]}", "field 'pad': must be a non-negative integer, a list [h, w] or a list [top, left, bottom, right]"),
    ("{name: c, op: conv, out: 6, kernel: 3, dilation: 0}", "field 'dilation': must be a positive integer"),
    ("{name: c, op: conv, out: 6, kernel: 5, dilation: 3}", "kernel 5x5 dilated by 3x3 does not fit the 11x9 input"),
])
def test_bad_fields_are_named(layer, message):
    with pytest.raises(ModelError) as err:
        small_model((6, 11, 9), f"- {layer}", "c")
    assert message in str(err.value), str(err.value)


def test_batchnorm_folds_into_a_depthwise_conv_and_no_pool_is_fused_into_it():
    g = small_model((4, 8, 8), """
        - {name: dw, op: conv, out: 4, kernel: 3, pad: 1, groups: 4, bias: false}
        - {name: bn, op: batchnorm, relu: true}
        - {name: p, op: maxpool, kernel: 2, stride: 2}""", "p")
    fused = run_passes(g)
    assert [n.op for n in fused.nodes] == ["input", "conv", "maxpool"]
    assert fused["dw"].param_prefix == "dw+bn"
    w = random_weights(g)
    x = random_input(g, 2)
    assert_close(ReferenceExecutor(fused, w)(x), torch_run(torch_module(g, w), x), 1e-5)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_every_form_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    layers = "\n".join(FORMS[f].replace("name: c,", f"name: c{i}, input: input,")
                       for i, f in enumerate(FORMS))
    outs = ", ".join(f"c{i}" for i in range(len(FORMS)))
    g = small_model((6, 11, 9), "\n".join(f"- {line}" for line in layers.splitlines()), f"[{outs}]")
    for batch, precision in ((1, "fp32"), (16, "tf32"), (16, "fp16")):
        build(g, batch, precision=precision, write=tmp_path / precision)
        nvcc("-c", str(tmp_path / precision / "t" / "t.cu"), "-o", str(tmp_path / f"{precision}.o"))


def test_onnx_mobilenet_block_imports(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.expand = nn.Conv2d(4, 12, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(12)
            self.dw = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12, bias=False)
            self.bn2 = nn.BatchNorm2d(12)
            self.dil = nn.Conv2d(12, 8, 3, padding=2, dilation=2)
            self.pad = nn.ZeroPad2d((0, 1, 0, 1))

        def forward(self, x):
            x = nn.functional.relu6(self.bn1(self.expand(x)))
            x = nn.functional.relu6(self.bn2(self.dw(x)))
            return self.dil(x)
    text, _, graph = check_import(seeded(Block()), (4, 13, 11), tmp_path, do_constant_folding=False)
    assert ops_of(text) == ["conv", "batchnorm", "relu6", "conv", "batchnorm", "relu6", "conv"]
    assert "groups: 12" in text and "dilation: 2" in text
    assert [n.op for n in run_passes(graph).nodes] == ["input", "conv", "conv", "conv"]


@needs_gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("batch, precision, tol", [(3, "fp32", 1e-5), (16, "fp16", 5e-3)])
def test_forms_on_the_gpu_match_the_reference(form, batch, precision, tol):
    g = model(form)
    w = random_weights(g, seed=3)
    x = random_input(g, batch)
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=batch, precision=precision) as net:
        assert_close(net(x), want, tol)
