"""resize: nearest and bilinear, by size or scale, in each coordinate mode, against PyTorch's
F.interpolate on odd shapes (the NumPy reference), the kernel, nvcc, ONNX Resize (with the
Shape/Slice/Concat chain in front of its sizes) and (marker gpu) the H200."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError
from squeezegen.reference import ReferenceExecutor
from helpers import assert_close, needs_gpu, random_input, small_model

# (YAML fields, F.interpolate keyword arguments)
CASES = [
    ("mode: bilinear, scale: 2", dict(scale_factor=2, mode="bilinear", align_corners=False)),
    ("mode: bilinear, scale: [1.5, 2.25]", dict(scale_factor=(1.5, 2.25), mode="bilinear",
                                                align_corners=False)),
    ("mode: bilinear, scale: 0.4", dict(scale_factor=0.4, mode="bilinear", align_corners=False)),
    ("mode: bilinear, size: [13, 4]", dict(size=(13, 4), mode="bilinear", align_corners=False)),
    ("mode: bilinear, size: [1, 1]", dict(size=(1, 1), mode="bilinear", align_corners=False)),
    ("mode: bilinear, size: [17, 23], coordinates: align_corners",
     dict(size=(17, 23), mode="bilinear", align_corners=True)),
    ("mode: bilinear, size: [1, 20], coordinates: align_corners",
     dict(size=(1, 20), mode="bilinear", align_corners=True)),
    ("mode: nearest, scale: 3", dict(scale_factor=3, mode="nearest")),
    ("mode: nearest, size: [11, 5]", dict(size=(11, 5), mode="nearest")),
    ("mode: nearest, scale: [1.7, 0.6]", dict(scale_factor=(1.7, 0.6), mode="nearest")),
    ("mode: nearest, scale: [1.1, 2]", dict(scale_factor=(1.1, 2), mode="nearest")),   # 7 -> 7, 9 -> 18
    ("mode: nearest, scale: [1.7, 0.6], coordinates: half_pixel",
     dict(scale_factor=(1.7, 0.6), mode="nearest-exact")),
    ("mode: nearest, size: [3, 30], coordinates: half_pixel", dict(size=(3, 30), mode="nearest-exact")),
]


def model(fields):
    return small_model((3, 7, 9), f"- {{name: r, op: resize, {fields}}}", "r")


@pytest.mark.parametrize("fields, kwargs", CASES, ids=[c[0] for c in CASES])
def test_reference_matches_f_interpolate(fields, kwargs):
    torch = pytest.importorskip("torch")
    g = model(fields)
    x = random_input(g, 3)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), **kwargs).numpy()
    assert_close(ReferenceExecutor(g, {})(x), want, 5e-7)


def test_asymmetric_and_pytorch_half_pixel_bilinear():
    """The ONNX modes PyTorch does not write: asymmetric is src = d * ratio; pytorch_half_pixel
    is half_pixel except on an axis of one output pixel."""
    x = np.arange(2 * 1 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4)
    g = small_model((1, 3, 4), "- {name: r, op: resize, mode: bilinear, scale: 2, "
                               "coordinates: asymmetric}", "r")
    y = ReferenceExecutor(g, {})(x)
    assert y[0, 0, 0, :8].tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3]
    g = small_model((1, 3, 4), "- {name: r, op: resize, mode: bilinear, size: [1, 4], "
                               "coordinates: pytorch_half_pixel}", "r")
    assert ReferenceExecutor(g, {})(x)[0, 0, 0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("fields, message", [
    ("mode: cubic, scale: 2", "field 'mode': must be one of nearest, bilinear, got 'cubic'"),
    ("mode: bilinear", "give exactly one of size and scale"),
    ("mode: bilinear, scale: 2, size: [3, 3]", "give exactly one of size and scale"),
    ("mode: nearest, scale: 2, coordinates: align_corners", "nearest resizing takes coordinates"),
    ("mode: bilinear, scale: 0.01", "the output would be 0x0"),
    ("mode: nearest, scale: 1.0e+9", "the output would be 7000000000x9000000000 (at most 1048576 a side)"),
    ("mode: bilinear, scale: [2, 2, 2]", "field 'scale': must be a positive number or a list [h, w] of two"),
])
def test_bad_fields_are_named(fields, message):
    with pytest.raises(ModelError) as err:
        model(fields)
    assert message in str(err.value), str(err.value)


def test_kernel_constants_are_float32_ratios():
    cu = build(model("mode: bilinear, size: [17, 23], coordinates: align_corners"), 2) \
        .output.files["t.cu"].decode()
    assert "constexpr float RH = 0.375f;" in cu and "constexpr float RW = 0.3636363744735718f;" in cu


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_every_case_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    layers = "\n".join(f"- {{name: r{i}, op: resize, input: input, {fields}}}"
                       for i, (fields, _) in enumerate(CASES))
    layers += ("\n- {name: a, op: resize, input: input, mode: bilinear, scale: 2, coordinates: asymmetric}"
               "\n- {name: b, op: resize, input: input, mode: bilinear, size: [1, 3], coordinates: pytorch_half_pixel}")
    outs = ", ".join([f"r{i}" for i in range(len(CASES))] + ["a", "b"])
    g = small_model((3, 7, 9), layers, f"[{outs}]")
    build(g, 3, write=tmp_path)
    nvcc("-c", str(tmp_path / "t" / "t.cu"), "-o", str(tmp_path / "t.o"))


def test_onnx_resize_imports_with_scales_and_folded_sizes(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, seeded
    nn, F = torch.nn, torch.nn.functional

    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.c(x)
            a = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            b = F.interpolate(y, size=x.shape[-2:], mode="nearest")       # Shape -> Slice -> Concat
            c = F.interpolate(a, size=(9, 13), mode="bilinear", align_corners=True)
            return torch.relu(a), b, c
    for opset in (13, 17):
        text, _, _ = check_import(seeded(Up()), (3, 5, 7), tmp_path, opset=opset)
        assert "{name: resize, op: resize, mode: bilinear, scale: 2.0}" in text, text
        assert "mode: bilinear, size: [9, 13], coordinates: align_corners" in text


@needs_gpu
@pytest.mark.parametrize("fields", [c[0] for c in CASES] + [
    "mode: bilinear, scale: 2, coordinates: asymmetric",
    "mode: bilinear, size: [1, 3], coordinates: pytorch_half_pixel"])
def test_on_the_gpu(fields):
    g = model(fields)
    x = random_input(g, 3)
    with squeezegen.compile(g, {}, batch=3) as net:
        assert_close(net(x), ReferenceExecutor(g, {})(x), 1e-6)


@pytest.mark.parametrize("op, opset, mode, scales, via_attribute", [
    ("Upsample", 7, "nearest", [1.0, 1.0, 2.0, 3.0], True),
    ("Upsample", 8, "linear", [1.0, 1.0, 2.0, 3.0], True),
    ("Upsample", 9, "linear", [1.0, 1.0, 2.0, 2.0], False),
    ("Upsample", 9, "nearest", [1.0, 1.0, 3.0, 2.0], False),
    ("Resize", 10, "linear", [1.0, 1.0, 2.0, 3.0], False),
    ("Resize", 10, "nearest", [1.0, 1.0, 2.0, 2.0], False),
])
def test_old_opset_upsample_imports_as_an_asymmetric_resize(op, opset, mode, scales,
                                                            via_attribute, tmp_path):
    """Upsample (opsets 7-9) and Resize-10 have Resize-11's asymmetric coordinates (nearest:
    floor): checked against ONNX's own reference evaluator running that Resize-11."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    from squeezegen.frontend.onnx_import import import_onnx
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3))
                                .astype(np.float32), "w")
    s = numpy_helper.from_array(np.array(scales, np.float32), "s")

    def model(up, inits, version):
        conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])
        g = helper.make_graph([conv, up], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [w] + inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", version)])
        m.ir_version = 7
        return m
    if via_attribute:
        old = model(helper.make_node(op, ["c"], ["y"], name="up", mode=mode, scales=scales), [],
                    opset)
    else:
        old = model(helper.make_node(op, ["c", "s"], ["y"], name="up", mode=mode), [s], opset)
    roi = numpy_helper.from_array(np.array([], np.float32), "roi")
    same = model(helper.make_node("Resize", ["c", "roi", "s"], ["y"], name="up", mode=mode,
                                  coordinate_transformation_mode="asymmetric",
                                  nearest_mode="floor"), [roi, s], 13)
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 4)).astype(np.float32)
    want = ReferenceEvaluator(same).run(None, {"x": x})[0]
    path = tmp_path / "up.onnx"
    onnx.save(old, str(path))
    text, weights = import_onnx(path)
    assert "coordinates: asymmetric" in text or mode == "nearest", text
    got = ReferenceExecutor(squeezegen.parse_model(text), weights)(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
