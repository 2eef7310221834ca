"""Channel rearrangements: `slice` (channels [start, stop): torch.chunk/split, x[:, a:b]; ONNX
Slice and Split on axis 1) and `channel_shuffle` (ShuffleNet's). The model language and its
errors, the reference against PyTorch (images and vectors), the planned executor, nvcc, the ONNX
import (ShuffleNetV2's blocks are in architectures.py) and what it refuses, and (marker gpu) the
GPU."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import squeezegen
from squeezegen.build import build
from squeezegen.errors import ModelError
from squeezegen.reference import ReferenceExecutor
from squeezegen.reference.planned import PlannedExecutor
from helpers import (assert_close, needs_gpu, random_input, random_weights, small_model,
                     torch_module, torch_run)

LAYERS = """
- {name: c, op: conv, out: 12, kernel: 3, pad: 1}
- {name: x1, op: slice, channels: [0, 5]}
- {name: x2, op: slice, channels: [5, 12], input: c}
- {name: b, op: conv, out: 7, kernel: 1, relu: true}
- {name: cat, op: concat, inputs: [x1, b]}
- {name: sh, op: channel_shuffle, groups: 3}
- {name: r, op: relu}
- {name: fc, op: linear, out: 6, input: c}
- {name: v, op: slice, channels: [2, 5]}
- {name: vs, op: channel_shuffle, groups: 3, input: fc}
"""


def model():
    return small_model((3, 7, 5), LAYERS, "[r, v, vs]", name="chnet")


def test_reference_and_planned_executor_match_pytorch():
    g = model()
    w = random_weights(g, seed=2)
    x = random_input(g, 3)
    want = torch_run(torch_module(g, w), x)
    for got, exp in zip(ReferenceExecutor(g, w)(x), want):
        assert_close(got, exp, 2e-6)
    result = build(g, 3, weights=w)
    for got, exp in zip(PlannedExecutor(result.fused, result.plan, w)(x), want):
        assert_close(got, exp, 2e-6)


def test_shuffle_permutes_channels_as_shufflenet_does():
    g = small_model((6, 1, 1), "- {name: s, op: channel_shuffle, groups: 2}", "s")
    x = np.arange(12, dtype=np.float32).reshape(2, 6, 1, 1)
    got = ReferenceExecutor(g, {})(x)
    assert got[0, :, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]


def test_generated_code_says_which_channel_each_copies():
    cu = build(model(), 3).output.files["chnet.cu"].decode()
    assert "input channel START + c at the same" in cu
    assert "(c % G) * (CI / G) + c / G" in cu and "// fused relu" in cu


@pytest.mark.parametrize("layer, message", [
    ("{name: s, op: slice, channels: [2, 2]}", "channels [2, 2) is not a non-empty range of the input's 4 channels"),
    ("{name: s, op: slice, channels: [0, 5]}", "not a non-empty range"),
    ("{name: s, op: slice}", "missing field 'channels'"),
    ("{name: s, op: channel_shuffle, groups: 3}", "groups 3 does not divide the 4 channels"),
])
def test_bad_fields_are_named_with_their_line(layer, message):
    with pytest.raises(ModelError) as info:
        small_model((4, 3, 3), f"- {layer}", "s")
    assert message in str(info.value) and "<test>:4: layer 's'" in str(info.value)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    build(model(), 3, write=tmp_path)
    nvcc("-c", str(tmp_path / "chnet" / "chnet.cu"), "-o", str(tmp_path / "ch.o"))


# ------------------------------------------------------------------ ONNX
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from test_onnx_import import check_import, export, ops_of, refusal, seeded  # noqa: E402

nn = torch.nn


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_split_and_channel_slices_import(opset, tmp_path):
    class Parts(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            a, b = torch.split(self.c(x), [3, 5], dim=1)
            return torch.cat([b[:, 1:4], torch.relu(a), b[:, -1:]], 1)
    text, _, _ = check_import(seeded(Parts()), (3, 7, 6), tmp_path, opset=opset)
    assert ops_of(text).count("slice") == 4, text
    assert "channels: [3, 8]" in text and "channels: [4, 5]" in text


def test_onnx_slices_of_the_batch_are_refused_and_of_rows_crop(tmp_path):
    """Rows and columns of an image: a `crop` (tests/test_pad.py checks the numbers); the batch:
    refused, naming the axis."""
    class Crop(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.c(x)[:, :, 1:3]

    class FirstImage(Crop):
        def forward(self, x):
            return self.c(x)[:1]
    text, _, _ = check_import(seeded(Crop()), (3, 7, 6), tmp_path)
    assert ops_of(text) == ["conv", "crop"] and "crop: [1, 0, 2, 0]" in text, text
    message = refusal(export(seeded(FirstImage()), (3, 7, 6), tmp_path / "c.onnx", batch=2))
    assert "(Slice): slices the batch (axis 0, 0..1 of 2)" in message, message


@needs_gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_channel_ops_on_the_gpu_match_the_reference(batch):
    g = model()
    w = random_weights(g, seed=5)
    x = random_input(g, batch)
    want = ReferenceExecutor(g, w)(x)
    with squeezegen.compile(g, w, batch=batch) as net:
        got = net(x)
    for a, b in zip(got, want):
        assert_close(a, b, 2e-6)
