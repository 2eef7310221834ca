"""ONNX import: what the networks of more_architectures.py needed, each checked against PyTorch
(and on the host, the generated kernels) or refused in one line naming the node, op and
attribute.

Gather of channels (GoogLeNet's and Inception-v3's transform_input, x[:, 0]; a BGR swap,
x[:, [2, 1, 0]]) and Slice with steps over the channels (x.flip(1), x[:, ::2]); an SE gate
whose Linear MLP reads two pools and adds them (CBAM's channel gate); learned parameters
prepared by Relu, ReduceSum, Softmax or Sigmoid before they scale a layer (EfficientDet's BiFPN
fusion); ceil_mode pools at opset 9, which PyTorch exports as pads larger at the end; and the
refusals: YOLOv5's Detect view and permute, ENet's MaxUnpool, SKNet's softmax over stacked
branches, local response normalisation.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from onnx import helper                                                   # noqa: E402
from test_onnx_gaps import on_host, saved                                 # noqa: E402
from test_onnx_import import check_import, ops_of, refusal, seeded        # noqa: E402

nn = torch.nn
F = torch.nn.functional


class Gathers(nn.Module):
    """transform_input's per-channel gather, scale and shift, then channels reordered."""

    def __init__(self, form):
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if self.form == "transform_input":
            x = torch.cat([torch.unsqueeze(x[:, i], 1) * s + b
                           for i, s, b in ((0, 0.458, -0.03), (1, 0.448, -0.088),
                                           (-1, 0.45, -0.188))], 1)
        elif self.form == "bgr":
            x = x[:, [2, 1, 0]]
        elif self.form == "flip":                   # a Slice with step -1 over the channels
            x = x.flip(1)
        elif self.form == "steps":
            x = torch.cat([x[:, ::2], x[:, 1::2]], 1)
        else:                                       # a run and a repeat: [0, 1, 1, 2]
            x = x[:, [0, 1, 1, 2]][:, 1:]
        return self.conv(x)


@pytest.mark.parametrize("form,ops", [
    ("transform_input", ["slice", "affine", "slice", "affine", "slice", "affine", "concat",
                         "conv"]),
    ("bgr", ["slice", "slice", "slice", "concat", "conv"]),
    ("flip", ["slice", "slice", "slice", "concat", "conv"]),
    ("steps", ["slice", "slice", "concat", "slice", "concat", "conv"]),
    ("runs", ["slice", "slice", "concat", "slice", "conv"])])
@pytest.mark.parametrize("opset", [13, 17])
def test_gathers_and_stepped_slices_of_channels_are_slices(form, ops, opset, tmp_path):
    text, weights, graph = check_import(seeded(Gathers(form)), (3, 9, 11), tmp_path,
                                        opset=opset)
    assert ops_of(text) == ops, text
    if opset == 13:
        x = np.random.default_rng(2).standard_normal((2, 3, 9, 11)).astype(np.float32)
        on_host(graph, weights, x, tmp_path)


@pytest.mark.parametrize("index,axis,needle", [
    (1, 2, "gathers axis 2 of a [N, 3, 5, 5] tensor; squeezegen gathers only the channels"),
    (3, 1, "within [-3, 2]")])
def test_other_gathers_are_refused(index, axis, needle, tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node("Constant", [], ["i"], name="c",
                              value=helper.make_tensor("v", onnx.TensorProto.INT64, [], [index])),
             helper.make_node("Gather", ["r", "i"], ["y"], name="n", axis=axis)]
    message = refusal(saved(tmp_path, nodes, [1, 3, 5, 5]))
    assert "node 'n' (Gather)" in message and needle in message and "\n" not in message, message


class ChannelGate(nn.Module):
    """CBAM's: one Linear MLP over the average and the max pool, added, sigmoid, expanded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(8, 2), nn.ReLU(), nn.Linear(2, 8))

    def forward(self, x):
        x = self.conv(x)
        gate = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(gate).unsqueeze(2).unsqueeze(3).expand_as(x)


@pytest.mark.parametrize("opset", [13, 17])
def test_a_gate_from_two_pools_through_one_linear_mlp_is_1x1_convs(opset, tmp_path):
    text, weights, graph = check_import(seeded(ChannelGate()), (3, 9, 8), tmp_path,
                                        opset=opset)
    assert "linear" not in ops_of(text) and ops_of(text).count("conv") == 5, text
    if opset == 13:
        x = np.random.default_rng(2).standard_normal((2, 3, 9, 8)).astype(np.float32)
        on_host(graph, weights, x, tmp_path)


class LearnedFusion(nn.Module):
    """Weights computed from parameters in the graph: BiFPN's relu(w) / (sum + eps), a
    softmax-normalised pair, a sigmoid gate and its complement."""

    def __init__(self, form):
        super().__init__()
        self.form = form
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.w = nn.Parameter(torch.tensor([0.9, -0.2, 0.4]))

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        if self.form == "relu_sum":
            w = F.relu(self.w)
            w = w / (torch.sum(w, dim=0) + 1e-4)
            return w[0] * a + w[1] * b + w[2] * F.relu(a)
        if self.form == "softmax":
            w = torch.softmax(self.w, dim=0)
            return w[0] * a + w[1] * b
        g = torch.sigmoid(self.w[0])
        return g * a + (1 - g) * b


@pytest.mark.parametrize("form", ["relu_sum", "softmax", "sigmoid"])
@pytest.mark.parametrize("opset", [13, 17])
def test_parameters_prepared_in_the_graph_are_folded(form, opset, tmp_path):
    text, _, _ = check_import(LearnedFusion(form).eval(), (3, 6, 7), tmp_path, opset=opset,
                              do_constant_folding=False)
    assert "affine" in ops_of(text), text


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                                  nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                                  nn.AvgPool2d(3, 2, 1, ceil_mode=True)])
def test_ceil_mode_pools_at_opset_9_are_ceil_mode_pools(pool, tmp_path):
    """Opset 9 has no ceil_mode: PyTorch pads the end instead (GoogLeNet's max pools, ResNet-D's
    average pools), and the importer reads that back as ceil_mode."""
    text, _, _ = check_import(seeded(nn.Sequential(nn.Conv2d(3, 4, 1), pool)), (3, 9, 10),
                              tmp_path, opset=9)
    assert "ceil_mode: true" in text, text


def test_end_pads_that_are_no_ceil_mode_are_refused(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                            strides=[2, 2], pads=[0, 0, 3, 3])
    message = refusal(saved(tmp_path, [node], [1, 3, 8, 8], opset=9))
    assert "node 'p' (MaxPool), attribute 'pads': asymmetric pads [0, 0, 3, 3]" in message


class DetectHead(nn.Module):
    """YOLOv5's Detect in export mode: view(bs, anchors, outputs, ny, nx).permute(0, 1, 3, 4,
    2), a 5-D output."""

    def __init__(self):
        super().__init__()
        self.m = nn.Conv2d(3, 3 * 7, 1)

    def forward(self, x):
        y = self.m(x)
        return y.view(y.shape[0], 3, 7, y.shape[2], y.shape[3]).permute(0, 1, 3, 4, 2)


class SelectiveKernel(nn.Module):
    """SKNet's selective kernel: branches stacked on a new axis, softmax over it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=2, dilation=2)

    def forward(self, x):
        feats = torch.stack([self.a(x), self.b(x)], dim=1)
        att = torch.softmax(feats.mean((3, 4), keepdim=True), dim=1)
        return (feats * att).sum(dim=1)


@pytest.mark.parametrize("module,needle", [
    (DetectHead, "(Transpose), attribute 'perm': perm [0, 1, 3, 4, 2] of a tensor "
                 "[N, 3, 7, 8, 8] is not supported"),
    (SelectiveKernel, "(Concat): concatenates reshaped tensors ([N, 1, 4, 8, 8], "
                      "[N, 1, 4, 8, 8])")])
def test_five_dimensional_heads_and_branch_softmaxes_are_refused_in_one_line(module, needle,
                                                                             tmp_path):
    from test_onnx_import import export
    path = export(seeded(module()), (3, 8, 8), tmp_path / "net.onnx", 17)
    message = refusal(path)
    assert needle in message and "\n" not in message, message


def test_max_unpool_is_refused_with_what_to_use_instead(tmp_path):
    """ENet's and SegNet's decoders; torch 2.13's TorchScript exporter does not export
    MaxUnpool2d at all, so the graph is built by hand."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node("MaxPool", ["r"], ["p", "i"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("MaxUnpool", ["p", "i"], ["y"], name="unpool",
                              kernel_shape=[2, 2], strides=[2, 2])]
    message = refusal(saved(tmp_path, nodes, [1, 3, 8, 8], out_shape=[1, 3, 8, 8]))
    assert "node 'unpool' (MaxUnpool): op MaxUnpool is not supported: max unpooling" in message
    assert "ConvTranspose" in message and "\n" not in message, message


@pytest.mark.parametrize("hand_built", [True, False])
def test_local_response_norm_is_refused_saying_so(hand_built, tmp_path):
    """The LRN op (Caffe conversions), and the If that PyTorch's nn.LocalResponseNorm exports."""
    if hand_built:
        nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
                 helper.make_node("LRN", ["r"], ["y"], name="n", size=5)]
        message = refusal(saved(tmp_path, nodes, [1, 8, 6, 6]))
        assert "node 'n' (LRN): op LRN is not supported: local response normalisation" in message
    else:
        from test_onnx_import import export
        module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.LocalResponseNorm(5))
        message = refusal(export(module, (3, 8, 8), tmp_path / "lrn.onnx"))
        assert "(If): op If is not supported: " in message and "LocalResponseNorm" in message
    assert "\n" not in message, message
