"""pixel_shuffle (PyTorch's nn.PixelShuffle, ONNX DepthToSpace in CRD mode) and its inverse
pixel_unshuffle (nn.PixelUnshuffle, exported as Reshape-Transpose-Reshape): the model language
and its errors, the reference against PyTorch on odd shapes, the kernel (nvcc, fused ReLU and
skip add), the ONNX import of an ESPCN-like super-resolution net and of an unshuffling encoder,
and (marker gpu) the GPU."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError
from squeezegen.passes import run_passes
from squeezegen.reference import ReferenceExecutor
from helpers import (assert_close, needs_gpu, random_input, random_weights, small_model,
                     torch_module, torch_run)

LAYERS = """
- {name: c, op: conv, out: 12, kernel: 3, pad: 1}
- {name: ps, op: pixel_shuffle, factor: 2}
- {name: a, op: relu}
- {name: c3, op: conv, out: 18, kernel: 1, input: c}
- {name: ps3, op: pixel_shuffle, factor: 3}
- {name: c4, op: conv, out: 12, kernel: 1, input: c}
- {name: ps4, op: pixel_shuffle, factor: 2}
- {name: sum, op: add, inputs: [ps4, a]}
- {name: un, op: pixel_unshuffle, factor: 3, input: ps3}
- {name: un2, op: pixel_unshuffle, factor: 2, input: a}
- {name: back, op: add, inputs: [un2, c4], relu: true}
"""


def model():
    return small_model((3, 7, 5), LAYERS, "[ps3, sum, un, back]", name="psnet")


def test_shapes_and_reference_match_pytorch_on_odd_shapes():
    g = model()
    assert g["ps"].type.shape == (3, 14, 10) and g["ps3"].type.shape == (2, 21, 15)
    assert g["un"].type.shape == (18, 7, 5) and g["back"].type.shape == (12, 7, 5)
    w = random_weights(g, seed=3)
    x = random_input(g, 3)
    for got, want in zip(ReferenceExecutor(g, w)(x), torch_run(torch_module(g, w), x)):
        assert_close(got, want, 2e-6)


def test_relu_and_add_are_fused_into_its_kernel_and_the_code_says_what_it_does():
    fused = run_passes(model())
    assert [str(s) for s in fused["ps"].epilogue] == ["relu"]
    assert [s.kind for s in fused["ps4"].epilogue] == ["add"]
    assert [str(s) if s.kind != "add" else s.kind for s in fused["un2"].epilogue] \
        == ["add", "relu"], fused["un2"].epilogue
    cu = build(model(), 3, weights=random_weights(model())).output.files["psnet.cu"].decode()
    assert "// ps_relu: pixel_shuffle, 12x7x5 -> 3x14x10 (batch 3)" in cu
    assert "const int ci = (c * R + oh % R) * R + ow % R;" in cu
    assert "// un: pixel_unshuffle, 2x21x15 -> 18x7x5 (batch 3)" in cu
    assert "const int ci = c / (R * R), ih = oh * R + c / R % R, iw = ow * R + c % R;" in cu


def test_unshuffle_undoes_shuffle_exactly():
    g = small_model((12, 4, 6), "- {name: ps, op: pixel_shuffle, factor: 2}\n"
                                "- {name: un, op: pixel_unshuffle, factor: 2}", "un")
    x = random_input(g, 3)
    np.testing.assert_array_equal(ReferenceExecutor(g, {})(x), x)


@pytest.mark.parametrize("layer, message", [
    ("{name: p, op: pixel_shuffle, factor: 2}", "factor 2 needs the channels (3) to be a multiple of 4"),
    ("{name: p, op: pixel_shuffle}", "missing field 'factor'"),
    ("{name: p, op: pixel_shuffle, factor: 0}", "field 'factor'"),
    ("{name: p, op: pixel_unshuffle, factor: 3}", "factor 3 needs the height and width (4x5) to "
                                                  "be multiples of 3"),
    ("{name: p, op: pixel_unshuffle}", "missing field 'factor'"),
])
def test_bad_fields_are_named_with_their_line(layer, message):
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        small_model((3, 4, 5) if "unshuffle" in layer else (3, 4, 4), f"- {layer}", "p")
    assert "<test>:4: layer 'p'" in str(info.value)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    build(model(), 3, write=tmp_path)
    nvcc("-c", str(tmp_path / "psnet" / "psnet.cu"), "-o", str(tmp_path / "ps.o"))


def test_onnx_pixel_shuffle_imports_and_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn = torch.nn

    class Espcn(nn.Module):            # ESPCN's shape: convs, then a sub-pixel upsampling
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.Tanh(),
                                      nn.Conv2d(8, 27, 3, padding=1))
            self.shuffle = nn.PixelShuffle(3)

        def forward(self, x):
            return torch.sigmoid(self.shuffle(self.body(x)))
    for opset in (13, 17):
        text, _, _ = check_import(seeded(Espcn()), (3, 7, 6), tmp_path, opset=opset)
        assert ops_of(text) == ["conv", "tanh", "conv", "pixel_shuffle", "sigmoid"], text
        assert "op: pixel_shuffle, factor: 3}" in text


def test_onnx_pixel_unshuffle_imports_and_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_onnx_import import check_import, ops_of, seeded
    nn = torch.nn

    class Unshuffler(nn.Module):       # a space-to-depth stem, as in restoration networks
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.down = nn.PixelUnshuffle(2)
            self.body = nn.Conv2d(16, 5, 1)

        def forward(self, x):
            return self.body(torch.relu(self.down(self.stem(x))))
    for opset in (13, 17):
        text, _, _ = check_import(seeded(Unshuffler()), (3, 10, 6), tmp_path, opset=opset)
        assert ops_of(text) == ["conv", "pixel_unshuffle", "relu", "conv"], text
        assert "op: pixel_unshuffle, factor: 2}" in text


def test_onnx_depth_to_space_in_dcr_mode_is_refused(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper
    from test_onnx_import import fvalue, init, onnx_model, refusal
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv")
    d2s = helper.make_node("DepthToSpace", ["c"], ["y"], name="d2s", blocksize=2)
    model = onnx_model([conv, d2s], [fvalue("x", [1, 3, 4, 4])], [fvalue("y", [1, 1, 8, 8])],
                       [init("w", np.ones((4, 3, 1, 1)))])
    path = tmp_path / "d2s.onnx"
    path.write_bytes(model.SerializeToString())
    message = refusal(path)
    assert "node 'd2s' (DepthToSpace), attribute 'mode': mode DCR is not supported" in message


@needs_gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_pixel_shuffle_on_the_gpu_matches_the_reference(batch):
    g = model()
    w = random_weights(g, seed=5)
    x = random_input(g, batch)
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=batch) as net:
        got = net(x)
    for a, b in zip(got, want):
        assert_close(a, b, 2e-6)
