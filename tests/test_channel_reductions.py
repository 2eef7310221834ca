"""reduce_channels (the mean, max or L2 norm over the channels of each pixel: x.mean(1,
keepdim=True), x.amax(1, keepdim=True), x.norm(dim=1, keepdim=True)) and add/mul/div of a
1 x H x W map broadcast over the channels: CBAM's spatial attention, F.normalize. The NumPy reference against PyTorch on odd shapes, the field's checks, the
broadcast operand read at its pixel in the generated code, nvcc, and the ONNX import of a CBAM
spatial gate. The GPU runs them in test_gpu.py (`OP_CASES`)."""
from __future__ import annotations

import numpy as np
import pytest

import squeezegen
from helpers import (assert_close, assert_compiles_with_nvcc, assert_layer_refused,
                     random_weights, small_model)
from test_codegen import needs_nvcc

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("mode", ["mean", "max", "l2"])
@pytest.mark.parametrize("shape", [(5, 4, 3), (1, 7, 2), (9, 1, 1)])
def test_reduce_channels_matches_torch(mode, shape):
    g = small_model(shape, f"- {{name: r, op: reduce_channels, mode: {mode}}}", "r")
    x = np.random.default_rng(len(shape)).normal(0, 3, (3,) + shape).astype(np.float32)
    got = squeezegen.reference(g, {})(x)
    t = torch.from_numpy(x)
    want = {"max": lambda: t.amax(1, keepdim=True), "mean": lambda: t.mean(1, keepdim=True),
            "l2": lambda: torch.linalg.vector_norm(t, 2, dim=1, keepdim=True)}[mode]().numpy()
    assert got.shape == (3, 1) + shape[1:]
    assert_close(got, want, 1e-6, what=f"reduce_channels {mode}")


@pytest.mark.parametrize("op", ["mul", "add", "div"])
def test_a_pixel_map_broadcasts_over_the_channels(op):
    inputs = "[c, s]" if op == "div" else "[s, c]"     # div: by the gate, in (0, 1)
    g = small_model((4, 5, 3), f"""
        - {{name: c, op: conv, out: 6, kernel: 1}}
        - {{name: m, op: reduce_channels, mode: max}}
        - {{name: s, op: sigmoid}}
        - {{name: g, op: {op}, inputs: {inputs}}}""", "g")
    w = random_weights(g, 2)
    x = np.random.default_rng(0).normal(size=(2, 4, 5, 3)).astype(np.float32)
    got = squeezegen.reference(g, w)(x)
    c = F.conv2d(torch.from_numpy(x), torch.from_numpy(w["c.weight"]),
                 torch.from_numpy(w["c.bias"]))
    gate = torch.sigmoid(c.amax(1, keepdim=True))
    want = {"mul": c * gate, "add": c + gate, "div": c / gate}[op].numpy()
    assert_close(got, want, 1e-6, what=f"{op} of a 1 x H x W map")
    from squeezegen.build import build
    source = build(g, 2).output.files["t.cu"]
    source = source.decode() if isinstance(source, bytes) else source
    symbol = {"mul": "*", "add": "+", "div": "/"}[op]  # the map at its pixel, the conv at
    first, second = ("pix", "r") if op != "div" else ("r", "pix")          # its element
    assert f"__ldg(x0 + n * X0_IMAGE + {first}) {symbol} __ldg(x1 + n * X1_IMAGE + {second})" \
        in source


@pytest.mark.parametrize("layer, message", [
    ("{name: r, op: reduce_channels}", "mode"),
    ("{name: r, op: reduce_channels, mode: sum}", "one of mean, max, l2"),
])
def test_bad_fields_are_refused_naming_them(layer, message):
    assert_layer_refused((4, 5, 6), layer, message)


def test_a_map_of_another_shape_is_refused():
    with pytest.raises(squeezegen.SqueezegenError, match="1 x H x W ones"):
        small_model((4, 5, 6), """
            - {name: p, op: maxpool, kernel: 2}
            - {name: r, op: reduce_channels, mode: mean}
            - {name: g, op: mul, inputs: [input, r]}""", "g")


@needs_nvcc
def test_the_kernels_compile_with_nvcc(tmp_path):
    g = small_model((6, 9, 7), """
        - {name: c, op: conv, out: 6, kernel: 3, pad: 1}
        - {name: a, op: reduce_channels, mode: mean}
        - {name: b, op: reduce_channels, input: c, mode: max}
        - {name: s, op: add, inputs: [a, b]}
        - {name: g, op: sigmoid}
        - {name: y, op: mul, inputs: [c, g]}
        - {name: l, op: reduce_channels, mode: l2}
        - {name: e, op: clip, min: 1.0e-12}
        - {name: z, op: div, inputs: [y, e]}""", "z")
    assert_compiles_with_nvcc(g, tmp_path, [(3, "fp32"), (1, "fp16")])
