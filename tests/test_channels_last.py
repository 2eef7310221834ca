"""ConvNeXt's channels-last stretches through the ONNX importer: x.permute(0, 2, 3, 1), then
LayerNorm over the channels (LayerNormalization at opset 17, the ReduceMean/Sub/Pow/Sqrt/Div
chain before), Linear layers over the channels (MatMul + Add: 1x1 convs), GELU and per-channel
scales, and the permute back, imported as layernorm, conv, gelu and affine layers; a ConvNeXt
block and a small ConvNeXt against PyTorch at opsets 13 and 17; what stays refused, in one line
naming the node."""
from __future__ import annotations

import numpy as np
import pytest

from squeezegen.passes import run_passes

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from test_onnx_import import check_import, export, ops_of, refusal, seeded  # noqa: E402
from architectures import ConvNeXt, CNBlock  # noqa: E402

nn = torch.nn


class TimmBlock(nn.Module):
    """The original ConvNeXt block: the layer scale (gamma) applied while channels-last."""

    def __init__(self, c):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(nn.functional.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("block", ["torchvision", "timm"])
def test_a_convnext_block_imports_and_matches_pytorch(block, opset, tmp_path):
    module = CNBlock(8, layer_scale=0.7) if block == "torchvision" else TimmBlock(8)
    text, weights, graph = check_import(seeded(module), (8, 9, 6), tmp_path, opset=opset)
    ops = ops_of(text)
    assert ops[:4] == ["conv", "layernorm", "conv", "gelu"], text
    assert ops.count("layernorm") == 1 and ops[-1] == "add", text
    layers = [n.op for n in run_passes(graph).nodes]
    assert layers == ["input", "conv", "layernorm", "conv", "conv"], layers   # gelu, scale, add fused


@pytest.mark.parametrize("opset", [13, 17])
def test_a_small_convnext_imports_and_matches_pytorch(opset, tmp_path):
    text, _, graph = check_import(seeded(ConvNeXt(widths=(8, 16), depths=(1, 2), classes=5)),
                                  (3, 32, 24), tmp_path, opset=opset,
                                  do_constant_folding=opset == 17)
    assert ops_of(text).count("layernorm") == 6, text
    assert "eps: 1.0e-06" in text


class OverImage(nn.Module):
    """nn.LayerNorm([C, H, W]), with its affine per channel (trained so) or per element."""

    def __init__(self, per_element=False):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 1)
        self.ln = nn.LayerNorm([4, 5, 6])
        seeded(self)
        with torch.no_grad():
            shape = (4, 5, 6) if per_element else (4, 1, 1)
            self.ln.weight.copy_(torch.linspace(0.5, 2, 4 * 5 * 6 if per_element else 4)
                                 .reshape(shape).expand(4, 5, 6))
            self.ln.bias.copy_(torch.linspace(-1, 1, 4).reshape(4, 1, 1).expand(4, 5, 6))

    def forward(self, x):
        return self.ln(self.c(x))


def test_a_layernorm_over_the_image_is_a_groupnorm_of_one_group(tmp_path):
    text, _, _ = check_import(OverImage(), (3, 5, 6), tmp_path, opset=17)
    assert ops_of(text) == ["conv", "groupnorm"] and "groups: 1" in text, text
    path = export(OverImage(per_element=True).eval(), (3, 5, 6), tmp_path / "ln.onnx", 17)
    message = refusal(path)
    assert "(LayerNormalization): the scale" in message and "varies over H and W" in message, \
        message


def test_a_layernorm_over_other_axes_is_refused(tmp_path):
    class OverRows(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)
            self.ln = nn.LayerNorm(6)

        def forward(self, x):
            return self.ln(self.c(x))
    path = export(seeded(OverRows()), (3, 5, 6), tmp_path / "ln.onnx", 17)
    message = refusal(path)
    assert "(LayerNormalization), attribute 'axis': a LayerNorm over axis -1" in message, message


@pytest.mark.parametrize("body, expect", [
    (lambda x: torch.softmax(x.permute(0, 2, 3, 1), 1).permute(0, 3, 1, 2),
     "(Softmax), attribute 'axis': a softmax over axis 1 of a channels-last tensor"),
    (lambda x: torch.cat([x.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1)], 1).permute(0, 3, 1, 2),
     "(Concat), attribute 'axis': concatenates channels-last tensors along axis 1"),
    (lambda x: x.permute(0, 2, 3, 1).amax(2, keepdim=True).permute(0, 3, 1, 2),
     "(ReduceMax), attribute 'axes': a ReduceMax of a channels-last tensor is imported only "
     "over its last axis (the channels) with keepdims, or over H and W, got axes [2]"),
    (lambda x: x.permute(0, 3, 2, 1), "attribute 'perm': perm [0, 3, 2, 1]"),
    (lambda x: (x + x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2),
     "(Add): adds a channels-last tensor (a permute(0, 2, 3, 1) of an image) and an N, C, H, W"),
])
def test_what_channels_last_cannot_do_is_refused_in_one_line(body, expect, tmp_path):
    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return body(self.c(x))
    from test_onnx_import import export
    path = export(seeded(Body()), (3, 4, 4), tmp_path / "cl.onnx", 17)
    message = refusal(path)
    assert expect in message and "\n" not in message, message


class ManualNorm(nn.Module):
    """A LayerNorm over the channels written out by hand; `reuse` also reads the root."""

    def __init__(self, reuse=False, eps=1e-5):
        super().__init__()
        self.c = nn.Conv2d(3, 5, 1)
        self.reuse, self.eps = reuse, eps

    def forward(self, x):
        y = self.c(x).permute(0, 2, 3, 1)
        d = y - y.mean(-1, keepdim=True)
        root = torch.sqrt(d.pow(2).mean(-1, keepdim=True) + self.eps)
        out = d / root
        return (out * root if self.reuse else out).permute(0, 3, 1, 2)


class ChannelGate(nn.Module):
    """A channel mean and max of a channels-last tensor, as a gate (CBAM's spatial attention
    written channels-last), broadcast over the channels; a mean over the pixels broadcast
    over them."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 5, 1)

        self.fc = nn.Linear(2, 5)

    def forward(self, x):
        y = self.c(x).permute(0, 2, 3, 1)
        gate = torch.sigmoid(y.mean(-1, keepdim=True)) + y.amax(-1, keepdim=True)
        y = y * self.fc(torch.cat([gate, gate * 2], -1))
        return (y * gate + y.mean((1, 2), keepdim=True)).permute(0, 3, 1, 2)


def test_a_hand_written_layernorm_imports_as_one_and_a_reused_step_is_refused(tmp_path):
    text, _, _ = check_import(seeded(ManualNorm()), (3, 4, 6), tmp_path, opset=13)
    assert ops_of(text) == ["conv", "layernorm"], text
    from test_onnx_import import export
    path = export(seeded(ManualNorm(reuse=True)), (3, 4, 6), tmp_path / "reuse.onnx", 13)
    assert "(Pow): Pow is imported only inside a LayerNorm" in refusal(path), refusal(path)


def test_channel_means_and_maxima_of_channels_last_tensors(tmp_path):
    text, _, _ = check_import(seeded(ChannelGate()), (3, 4, 6), tmp_path, opset=17)
    assert ops_of(text).count("reduce_channels") == 2 and "avgpool" in ops_of(text), text
    path = export(seeded(ManualNorm(eps=0.0)), (3, 4, 6), tmp_path / "eps.onnx", 13)
    assert "(Add): adds 0.0 to a LayerNorm's variance" in refusal(path)


def test_softmax_and_concat_over_the_channels_of_channels_last_tensors(tmp_path):
    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 2, 3, padding=1)
            self.fc = nn.Linear(6, 5)

        def forward(self, x):
            y = torch.cat([self.a(x).permute(0, 2, 3, 1), self.b(x).permute(0, 2, 3, 1)], -1)
            return torch.log_softmax(self.fc(y), -1).permute(0, 3, 1, 2)
    for opset in (13, 17):
        text, _, _ = check_import(seeded(Mixer()), (3, 5, 4), tmp_path, opset=opset)
        assert ops_of(text) == ["conv", "conv", "concat", "conv", "softmax"], text
        assert "log: true" in text


@pytest.mark.parametrize("opset", [13, 17])
def test_a_relu_after_a_layernorm_is_its_own_layer_which_the_passes_fuse(opset, tmp_path):
    class NormRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)
            self.ln = nn.LayerNorm(4)

        def forward(self, x):
            return torch.relu(self.ln(self.c(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    text, _, graph = check_import(seeded(NormRelu()), (3, 4, 5), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "layernorm", "relu"], text
    assert [str(s) for s in run_passes(graph)[graph.nodes[2].name].epilogue] == ["relu"]


class KerasLike(nn.Module):
    """A network written for N, H, W, C tensors, as Keras/TensorFlow exports are: the input
    scaled while channels-last, permuted to N, C, H, W for the convolutions, and the scores
    permuted back."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 5, 1)
        self.scale = nn.Parameter(torch.tensor([1 / 58.4, 1 / 57.1, 1 / 57.4]))

    def forward(self, x):
        x = (x * self.scale).permute(0, 3, 1, 2)
        return torch.softmax(self.c2(torch.relu(self.c1(x))).permute(0, 2, 3, 1), -1)


@pytest.mark.parametrize("opset", [13, 17])
def test_an_nhwc_network_imports_taking_and_giving_nchw_with_a_note(opset, tmp_path):
    import subprocess
    import sys
    import squeezegen
    from squeezegen.reference import ReferenceExecutor
    path = export(seeded(KerasLike()), (9, 7, 3), tmp_path / "keras.onnx", opset)
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "import", str(path), "-o",
                           str(tmp_path / "k.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "note: ONNX input 'x' is channels-last, [N, 9, 7, 3]; this network takes it as N, " \
           "C, H, W ([N, 3, 9, 7]: x.transpose(0, 3, 1, 2))." in proc.stdout, proc.stdout
    assert "note: ONNX output" in proc.stdout and "gives it as N, C, H, W" in proc.stdout
    graph = squeezegen.load_model(tmp_path / "k.yaml")
    assert graph.input.type.shape == (3, 9, 7)
    weights = squeezegen.load_weights(tmp_path / "k.npz")
    x = np.random.default_rng(0).uniform(0, 255, (2, 9, 7, 3)).astype(np.float32)
    with torch.no_grad():
        want = seeded(KerasLike())(torch.from_numpy(x)).numpy()
    got = ReferenceExecutor(graph, weights)(x.transpose(0, 3, 1, 2).copy())
    from helpers import assert_close
    assert_close(got.transpose(0, 2, 3, 1), want, 1e-5)


def test_a_relu_after_a_channels_last_linear_goes_into_its_conv(tmp_path):
    class LinearRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 6)

        def forward(self, x):
            return torch.relu(self.fc(self.c(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    text, _, _ = check_import(seeded(LinearRelu()), (3, 4, 5), tmp_path, opset=17)
    assert ops_of(text) == ["conv", "conv"] and "relu: true" in text, text
