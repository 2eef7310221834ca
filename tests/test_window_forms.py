"""Grouped and depthwise transposed convolutions (deconv `groups`, ConvTranspose2d(groups=...),
as in an FCN's learned per-class upsampling) and dilated max pools (maxpool `dilation`): the
model language and its errors, the NumPy reference against PyTorch on odd shapes, which kernel
runs them (deconv_direct, pool), what the passes may and may not do with them, nvcc in every
precision, ONNX import, and (marker gpu) the GPU."""
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

FORMS = {       # on a 6x11x9 input
    "depthwise_up": "{name: l, op: deconv, out: 6, kernel: 4, stride: 2, pad: 1, groups: 6}",
    "depthwise_x2": "{name: l, op: deconv, out: 12, kernel: [3, 5], stride: [3, 2], groups: 6, "
                    "bias: false}",
    "grouped": "{name: l, op: deconv, out: 4, kernel: [2, 3], stride: [2, 3], pad: [0, 1], "
               "output_padding: [1, 2], groups: 2}",
    "grouped_s1": "{name: l, op: deconv, out: 9, kernel: 3, pad: 1, groups: 3}",
    "pool_dilated": "{name: l, op: maxpool, kernel: 3, stride: 2, pad: 1, dilation: 2, "
                    "ceil_mode: false}",
    "pool_dilated_ceil": "{name: l, op: maxpool, kernel: [2, 3], stride: [3, 2], dilation: [3, 2]}",
    "pool_dilated_2x2": "{name: l, op: maxpool, kernel: 2, stride: 2, dilation: 2}",
}


def model(form, after="{name: r, op: relu}"):
    return small_model((6, 11, 9), f"- {FORMS[form]}\n- {after}", "r")


@pytest.mark.parametrize("form", FORMS)
def test_reference_matches_pytorch(form):
    g = model(form)
    w = random_weights(g, seed=3)
    x = random_input(g, 3)
    assert_close(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x), 1e-5)


def test_shapes_weights_and_summary():
    g = model("grouped")
    assert g["l"].type.shape == (4, (11 - 1) * 2 + 2 + 1, (9 - 1) * 3 - 2 + 3 + 2)
    assert dict(g["l"].attrs)["groups"] == 2
    assert random_weights(g)["l.weight"].shape == (6, 2, 2, 3)      # [C, out / groups, kh, kw]
    assert "g2" in format_summary(summarize(g))
    assert model("pool_dilated")["l"].type.shape == (6, 5, 4)         # reach 5: (11+2-5)/2+1
    assert dict(model("pool_dilated")["l"].attrs)["dilation"] == (2, 2)
    assert "dil 2" in format_summary(summarize(model("pool_dilated")))
    plain = small_model((6, 5, 5), "- {name: d, op: deconv, out: 2, kernel: 2, groups: 1}\n"
                                   "- {name: p, op: maxpool, kernel: 2, dilation: 1}", "p")
    assert "groups" not in plain["d"].attrs and "dilation" not in plain["p"].attrs


@pytest.mark.parametrize("form", FORMS)
def test_the_kernel_that_runs_it(form):
    out = build(model(form), 3)
    (kernel, ) = out.output.kernels
    deconv = FORMS[form].startswith("{name: l, op: deconv")
    assert kernel.template == ("deconv_direct.cu.j2" if deconv else "pool.cu.j2"), kernel.template
    assert [s.kind for s in out.fused["l"].epilogue] == ["relu"]
    cu = out.output.files["t.cu"].decode()
    assert ("const int ih = h0 + i * DH;" in cu) == (not deconv)


def test_no_pool_fuses_into_a_conv_when_dilated_and_no_batchnorm_folds_into_a_grouped_deconv():
    g = small_model((4, 8, 8), """
        - {name: c, op: conv, out: 4, kernel: 1}
        - {name: p, op: maxpool, kernel: 2, stride: 2, dilation: 2, ceil_mode: false}
        - {name: up, op: deconv, out: 8, kernel: 2, stride: 2, groups: 4}
        - {name: bn, op: batchnorm, relu: true}""", "bn")
    fused = run_passes(g)
    assert [n.op for n in fused.nodes] == ["input", "conv", "maxpool", "deconv"]
    assert [s.kind for s in fused["up"].epilogue] == ["batchnorm", "relu"]
    w = random_weights(g, seed=4)
    w["bn.running_mean"] += 0.5                    # a fold along the wrong axis would show
    w["bn.weight"][:] = range(1, 9)
    x = random_input(g, 2)
    want = torch_run(torch_module(g, w), x)
    assert_close(ReferenceExecutor(fused, w)(x), want, 1e-5)
    assert_close(ReferenceExecutor(g, w)(x), want, 1e-5)


@pytest.mark.parametrize("layer, message", [
    ("{name: l, op: deconv, out: 4, kernel: 2, groups: 4}", "groups 4 must divide the 6 input and 4 output channels"),
    ("{name: l, op: deconv, out: 6, kernel: 2, groups: 0}", "field 'groups': must be a positive integer"),
    ("{name: l, op: maxpool, kernel: 3, dilation: 0}", "field 'dilation': must be a positive integer"),
    ("{name: l, op: maxpool, kernel: 3, dilation: 6}", "kernel 3x3 dilated by 6x6 does not fit the 11x9 input with pad 0x0 (output would be 1x0)"),
    ("{name: l, op: maxpool, global: true, dilation: 2}", "'dilation' cannot be given with global: true"),
    ("{name: l, op: avgpool, kernel: 2, dilation: 2}", "unknown field 'dilation' for op avgpool"),
])
def test_bad_fields_are_named(layer, message):
    with pytest.raises(ModelError) as err:
        small_model((6, 11, 9), f"- {layer}", "l")
    assert message in str(err.value) and "layer 'l'" in str(err.value), str(err.value)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_every_form_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    layers = [FORMS[f].replace("name: l,", f"name: l{i}, input: input,")
              for i, f in enumerate(FORMS)]
    outs = ", ".join(f"l{i}" for i in range(len(FORMS)))
    g = small_model((6, 11, 9), "\n".join(f"- {line}" for line in layers), f"[{outs}]")
    for batch, precision in ((1, "fp32"), (16, "fp16")):
        build(g, batch, precision=precision, write=tmp_path / precision)
        nvcc("-c", str(tmp_path / precision / "t" / "t.cu"), "-o", str(tmp_path / f"{precision}.o"))


def test_onnx_grouped_conv_transpose_and_dilated_max_pool_import(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn = torch.nn

    class Net(nn.Module):          # a dilated pool, then per-class and grouped upsampling
        def __init__(self):
            super().__init__()
            self.score = nn.Conv2d(3, 6, 1)
            self.pool = nn.MaxPool2d(3, stride=1, padding=1, dilation=2)
            self.up = nn.ConvTranspose2d(6, 6, 4, stride=2, padding=1, groups=6, bias=False)
            self.bn = nn.BatchNorm2d(6)
            self.mix = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1,
                                          groups=2)

        def forward(self, x):
            return self.mix(torch.relu(self.bn(self.up(self.pool(self.score(x))))))
    for opset in (13, 17):
        text, _, graph = check_import(seeded(Net()), (3, 9, 7), tmp_path, opset=opset,
                                      do_constant_folding=False)
        assert ops_of(text) == ["conv", "maxpool", "deconv", "batchnorm", "deconv"], text
        assert "dilation: 2" in text and "groups: 6" in text and "groups: 2" in text
        assert [n.op for n in run_passes(graph).nodes] == ["input", "conv", "maxpool", "deconv",
                                                             "deconv"]


def test_onnx_dilated_average_pool_and_conv_transpose_stay_refused(tmp_path):
    pytest.importorskip("onnx")
    import numpy as np
    from onnx import helper
    from test_onnx_import import fvalue, init, onnx_model, refusal
    for node, message in (
            (helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[2, 2],
                              dilations=[2, 2]),
             "node 'ap' (AveragePool), attribute 'dilations': dilations [2, 2] are not supported"),
            (helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", dilations=[2, 2]),
             "node 'ct' (ConvTranspose), attribute 'dilations': dilations [2, 2] are not "
             "supported")):
        model = onnx_model([node], [fvalue("x", [1, 2, 6, 6])], [fvalue("y", None)],
                           [init("w", np.ones((2, 2, 2, 2)))])
        path = tmp_path / f"{node.name}.onnx"
        path.write_bytes(model.SerializeToString())
        assert message in refusal(path), refusal(path)


@needs_gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("batch, precision, tol", [(3, "fp32", 1e-5), (16, "fp16", 5e-3)])
def test_forms_on_the_gpu_match_the_reference(form, batch, precision, tol):
    g = model(form, "{name: r, op: hardswish}")
    w = random_weights(g, seed=3)
    x = random_input(g, batch)
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=batch, precision=precision) as net:
        assert_close(net(x), want, tol)
