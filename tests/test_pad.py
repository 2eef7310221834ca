"""The `pad` op (PyTorch's ZeroPad2d/ConstantPad2d, ReflectionPad2d and ReplicationPad2d; ONNX
Pad's constant, reflect and edge modes) and its inverse `crop` (x[:, :, t:H-b, l:W-r]; ONNX
Slice of rows and columns): the model language and its errors, the reference against PyTorch
on odd shapes and asymmetric sides, the kernel (nvcc, on the host, fused activation and skip
add), the ONNX import of a CycleGAN-style generator block, of a zero pad before a pool and of
U-Net's crop before a skip concat, and (marker gpu) the GPU."""
from __future__ import annotations

import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from helpers import (assert_close, needs_gpu, random_input, random_weights, small_model,
                     torch_module, torch_run)
from host_kernels import COMPILER, run_on_host

FORMS = {
    "reflect": "{name: p, op: pad, pad: [2, 1, 3, 4], mode: reflect}",
    "replicate": "{name: p, op: pad, pad: [3, 7], mode: replicate}",
    "zeros": "{name: p, op: pad, pad: 2}",
    "constant": "{name: p, op: pad, pad: [0, 1, 2, 0], value: -1.5}",
    "crop": "{name: p, op: crop, crop: [1, 0, 1, 2]}",
    "crop_pair": "{name: p, op: crop, crop: [1, 1]}",
}


def model(form):
    return small_model((3, 5, 6), f"- {FORMS[form]}\n- {{name: r, op: tanh}}\n"
                                  "- {name: c, op: conv, out: 4, kernel: 3, groups: 1}", "[r, c]")


@pytest.mark.parametrize("form", FORMS)
def test_reference_matches_pytorch(form):
    g = model(form)
    w = random_weights(g, seed=2)
    x = random_input(g, 3)
    for got, want in zip(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x)):
        assert_close(got, want, 1e-6)


def test_crop_shapes_and_attributes():
    assert model("crop")["p"].type.shape == (3, 3, 4)
    assert dict(model("crop")["p"].attrs) == {"crop": (1, 0), "crop_end": (1, 2)}
    assert model("crop_pair")["p"].type.shape == (3, 3, 4)
    assert dict(model("crop_pair")["p"].attrs) == {"crop": (1, 1)}
    cu = build(model("crop"), 2).output.files["t.cu"].decode()
    assert "// p_tanh: crop, 3x5x6 -> 3x3x4 (batch 2)" in cu and "HO - PT <= HI" in cu


def test_shapes_attributes_and_the_fused_activation():
    assert model("reflect")["p"].type.shape == (3, 10, 11)
    assert dict(model("replicate")["p"].attrs) == {"pad": (3, 7), "mode": "replicate"}
    assert dict(model("constant")["p"].attrs) == {"pad": (0, 1), "pad_end": (2, 0),
                                                  "mode": "constant", "value": -1.5}
    assert [str(s) for s in run_passes(model("reflect"))["p"].epilogue] == ["tanh"]
    g = small_model((3, 5, 6), "- {name: p, op: pad, pad: 1, mode: reflect}\n"
                               "- {name: r, op: relu}", "r")
    assert [str(s) for s in run_passes(g)["p"].epilogue] == ["relu"]
    cu = build(g, 2).output.files["t.cu"].decode()
    assert "// p_relu: pad, 3x5x6 -> 3x7x8 (batch 2)" in cu
    assert "ih = ih < 0 ? -ih : (ih >= HI ? 2 * (HI - 1) - ih : ih);" in cu


@pytest.mark.parametrize("layer, message", [
    ("{name: p, op: pad, pad: [5, 0], mode: reflect}", "reflect padding 5, 0, 5, 0 (top, left, bottom, right) must be smaller than the 5x6 input"),
    ("{name: p, op: pad, pad: 1, mode: reflect, value: 2}", "'value' is for mode constant, not reflect"),
    ("{name: p, op: pad, pad: 1, mode: wrap}", "field 'mode': must be one of constant, reflect, replicate, got 'wrap'"),
    ("{name: p, op: pad}", "missing field 'pad'"),
    ("{name: p, op: pad, pad: [1, -1]}", "field 'pad'"),
    ("{name: p, op: pad, pad: 1, value: .inf}", "field 'value'"),
    ("{name: p, op: crop, crop: [2, 0, 3, 0]}", "cropping 2, 0, 3, 0 (top, left, bottom, right) leaves nothing of the 5x6 input"),
    ("{name: p, op: crop, crop: [0, -1]}", "field 'crop'"),
    ("{name: p, op: crop}", "missing field 'crop'"),
    ("{name: p, op: crop, crop: 1, mode: reflect}", "unknown field 'mode'"),
])
def test_bad_fields_are_named_with_their_line(layer, message):
    with pytest.raises(ModelError) as info:
        small_model((3, 5, 6), f"- {layer}", "p")
    assert message in str(info.value) and "<test>:4: layer 'p'" in str(info.value), info.value


@pytest.mark.skipif(COMPILER is None, reason="no C++ compiler")
@pytest.mark.parametrize("form", FORMS)
def test_the_kernel_on_the_host(form, tmp_path):
    """Each form, and a replicate pad of the same sides added to it (fused into its store); a
    crop, another crop to the same size."""
    other = {"reflect": "op: pad, pad: [2, 1, 3, 4], mode: replicate",
             "replicate": "op: pad, pad: [3, 7, 3, 7], mode: replicate",
             "zeros": "op: pad, pad: [2, 2, 2, 2], mode: replicate",
             "constant": "op: pad, pad: [0, 1, 2, 0], mode: replicate",
             "crop": "op: crop, crop: [0, 2, 2, 0]", "crop_pair": "op: crop, crop: [2, 0, 0, 2]"}
    g = small_model((3, 5, 6), f"- {{name: q, {other[form]}}}\n"
                               f"- {FORMS[form].replace('name: p,', 'name: p, input: input,')}\n"
                               "- {name: r, op: add, inputs: [p, q]}", "r")
    x = random_input(g, 3)
    (got,), stray, result = run_on_host(g, {}, x, tmp_path)
    assert stray == 0 and len(result.output.kernels) == 2
    assert_close(got, ReferenceExecutor(g, {})(x), 1e-6)


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="nvcc is not installed")
def test_every_form_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    layers = "\n".join("- " + FORMS[f].replace("name: p,", f"name: p{i}, input: input,")
                       for i, f in enumerate(FORMS))
    g = small_model((3, 5, 6), layers, "[" + ", ".join(f"p{i}" for i in range(len(FORMS))) + "]")
    build(g, 3, write=tmp_path)
    nvcc("-c", str(tmp_path / "t" / "t.cu"), "-o", str(tmp_path / "t.o"))


def test_onnx_padding_layers_import_and_match_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn = torch.nn

    class ResnetBlock(nn.Module):      # CycleGAN's generator block, and pads of the other kinds
        def __init__(self, c=4):
            super().__init__()
            self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3),
                                      nn.InstanceNorm2d(c), nn.ReLU(True),
                                      nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3),
                                      nn.InstanceNorm2d(c))
            self.edge = nn.Sequential(nn.ReplicationPad2d((1, 2, 0, 3)), nn.Conv2d(c, c, 2))
            self.zero = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2))
            self.const = nn.ConstantPad2d(1, 0.5)

        def forward(self, x):
            y = x + self.body(x)
            return self.zero(self.edge(y)), self.const(y)
    for opset in (13, 17):
        text, _, graph = check_import(seeded(ResnetBlock()), (4, 7, 6), tmp_path, opset=opset)
        assert ops_of(text).count("pad") == 5, text
        assert "mode: reflect" in text and "mode: replicate" in text and "value: 0.5" in text


def test_onnx_slices_of_rows_and_columns_import_as_crops(tmp_path):
    """U-Net's crop of the encoder's map to the upsampled one's size before the skip concat,
    and a slice of channels, rows and columns at once: one crop per Slice chain (PyTorch
    exports one Slice per axis; a crop of a crop that nothing else reads is one)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn = torch.nn

    class UNetStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(3, 6, 3)
            self.pool = nn.Conv2d(6, 6, 3, stride=2)
            self.up = nn.ConvTranspose2d(6, 6, 2, stride=2)
            self.out = nn.Conv2d(12, 5, 1)

        def forward(self, x):
            skip = torch.relu(self.down(x))
            up = self.up(torch.relu(self.pool(skip)))
            dh, dw = (skip.shape[2] - up.shape[2]) // 2, (skip.shape[3] - up.shape[3]) // 2
            crop = skip[:, :, dh:dh + up.shape[2], dw:dw + up.shape[3]]
            y = self.out(torch.cat([crop, up], 1))
            return y[:, 1:4, 1:-1, :5]
    for opset in (13, 17):
        text, weights, graph = check_import(seeded(UNetStep()), (3, 21, 26), tmp_path,
                                            opset=opset)
        assert ops_of(text).count("crop") == 2 and "crop: [0, 1, 1, 1]" in text, text
        assert "crop: [1, 0, 1, 17]" in text and "channels: [1, 4]" in text, text
    if COMPILER is not None:              # the crop writing into its slice of the concat
        x = random_input(graph, 2)
        (got,), stray, _ = run_on_host(graph, weights, x, tmp_path)
        assert stray == 0
        assert_close(got, ReferenceExecutor(graph, weights)(x), 1e-5)


def test_a_zero_pad_read_by_a_conv_still_folds_into_it(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn = torch.nn
    net = nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(3, 4, 3))
    text, _, _ = check_import(seeded(net), (3, 6, 5), tmp_path)
    assert ops_of(text) == ["conv"] and "pad: [2, 1, 1, 0]" in text, text


@needs_gpu
@pytest.mark.parametrize("form", FORMS)
def test_pad_on_the_gpu_matches_the_reference(form):
    g = model(form)
    w = random_weights(g, seed=5)
    x = random_input(g, 3)
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=3) as net:
        for a, b in zip(net(x), want):
            assert_close(a, b, 1e-5)
