"""ONNX import (squeezegen.frontend.onnx_import): PyTorch modules are exported to ONNX here (CPU,
torch's TorchScript exporter, opsets 11-17), imported into YAML + weights, and the NumPy
reference of the imported model is checked against the PyTorch module (fp32, max abs error
relative to the output's max magnitude <= 1e-5). Then every refusal: each names the node, its op
type and the attribute. Skipped without the onnx or torch packages.
"""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import squeezegen                                                         # noqa: E402
from squeezegen.errors import SqueezegenError                             # noqa: E402
from squeezegen.frontend.onnx_import import import_onnx, write_import     # noqa: E402
from squeezegen.frontend.schema import identifier_problem                 # noqa: E402
from squeezegen.reference import ReferenceExecutor                        # noqa: E402

from helpers import assert_close                                          # noqa: E402

from onnx import TensorProto, helper, numpy_helper                        # noqa: E402

nn = torch.nn
F = torch.nn.functional
TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from torch_models import LeNet, SqueezeSeg                                # noqa: E402


# ------------------------------------------------------------------ torchvision's SqueezeNet
# Written out as torchvision.models.squeezenet defines it (torchvision itself is not needed).
class Fire(nn.Module):
    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes):
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, version="1_0", num_classes=1000, dropout=0.5):
        super().__init__()
        self.num_classes = num_classes
        if version == "1_0":
            self.features = nn.Sequential(
                nn.Conv2d(3, 96, kernel_size=7, stride=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(96, 16, 64, 64),
                Fire(128, 16, 64, 64),
                Fire(128, 32, 128, 128),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(256, 32, 128, 128),
                Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(512, 64, 256, 256),
            )
        elif version == "1_1":
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=3, stride=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(64, 16, 64, 64),
                Fire(128, 16, 64, 64),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(128, 32, 128, 128),
                Fire(256, 32, 128, 128),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                Fire(512, 64, 256, 256),
            )
        else:
            raise ValueError(f"Unsupported SqueezeNet version {version}: 1_0 or 1_1 expected")
        final_conv = nn.Conv2d(512, self.num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


# ------------------------------------------------------------------ helpers
def seeded(module, seed=0):
    """`module` in eval mode with all parameters redrawn (non-zero biases, so that a bias mapped
    to the wrong layer shows)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=gen) - 0.5) * 0.4)
            else:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    return module.eval()


def export(module, shape, path, opset=13, batch=1, **kw):
    """torch.onnx.export (the TorchScript exporter; nothing is downloaded) of `module` on an
    input of `shape` (no batch)."""
    x = torch.zeros((batch,) + tuple(shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], **kw)
    return Path(path)


def check_import(module, shape, tmp_path, opset=13, batch=3, seed=1, name="net", **kw):
    """Export, import, run the reference on a random batch and compare with the module."""
    path = export(module, shape, tmp_path / f"{name}.onnx", opset, **kw)
    text, weights = import_onnx(path)
    graph = squeezegen.parse_model(text, f"{name}.yaml")
    x = np.random.default_rng(seed).standard_normal((batch,) + tuple(shape)).astype(np.float32)
    got = ReferenceExecutor(graph, weights)(x)
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(x))
    got = got if isinstance(got, tuple) else (got,)
    want = tuple(t.numpy() for t in want) if isinstance(want, tuple) else (want.numpy(),)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}: {g.shape} vs {w.shape}"
        assert_close(g, w, TOL, what=f"{name} output {i}")
    return text, weights, graph


def layer_lines(text):
    return [line for line in text.splitlines() if line.startswith("  - {")]


def ops_of(text):
    return [re.search(r"op: (\w+)", line).group(1) for line in layer_lines(text)]


def refusal(path) -> str:
    with pytest.raises(SqueezegenError) as info:
        import_onnx(path)
    return str(info.value)


def onnx_model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def fvalue(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# ------------------------------------------------------------------ whole models
@pytest.mark.parametrize("version,opset", [("1_0", 13), ("1_1", 17)])
def test_squeezenet_imports_with_fire_layers_and_matches_torch(version, opset, tmp_path):
    module = seeded(SqueezeNet(version), seed=3)
    text, weights, graph = check_import(module, (3, 224, 224), tmp_path, opset=opset, batch=2,
                                        name=f"squeezenet{version}")
    fires = {"1_0": [3, 4, 5, 7, 8, 9, 10, 12], "1_1": [3, 4, 6, 7, 9, 10, 11, 12]}[version]
    assert ops_of(text).count("fire") == 8
    assert [n for n, op in graph.layer_ops if op == "fire"] == [f"features_{i}" for i in fires]
    # the torchvision state_dict, renamed: features.3.squeeze.weight -> features_3.squeeze.weight
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    assert len(weights) == len(state)
    for key, value in state.items():
        parts = key.split(".")
        ours = "_".join(parts[:2]) + ("." + ".".join(parts[2:]) if len(parts) > 2 else "")
        np.testing.assert_array_equal(weights[ours], value, err_msg=key)
    assert graph.output_names == (graph.layer_ops[-1][0],)


def test_squeezenet1_0_import_has_the_structure_of_the_shipped_model(tmp_path):
    module = seeded(SqueezeNet("1_0"), seed=0)
    path = export(module, (3, 224, 224), tmp_path / "sq.onnx")
    text, _ = import_onnx(path)
    ours = squeezegen.parse_model(text)
    shipped = squeezegen.load_model(ROOT / "models" / "squeezenet1_0.yaml")
    # the shipped model ends with a softmax where the torchvision module flattens its output
    assert [op for _, op in ours.layer_ops] == [op for _, op in shipped.layer_ops][:-1] + \
        ["flatten"]
    assert [(n.op, n.attrs, n.type) for n in ours.nodes][:-1] == \
        [(n.op, n.attrs, n.type) for n in shipped.nodes][:-1]
    assert ours[ours.outputs[0]].type.shape == (1000,)        # torch's [N, 1000]


def test_squeezeseg_imports_with_its_own_names_and_matches_torch(tmp_path):
    module = seeded(SqueezeSeg(), seed=5)
    text, weights, graph = check_import(module, (3, 227, 227), tmp_path, batch=2,
                                        name="squeezeseg")
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    assert sorted(weights) == sorted(state)          # conv1, fire2.squeeze, ..., conv13
    for key, value in state.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    shipped = squeezegen.load_model(ROOT / "models" / "squeezeseg.yaml")
    assert sorted(op for _, op in graph.layer_ops) == sorted(op for _, op in shipped.layer_ops)
    assert ops_of(text).count("fire") == 8


def test_lenet_imports_and_matches_torch(tmp_path):
    module = seeded(LeNet(), seed=2)
    text, weights, graph = check_import(module, (1, 28, 28), tmp_path, name="lenet")
    shipped = squeezegen.load_model(ROOT / "models" / "lenet.yaml")
    assert [(n.op, n.attrs, n.type) for n in graph.nodes] == \
        [(n.op, n.attrs, n.type) for n in shipped.nodes]
    assert sorted(weights) == sorted(module.state_dict())


# ------------------------------------------------------------------ small models
class OddWindows(nn.Module):
    """Odd kernels, strides and pads; ceil-mode pools with pads; count_include_pad both ways."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, (3, 5), stride=(2, 1), padding=(1, 2), bias=False)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.conv2 = nn.Conv2d(5, 7, (1, 3), padding=(0, 1))
        self.pool2 = nn.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True)
        self.pool3 = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.pool4 = nn.MaxPool2d((2, 3), stride=(1, 2), ceil_mode=False)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        return self.pool4(self.pool3(x))


class Branches(nn.Module):
    """Add (+ fused relu), concat, a deconv with a relu after it, a conv read before and after
    its relu, a linear head with softmax, two outputs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 6, 3, padding=1)
        self.b = nn.Conv2d(4, 6, 1)
        self.c = nn.Conv2d(6, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(12, 5, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(5 * 17 * 13, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        s = F.relu(self.a(x) + self.b(x))             # add, relu fused
        pre = self.c(s)                              # read before its relu...
        cat = torch.cat([pre, F.relu(pre)], 1)       # ...and after it
        up = F.relu(self.up(cat))                    # deconv has no relu field: a relu layer
        y = F.relu(self.fc1(torch.flatten(up, 1)))
        return F.softmax(self.fc2(y), dim=1), up


class NotAFire(nn.Module):
    """A fire whose concat puts the 3x3 half first, and a real one: only one `fire`."""

    def __init__(self):
        super().__init__()
        self.swapped = Fire(4, 3, 5, 6)
        self.fire = Fire(11, 3, 4, 4)

    def forward(self, x):
        f = self.swapped
        s = f.squeeze_activation(f.squeeze(x))
        x = torch.cat([f.expand3x3_activation(f.expand3x3(s)),
                       f.expand1x1_activation(f.expand1x1(s))], 1)
        return self.fire(x)


class MatMulHead(nn.Module):
    """x @ W + b (MatMul + Add), x @ W (MatMul) and a dynamic-batch reshape to [N, -1]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.w1 = nn.Parameter(torch.randn(3 * 4 * 5, 7))
        self.b1 = nn.Parameter(torch.randn(7))
        self.w2 = nn.Parameter(torch.randn(7, 3))

    def forward(self, x):
        x = self.conv(x)
        x = x.reshape(x.shape[0], -1)
        return F.relu(x @ self.w1 + self.b1) @ self.w2


class VectorNet(nn.Module):
    """A [K] input: Gemm on a 2-D tensor, softmax over dim -1, dropout and identity no-ops."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 12)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        return F.softmax(self.fc2(self.drop(F.relu(self.fc1(x)))), dim=-1)


class GlobalPools(nn.Module):
    """AdaptiveMaxPool2d(1) (GlobalMaxPool) and AdaptiveAvgPool2d(1) + squeeze, a linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.gmax = nn.AdaptiveMaxPool2d(1)
        self.gavg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        cat = torch.cat([self.gmax(x), self.gavg(x)], 1)
        return self.fc(cat.squeeze(3).squeeze(2))


class MnistExample(nn.Module):
    """The network of PyTorch's MNIST example (examples/mnist/main.py), as users bring it: two
    convs, a max pool, dropouts, flatten, two linears and a log_softmax (LogSoftmax)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


class InstanceNorms(nn.Module):
    """InstanceNorm2d without and with its affine scale and shift (InstanceNormalization), then
    a constant scale and shift."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.plain = nn.InstanceNorm2d(5)
        self.scaled = nn.InstanceNorm2d(5, affine=True, eps=1e-3)

    def forward(self, x):                 # the constant scale and shift merge into the norm
        return self.scaled(F.relu(self.plain(self.conv(x)))) * 0.5 + 1.0


class GroupNorms(nn.Module):
    """GroupNorm of 4 groups and of one (a LayerNorm over C,H,W with per-channel affine), as
    PyTorch exports them: Reshape, InstanceNormalization, Reshape back, Mul, Add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.four = nn.GroupNorm(4, 8)
        self.one = nn.GroupNorm(1, 8, eps=1e-3)

    def forward(self, x):
        return self.one(F.relu(self.four(self.conv(x))))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: the channel mean and max, a 7x7 conv, a sigmoid gate that
    multiplies every channel (ReduceMean/ReduceMax over axis 1, a [N, 1, H, W] broadcast)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x):
        y = self.conv(x)
        pooled = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)
        return y * torch.sigmoid(self.spatial(pooled))


class UnkeptReductions(nn.Module):
    """Channel reductions without keepdim: an N x H x W mean unsqueezed back into a gate, and
    an N x H x W max flattened into a second output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(y.mean(1).unsqueeze(1)), torch.flatten(y.amax(1), 1)


class UnkeptBroadcast(nn.Module):
    def forward(self, x):
        return x + x.mean(1)          # [N, C, H, W] + [N, H, W]: NumPy's rules, not a pixel map


SMALL = {"odd_windows": (OddWindows, (3, 13, 11)), "branches": (Branches, (4, 17, 13)),
         "not_a_fire": (NotAFire, (4, 7, 6)), "matmul_head": (MatMulHead, (2, 6, 7)),
         "vector": (VectorNet, (20,)), "global_pools": (GlobalPools, (3, 11, 9)),
         "mnist_example": (MnistExample, (1, 28, 28)),
         "instance_norms": (InstanceNorms, (3, 9, 8)),
         "group_norms": (GroupNorms, (3, 10, 7)),
         "spatial_attention": (SpatialAttention, (3, 9, 8)),
         "unkept_reductions": (UnkeptReductions, (3, 7, 10))}


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_models_match_torch(name, opset, tmp_path):
    cls, shape = SMALL[name]
    kw = {}
    if name == "matmul_head":
        kw = dict(dynamic_axes={"x": {0: "batch"}})      # keeps Shape/Gather/Concat to fold
    check_import(seeded(cls(), seed=opset), shape, tmp_path, opset=opset, name=name, **kw)


def test_log_softmax_imports_as_softmax_log(tmp_path):
    text, _, _ = check_import(seeded(MnistExample()), (1, 28, 28), tmp_path, name="mnist")
    assert ops_of(text) == ["conv", "conv", "maxpool", "linear", "linear", "softmax"]
    assert "op: softmax, log: true}" in layer_lines(text)[-1]


def test_instance_norm_imports_as_groupnorm_with_a_group_per_channel(tmp_path):
    text, weights, _ = check_import(seeded(InstanceNorms()), (3, 9, 8), tmp_path, name="inorm")
    assert ops_of(text) == ["conv", "groupnorm", "relu", "groupnorm"]
    norms = [line for line in layer_lines(text) if "groupnorm" in line]
    assert "groups: 5" in norms[0] and "groups: 5, eps: 0.001" in norms[1]
    assert sum(k.endswith(".weight") for k in weights) == 3      # conv and both norms


def test_group_norm_imports_as_groupnorm_and_runs_as_one_kernel_each(tmp_path):
    from squeezegen.build import build
    text, _, graph = check_import(seeded(GroupNorms()), (3, 10, 7), tmp_path, name="gnorm")
    norms = [line for line in layer_lines(text) if "groupnorm" in line]
    assert "groups: 4" in norms[0] and "groups: 1, eps: 0.001" in norms[1]
    kernels = [k.name for k in build(graph, 2).output.kernels]
    assert kernels == ["conv", "four_instancenormalization_affine_relu",   # scale, shift and
                       "one_instancenormalization_affine"], kernels           # relu in the store


def test_spatial_attention_imports_as_channel_reductions_and_a_broadcast_mul(tmp_path):
    text, _, _ = check_import(seeded(SpatialAttention()), (3, 9, 8), tmp_path, name="cbam")
    assert ops_of(text) == ["conv", "reduce_channels", "reduce_channels", "concat", "conv",
                            "sigmoid", "mul"]
    assert [line.count("mode: mean") + 2 * line.count("mode: max")
            for line in layer_lines(text)[1:3]] == [1, 2]


def test_channel_reductions_without_keepdim_import_for_an_unsqueeze_or_a_flatten(tmp_path):
    text, _, _ = check_import(seeded(UnkeptReductions()), (3, 7, 10), tmp_path, name="unkept")
    assert ops_of(text) == ["conv", "reduce_channels", "sigmoid", "mul", "reduce_channels",
                            "flatten"]
    onnx_path = tmp_path / "broadcast.onnx"
    torch.onnx.export(UnkeptBroadcast().eval(), torch.randn(1, 3, 7, 10), str(onnx_path),
                      dynamo=False, opset_version=17)
    assert "broadcasting add of shapes [N, 3, 7, 10] and [N, 7, 10]" in refusal(onnx_path)


def test_small_model_layers_are_mapped_as_documented(tmp_path):
    text, _, graph = check_import(seeded(Branches()), (4, 17, 13), tmp_path, name="branches")
    assert ops_of(text) == ["conv", "conv", "add", "conv", "relu", "concat", "deconv", "relu",
                            "linear", "linear", "softmax"]
    lines = {re.search(r"name: (\w+)", l).group(1): l for l in layer_lines(text)}
    assert "relu: true" in lines["add"] and "relu: true" in lines["fc1"]
    assert "relu" not in lines["c"] and "relu" not in lines["fc2"]
    assert "inputs: [a, b]" in lines["add"] and "input: input" in lines["b"]
    assert re.search(r"inputs: \[c, relu(_\d+)?\]", lines["concat"])
    assert len(graph.output_names) == 2
    text, _, _ = check_import(seeded(NotAFire()), (4, 7, 6), tmp_path, name="nf")
    assert ops_of(text).count("fire") == 1
    assert "{name: fire, op: fire, squeeze: 3, expand1x1: 4, expand3x3: 4}" in text
    text, weights, _ = check_import(seeded(MatMulHead()), (2, 6, 7), tmp_path, name="mm")
    assert ops_of(text) == ["conv", "linear", "linear"]
    assert "relu: true" in layer_lines(text)[1] and "bias: false" in layer_lines(text)[2]
    text, _, _ = check_import(seeded(OddWindows()), (3, 13, 11), tmp_path, name="odd")
    assert "kernel: [3, 5], stride: [2, 1], pad: [1, 2], relu: true, bias: false" in text
    assert "op: avgpool, kernel: [3, 2], stride: [2, 1], pad: [1, 0], ceil_mode: true" in text


def _random_module(seed):
    """A random chain of conv / pool / residual-add / concat / deconv blocks and a head."""
    rng = np.random.default_rng(seed)
    c, h, w = int(rng.integers(1, 5)), int(rng.integers(12, 24)), int(rng.integers(12, 24))
    shape = (c, h, w)
    blocks = nn.ModuleList()
    x = torch.zeros((1,) + shape)
    kinds = []
    for _ in range(int(rng.integers(3, 7))):
        kind = rng.choice(["conv", "maxpool", "avgpool", "res", "cat", "deconv"])
        if kind in ("conv", "res", "cat"):
            kh, kw = (int(v) for v in rng.choice([1, 2, 3, 5], 2))
            ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if kind == "conv" else 1
            if kind != "conv":
                kh, kw, ph, pw = 3, 3, 1, 1
            block = nn.Conv2d(x.shape[1], int(rng.integers(1, 9)), (kh, kw), stride, (ph, pw),
                              bias=bool(rng.integers(0, 2)))
            if kind == "res":
                block = nn.ModuleList([block, nn.Conv2d(x.shape[1], block.out_channels, 1)])
        elif kind == "deconv":
            k, s = int(rng.integers(1, 4)), int(rng.integers(1, 3))
            block = nn.ConvTranspose2d(x.shape[1], int(rng.integers(1, 6)), k, s,
                                       int(rng.integers(0, (k - 1) // 2 + 1)))
        else:
            k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            pad = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
            stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            ceil = bool(rng.integers(0, 2))
            block = (nn.MaxPool2d(k, stride, pad, ceil_mode=ceil) if kind == "maxpool" else
                     nn.AvgPool2d(k, stride, pad, ceil_mode=ceil, count_include_pad=True))
        try:
            y = _apply(kind, block, x)
        except RuntimeError:                          # does not fit the current size: skip it
            continue
        if min(y.shape[2:]) < 1:
            continue
        blocks.append(block)
        kinds.append(kind)
        x = y
    head = nn.Linear(int(np.prod(x.shape[1:])), int(rng.integers(2, 7)))
    return _RandomNet(blocks, kinds, head, bool(rng.integers(0, 2))), shape


def _apply(kind, block, x):
    if kind == "res":
        return F.relu(block[0](x) + block[1](x))
    if kind == "cat":
        return torch.cat([x, F.relu(block(x))], 1)
    if kind == "conv":
        return F.relu(block(x))
    return block(x)


class _RandomNet(nn.Module):
    def __init__(self, blocks, kinds, head, softmax):
        super().__init__()
        self.blocks, self.kinds, self.head, self.softmax = blocks, kinds, head, softmax

    def forward(self, x):
        for kind, block in zip(self.kinds, self.blocks):
            x = _apply(kind, block, x)
        y = self.head(torch.flatten(x, 1))
        return F.softmax(y, dim=1) if self.softmax else y


@pytest.mark.parametrize("seed", range(8))
def test_random_models_match_torch(seed, tmp_path):
    module, shape = _random_module(seed)
    check_import(seeded(module, seed), shape, tmp_path, opset=(11, 13, 17)[seed % 3],
                 name=f"random{seed}")


# ------------------------------------------------------------------ names and files
def test_names_are_valid_unique_and_deterministic(tmp_path):
    w = np.ones((2, 2, 1, 1), np.float32)
    names = ["int", "input", "sg_conv", "9lives", "a/b.c-d", "", "dup", "dup", "x", "x_relu",
             "cudaConv", "max", "/features/features.3/Conv", "y" * 80]
    nodes, prev, inits = [], "in", []
    for i, name in enumerate(names):
        inits.append(init(f"w{i}", w))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"t{i}"], name=name))
        prev = f"t{i}"
        if name == "x":                               # x gets relu: true, which makes x_relu
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name="xr"))
            prev = f"r{i}"
    model = onnx_model(nodes, [fvalue("in", [1, 2, 3, 3])], [fvalue(prev, [1, 2, 3, 3])], inits)
    path = tmp_path / "9 odd-name.onnx"
    onnx.save(model, str(path))
    text, weights = import_onnx(path)
    layer_names = [re.search(r"name: (\w+)", l).group(1) for l in layer_lines(text)]
    assert len(layer_names) == len(names) and len(set(layer_names)) == len(names)
    for n in layer_names:
        assert identifier_problem(n) is None and n != "input", n
    assert "x_relu" not in layer_names                # layer x's relu is called x_relu
    assert layer_names[:5] == ["layer_int", "layer_input", "layer_sg_conv", "conv_9lives",
                               "a_b_c_d"]
    assert layer_names[6:8] == ["dup", "dup_1"] and layer_names[12] == "features_3"
    assert re.search(r"^name: (\w+)$", text, re.M).group(1) == "model_9_odd_name"
    graph = squeezegen.parse_model(text)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32)
    y = ReferenceExecutor(graph, weights)(x)
    want = x
    for name in names:                   # each 1x1 conv of ones puts c0 + c1 in both channels
        want = np.repeat(want.sum(1, keepdims=True), 2, 1)
        want = np.maximum(want, 0) if name == "x" else want
    assert_close(y, want, TOL)
    assert import_onnx(path)[0] == text


def test_yaml_is_readable_one_flow_mapping_per_layer(tmp_path):
    path = export(seeded(SqueezeNet("1_1")), (3, 64, 64), tmp_path / "squeezenet1_1.onnx")
    text, _ = import_onnx(path)
    lines = text.splitlines()
    assert lines[0].startswith("# Imported from squeezenet1_1.onnx")
    assert not any(l.startswith("# ONNX output") for l in lines)       # its shape: [N, 1000]
    assert re.search(r"op: flatten\} +# 1000$", text, re.M), text
    start = lines.index("layers:")
    body = lines[start + 1: lines.index(next(l for l in lines if l.startswith("output:")))]
    assert body and all(re.fullmatch(r"  - \{name: \w+, op: \w+.*\} +# [0-9x]+", l) for l in body)
    doc = yaml.safe_load(text)
    assert doc["name"] == "squeezenet1_1" and doc["input"] == {"shape": [3, 64, 64]}
    assert all(isinstance(layer, dict) for layer in doc["layers"])


def test_write_import_writes_both_files_atomically(tmp_path):
    module = seeded(LeNet(), seed=4)
    path = export(module, (1, 28, 28), tmp_path / "lenet.onnx")
    out = tmp_path / "models" / "mylenet.yaml"
    graph, weights = write_import(path, out)
    assert out.is_file() and out.with_suffix(".npz").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["mylenet.npz", "mylenet.yaml"]
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    got = squeezegen.reference(out, out.with_suffix(".npz"))(x)
    with torch.no_grad():
        assert_close(got, module(torch.from_numpy(x)).numpy(), TOL)
    assert out.read_text() == import_onnx(path)[0]
    other = tmp_path / "w" / "custom.npz"
    write_import(path, tmp_path / "b.yaml", other)
    assert sorted(np.load(other).files) == sorted(weights)


class Sine(nn.Module):
    """torch.sin: an op squeezegen has no layer for."""

    def forward(self, x):
        return torch.sin(x)


def test_failed_import_writes_nothing(tmp_path):
    path = export(nn.Sequential(nn.Conv2d(1, 2, 3), Sine()), (1, 8, 8), tmp_path / "s.onnx")
    with pytest.raises(SqueezegenError, match="Sin"):
        write_import(path, tmp_path / "out" / "s.yaml")
    assert not (tmp_path / "out").exists()


def test_missing_onnx_package_gives_the_install_hint(tmp_path, monkeypatch):
    path = export(LeNet(), (1, 28, 28), tmp_path / "l.onnx")
    for mod in [m for m in sys.modules if m == "onnx" or m.startswith("onnx.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "onnx", None)
    message = refusal(path)
    assert "ONNX import needs the onnx package" in message
    assert "pip install 'squeezegen[onnx]'" in message


# ------------------------------------------------------------------ refusals
class One(nn.Module):
    """`body` applied to x: its ONNX node is named /body/<Op>."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("body,op,attribute", [
    (nn.ConvTranspose2d(4, 4, 3, dilation=2), "ConvTranspose", "dilations"),
    (nn.AvgPool2d(3, padding=1), "AveragePool", "dilations"),
    (nn.Softmax(dim=2), "Softmax", "axis"),
])
def test_unsupported_attributes_are_refused_naming_node_op_and_attribute(body, op, attribute,
                                                                        tmp_path):
    path = export(One(body), (4 if op != "Conv" or attribute == "group" else 3, 9, 9),
                  tmp_path / "m.onnx")
    if op == "AveragePool":             # PyTorch has no dilated average pool: an edited export
        import onnx
        from onnx import helper
        m = onnx.load(str(path))
        m.graph.node[0].attribute.append(helper.make_attribute("dilations", [2, 2]))
        onnx.save(m, str(path))
    message = refusal(path)
    assert f"node '/body/{op}' ({op}), attribute '{attribute}'" in message, message
    assert "m.onnx" in message


@pytest.mark.parametrize("op,kind", [("MaxPool", "maxpool"), ("AveragePool", "avgpool")])
def test_asymmetric_pads_are_refused(op, kind, tmp_path):
    attrs = dict(pads=[0, 0, 1, 1])
    inits = [init("w", np.ones((2, 2, 3, 3)))] if op == "Conv" else []
    if op != "Conv":
        attrs.update(kernel_shape=[3, 3], count_include_pad=1) if op == "AveragePool" else \
            attrs.update(kernel_shape=[3, 3])
    node = helper.make_node(op, ["x"] + (["w"] if op == "Conv" else []), ["y"], name="asym",
                            **attrs)
    model = onnx_model([node], [fvalue("x", [1, 2, 8, 8])], [fvalue("y", None)], inits)
    onnx.save(model, str(tmp_path / "a.onnx"))
    message = refusal(tmp_path / "a.onnx")
    assert f"node 'asym' ({op}), attribute 'pads'" in message
    assert "asymmetric pads [0, 0, 1, 1]" in message and kind in message


def _saved(tmp_path, nodes, in_shape, inits=(), opset=13, out="y"):
    model = onnx_model(nodes, [fvalue("x", in_shape)], [fvalue(out, None)], inits, opset)
    onnx.save(model, str(tmp_path / "h.onnx"))
    return tmp_path / "h.onnx"


def test_hand_built_graph_of_the_less_common_forms(tmp_path):
    """Gemm with transB 0 and a [1, out] bias, Identity, Dropout (training_mode off), a Relu
    that stays a layer, opset-11 Softmax (axis 1 by default); conv with auto_pad VALID."""
    rng = np.random.default_rng(0)
    w, c = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((1, 4))
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="id"),
             helper.make_node("Gemm", ["i", "w", "c"], ["g"], name="fc", transB=0),
             helper.make_node("Dropout", ["g"], ["d"], name="drop", ratio=0.5),
             helper.make_node("Relu", ["d"], ["r"], name="act"),
             helper.make_node("Softmax", ["r"], ["y"], name="prob")]
    text, weights = import_onnx(_saved(tmp_path, nodes, [1, 6], [init("w", w), init("c", c)],
                                       opset=11))
    assert ops_of(text) == ["linear", "relu", "softmax"]
    x = rng.standard_normal((3, 6)).astype(np.float32)
    z = np.maximum(x @ w + c, 0)
    want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert_close(ReferenceExecutor(squeezegen.parse_model(text), weights)(x), want, TOL)
    k = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "k"], ["y"], name="valid", auto_pad="VALID")
    text, _ = import_onnx(_saved(tmp_path, [conv], [1, 3, 5, 4], [init("k", k)]))
    assert "{name: valid, op: conv, out: 2, kernel: 2, bias: false}" in text


def test_conv_padding_wider_than_half_the_kernel_is_imported(tmp_path):
    """Like PyTorch's Conv2d, squeezegen's conv takes any padding (pools are the ones limited)."""
    k = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "k"], ["y"], name="wide", pads=[2, 2, 2, 2])
    text, weights = import_onnx(_saved(tmp_path, [node], [1, 3, 6, 6], [init("k", k)]))
    assert "pad: 2" in text
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(k), padding=2)
    assert_close(ReferenceExecutor(squeezegen.parse_model(text), weights)(x), want.numpy(), TOL)


@pytest.mark.parametrize("make,op,attribute", [
    (lambda: helper.make_node("MaxPool", ["x"], ["y"], name="n", kernel_shape=[2, 2],
                              auto_pad="SAME_UPPER"), "MaxPool", "auto_pad"),    # pads 0 | 1
    (lambda: helper.make_node("Flatten", ["x"], ["y"], name="n", axis=2), "Flatten", "axis"),
    (lambda: helper.make_node("Relu", ["x"], ["y"], name="n", alpha=1.0), "Relu", "alpha"),
    (lambda: helper.make_node("MaxPool", ["x"], ["y", "idx"], name="n", kernel_shape=[2, 2]),
     "MaxPool", None),
])
def test_hand_built_refusals(make, op, attribute, tmp_path):
    k = init("k", np.ones((2, 3, 3, 3)))
    node = make()
    indices = op == "MaxPool" and attribute is None
    message = refusal(_saved(tmp_path, [node], [1, 3, 6, 6], [k], out="idx" if indices else "y"))
    expected = f"node 'n' ({op})" + (f", attribute '{attribute}'" if attribute else "")
    assert expected in message, message
    if indices:
        assert "Indices output" in message, message


@pytest.mark.parametrize("attrs,attribute", [(dict(alpha=2.0), "alpha"), (dict(beta=0.5), "beta"),
                                             (dict(transA=1), "transA")])
def test_gemm_scaling_is_refused(attrs, attribute, tmp_path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", **attrs)
    message = refusal(_saved(tmp_path, [node], [1, 4], [init("w", np.ones((3, 4)))]))
    assert f"node 'fc' (Gemm), attribute '{attribute}'" in message


class Plus(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) + 1.0


class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16)

    def forward(self, x):
        return self.lstm(x)[0]


@pytest.mark.parametrize("module,shape,node,op", [
    (One(Sine()), (3, 5, 5), "/body/Sin", "Sin"),
    (Lstm(), (1, 8), "/lstm/LSTM", "LSTM"),
])
def test_unsupported_ops_are_refused_with_the_supported_list(module, shape, node, op, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.zeros((5,) + shape if op == "LSTM" else (1,) + shape)
        torch.onnx.export(module, (x,), str(tmp_path / "u.onnx"), dynamo=False,
                          opset_version=13)
    message = refusal(tmp_path / "u.onnx")
    assert f"'{node}' ({op})" in message and "is not supported" in message, message
    assert "Conv, ConvTranspose, Relu, MaxPool, AveragePool" in message


class PadThenConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 0, 1, 0))
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(self.pad(x))


class ConvPoolNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.norm(F.max_pool2d(self.conv(x), 2))


class ConvNormRelu(ConvPoolNorm):
    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("fold", [True, False])
def test_a_zero_pad_before_a_conv_becomes_its_padding(opset, fold, tmp_path):
    """nn.ZeroPad2d reaches ONNX as Pad, its pads computed by ConstantOfShape, Slice, Transpose
    and friends (evaluated at import); the conv takes it as asymmetric padding."""
    text, _, _ = check_import(seeded(PadThenConv()), (3, 8, 8), tmp_path, opset=opset,
                              do_constant_folding=fold)
    assert ops_of(text) == ["conv"] and "pad: [1, 1, 0, 0]" in text, text


def test_a_pad_not_read_by_a_conv_is_a_pad_layer_and_cropping_or_wrapping_is_refused(tmp_path):
    class PadThenPool(nn.Module):
        def forward(self, x):
            return F.max_pool2d(F.pad(x, (1, 0, 1, 0)), 2)
    text, _, _ = check_import(PadThenPool(), (3, 8, 8), tmp_path)
    assert ops_of(text) == ["pad", "maxpool"] and "pad: [1, 1, 0, 0]" in text, text
    from onnx import helper
    for attrs, message in ((dict(mode="wrap"), "attribute 'mode': mode wrap padding is not "
                                               "supported (constant, reflect and edge are)"),
                           (dict(pads=[0, 0, -1, 0, 0, 0, 0, 0]), "negative pads (cropping)"),
                           (dict(pads=[0, 1, 0, 0, 0, 0, 0, 0]), "only H and W may be padded")):
        attrs = {"pads": [0, 0, 1, 1, 0, 0, 1, 1], **attrs}
        pad = helper.make_node("Pad", ["x"], ["y"], name="pad", **attrs)
        model = onnx_model([pad], [fvalue("x", [1, 2, 4, 4])], [fvalue("y", None)], [],
                           opset=10)
        path = tmp_path / "pad.onnx"
        path.write_bytes(model.SerializeToString())
        assert message in refusal(path), refusal(path)


def test_batchnorm_right_after_a_conv_is_folded_by_the_exporter(tmp_path):
    """As the README says: the eval-mode export folds it into the conv's weights."""
    module = ConvNormRelu().eval()
    with torch.no_grad():
        module.norm.running_mean.uniform_(-1, 1)
        module.norm.running_var.uniform_(0.5, 2)
        module.norm.weight.uniform_(0.5, 2)
    text, _, _ = check_import(module, (3, 8, 8), tmp_path)
    assert ops_of(text) == ["conv"] and "relu: true" in text, text


def test_batchnorm_after_a_pool_is_a_batchnorm_layer(tmp_path):
    module = ConvPoolNorm().eval()
    with torch.no_grad():
        module.norm.running_mean.uniform_(-1, 1)
        module.norm.running_var.uniform_(0.5, 2)
        module.norm.weight.uniform_(0.5, 2)
        module.norm.bias.uniform_(-1, 1)
    text, weights, _ = check_import(module, (3, 8, 8), tmp_path)
    assert ops_of(text) == ["conv", "maxpool", "batchnorm"], text
    assert set(weights) >= {"norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"}


class Activations(nn.Module):
    """Every activation the importer maps, each after a conv (fused there) and one alone."""
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4 if i else 3, 4, 3, padding=1) for i in range(7))
        self.acts = nn.ModuleList([nn.ReLU6(), nn.Hardswish(), nn.SiLU(), nn.Sigmoid(),
                                   nn.Tanh(), nn.LeakyReLU(0.2), nn.Hardsigmoid()])

    def forward(self, x):
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(x))
        return torch.clamp(F.max_pool2d(x, 2), -0.25, 0.75)


@pytest.mark.parametrize("opset", [13, 17])
def test_activations_import_and_match_torch(opset, tmp_path):
    text, _, graph = check_import(seeded(Activations()), (3, 9, 7), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "relu6", "conv", "hardswish", "conv", "silu", "conv",
                            "sigmoid", "conv", "tanh", "conv", "leaky_relu", "conv",
                            "hardsigmoid", "maxpool", "clip"], text
    assert "negative_slope: 0.2" in text and "min: -0.25, max: 0.75" in text
    fused = squeezegen.passes.run_passes(graph)
    assert [n.op for n in fused.nodes].count("conv") == 7 and len(fused.nodes) == 9   # clip: in the pool


class MeanMax(nn.Module):
    """An SE gate from x.mean((2, 3), keepdim=True) and a head on x.amax((-2, -1)): ReduceMean
    and ReduceMax over H and W are the global pools."""
    def __init__(self):
        super().__init__()
        self.c, self.fc, self.lin = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        y = self.c(x)
        y = y * torch.sigmoid(self.fc(y.mean((2, 3), keepdim=True)))
        return self.lin(y.amax((-2, -1)))


@pytest.mark.parametrize("opset", [13, 17])
def test_reductions_over_the_pixels_are_global_pools(opset, tmp_path):
    text, _, _ = check_import(seeded(MeanMax()), (3, 9, 7), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "avgpool", "conv", "sigmoid", "mul", "maxpool", "linear"]
    assert text.count("global: true") == 2, text


class UNetUp(nn.Module):
    """A decoder step as U-Nets write it: ConvTranspose2d(3, stride 2, padding 1,
    output_padding 1) doubles the size exactly, then a concat with the skip."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 3, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(6, 2, 2, stride=(2, 1), output_padding=(1, 0))

    def forward(self, x):
        y = torch.cat([x, self.up(torch.relu(self.down(x)))], 1)
        return self.up2(y)


@pytest.mark.parametrize("opset", [13, 17])
def test_conv_transpose_output_padding_imports_and_matches_torch(opset, tmp_path):
    text, _, graph = check_import(seeded(UNetUp()), (3, 10, 8), tmp_path, opset=opset)
    assert "{name: up, op: deconv, out: 3, kernel: 3, stride: 2, pad: 1, output_padding: 1}" \
        in text, text
    assert "output_padding: [1, 0]" in text
    assert graph["up2"].type.shape == (2, 21, 9)


def test_add_of_a_constant_after_a_conv_is_an_affine_that_folds(tmp_path):
    text, _, graph = check_import(seeded(Plus()), (3, 6, 6), tmp_path)
    assert ops_of(text) == ["conv", "affine"], text
    from squeezegen.passes import run_passes
    assert [n.op for n in run_passes(graph).nodes] == ["input", "conv"]


@pytest.mark.parametrize("forward,needle", [
    (lambda m, x: m.conv(x) + F.avg_pool2d(m.conv(x), (4, 1)), "broadcasting"),
    (lambda m, x: torch.cat([m.conv(x), m.conv(x)], 2), "attribute 'axis'"),
    (lambda m, x: m.conv(x).reshape(x.shape[0], 4, -1).softmax(1), "reshaped to [N, 4, 16]"),
    (lambda m, x: m.conv(x.reshape(x.shape[0], 3, 4, 9)), "reshaped to [N, 3, 4, 9]"),
    (lambda m, x: m.conv(x).reshape(4, -1), "does not keep the batch dimension"),
])
def test_inexpressible_graphs_are_refused(forward, needle, tmp_path):
    class M(Plus):
        def forward(self, x):
            return forward(self, x)
    message = refusal(export(M(), (3, 6, 6), tmp_path / "m.onnx"))
    assert needle in message and "node '/" in message, message


def test_dynamic_height_is_refused(tmp_path):
    path = export(LeNet(), (1, 28, 28), tmp_path / "d.onnx",
                  dynamic_axes={"x": {0: "batch", 2: "height"}})
    message = refusal(path)
    assert "input 'x' has a dynamic H dimension ('height')" in message


def test_declared_output_shape_that_squeezegen_would_not_compute_is_refused(tmp_path):
    # ceil mode, n=8, k=2, s=3, p=1: PyTorch (and squeezegen) give 3, dropping the last window,
    # which starts in the padding; ONNX's shape inference keeps it (4): both are taken
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                            strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1)
    for declared, ok in (([1, 2, 3, 3], True), ([1, 2, 4, 4], True), ([1, 2, 4, 3], False),
                         ([1, 2, 5, 5], False)):
        onnx.save(onnx_model([node], [fvalue("x", [1, 2, 8, 8])], [fvalue("y", declared)]),
                  str(tmp_path / "o.onnx"))
        if ok:
            assert "ceil_mode: true" in import_onnx(tmp_path / "o.onnx")[0]
        else:
            assert f"declares {declared}" in refusal(tmp_path / "o.onnx")


def _external_model(tmp_path):
    w = np.random.default_rng(0).standard_normal((3, 2, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    model = onnx_model([node], [fvalue("x", [1, 2, 5, 5])], [fvalue("y", [1, 3, 5, 5])],
                       [init("w", w)])
    folder = tmp_path / "m"
    (folder / "data").mkdir(parents=True)
    onnx.save_model(model, str(folder / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="data/w.bin", size_threshold=0)
    return folder / "ext.onnx", w


def _relocate(path, location):
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(model, str(path))


def test_external_data_inside_the_folder_is_read(tmp_path):
    path, w = _external_model(tmp_path)
    text, weights = import_onnx(path)
    np.testing.assert_array_equal(weights["conv.weight"], w)
    assert "{name: conv, op: conv, out: 3, kernel: 3, pad: 1, bias: false}" in text


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_external_data_leaving_the_folder_is_refused(where, tmp_path):
    path, _ = _external_model(tmp_path)
    data = path.parent / "data" / "w.bin"
    if where == "parent":
        data.rename(tmp_path / "w.bin")
        _relocate(path, "../w.bin")
    elif where == "absolute":
        _relocate(path, str(data.resolve()))
    else:
        data.rename(tmp_path / "w.bin")
        (path.parent / "data" / "w.bin").symlink_to(tmp_path / "w.bin")
    message = refusal(path)
    assert "tensor 'w': external data location" in message
    assert "outside the model's folder" in message or "leaves the model's folder" in message


# ------------------------------------------------------------------ the generated CUDA (GPU)
@pytest.mark.gpu
def test_imported_squeezenet1_1_cuda_matches_torch(tmp_path):
    """The imported SqueezeNet 1.1, built and run on the GPU, against PyTorch on the CPU
    (fp32; tolerance 1e-4 as in test_gpu.py)."""
    from squeezegen.runtime.network import GPUError, cuda    # a broken runtime fails, never skips
    try:
        cuda()
    except GPUError as exc:
        pytest.skip(f"no GPU: {exc}")
    module = seeded(SqueezeNet("1_1"), seed=11)
    text, weights = import_onnx(export(module, (3, 224, 224), tmp_path / "squeezenet1_1.onnx"))
    graph = squeezegen.parse_model(text)
    x = np.random.default_rng(3).standard_normal((4, 3, 224, 224)).astype(np.float32)
    with squeezegen.compile(graph, weights, batch=4) as net:
        got = net(x)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    assert_close(got.reshape(want.shape), want, 1e-4, what="cuda vs torch")
    assert_close(got, ReferenceExecutor(graph, weights)(x), 1e-4, what="cuda vs reference")


def test_corrupted_onnx_files_fail_cleanly(tmp_path):
    """Random byte damage and truncation: a SqueezegenError or a valid import, nothing else."""
    import random
    from squeezegen.errors import SqueezegenError
    path = tmp_path / "lenet.onnx"
    export(LeNet().eval(), (1, 28, 28), path)
    good = path.read_bytes()
    rng = random.Random(3)
    errors = 0
    for trial in range(120):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if trial % 4 == 0:
            data = data[: rng.randrange(len(data))]
        bad = tmp_path / f"bad{trial}.onnx"
        bad.write_bytes(bytes(data))
        try:
            import_onnx(bad)
        except SqueezegenError as exc:
            assert "\n" not in str(exc)
            errors += 1
    assert errors > 20


def test_conv_transpose_with_negative_output_padding_is_refused_at_the_node(tmp_path):
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[2, 2],
                            output_padding=[-1, -1])
    model = onnx_model([node], [fvalue("x", [1, 2, 5, 5])], [fvalue("y", [1, 3, 9, 9])],
                       [init("w", np.ones((2, 3, 3, 3)))])
    path = tmp_path / "neg.onnx"
    path.write_bytes(model.SerializeToString())
    message = refusal(path)
    assert "node 'up' (ConvTranspose), attribute 'output_padding'" in message, message
    assert "non-negative" in message


def _resize_scales(values):
    rois, scales = init("roi", np.zeros(0)), init("scales", values)
    return ([helper.make_node("Resize", ["x", "roi", "scales"], ["y"], name="n", mode="nearest")],
            [rois, scales])


@pytest.mark.parametrize("case", ["weight-nan", "weight-beyond-float32", "maxpool-kernel-0",
                                  "avgpool-kernel-negative",
                                  "leaky-slope-nan", "resize-scale-nan", "resize-scale-inf",
                                  "depth-to-space-0", "batchnorm-negative-variance"])
def test_hostile_values_are_refused_at_their_node(case, tmp_path):
    """A value of the ONNX model that squeezegen cannot take is the model's fault: the error
    names the node and its op, never 'a squeezegen bug', never an internal error."""
    k = np.ones((2, 3, 3, 3), np.float32)
    channels = [init(name, np.ones(3) if name != "v" else -np.ones(3))
                for name in ("s", "b", "m", "v")]
    nodes, inits, op = {
        "weight-nan": ([helper.make_node("Conv", ["x", "k"], ["y"], name="n")],
                       [init("k", np.where(k > 0, np.nan, 0))], "Conv"),
        "weight-beyond-float32": (
            [helper.make_node("Conv", ["x", "k"], ["y"], name="n")],
            [numpy_helper.from_array(np.full((2, 3, 3, 3), 1e300), "k")], "Conv"),
        "maxpool-kernel-0": ([helper.make_node("MaxPool", ["x"], ["y"], name="n",
                                               kernel_shape=[0, 0])], [], "MaxPool"),
        "avgpool-kernel-negative": ([helper.make_node("AveragePool", ["x"], ["y"], name="n",
                                                      kernel_shape=[-2, 2])], [], "AveragePool"),
        "leaky-slope-nan": ([helper.make_node("LeakyRelu", ["x"], ["y"], name="n",
                                              alpha=float("nan"))], [], "LeakyRelu"),
        "resize-scale-nan": (*_resize_scales([1, 1, np.nan, 2]), "Resize"),
        "resize-scale-inf": (*_resize_scales([1, 1, np.inf, 2]), "Resize"),
        "depth-to-space-0": ([helper.make_node("DepthToSpace", ["x"], ["y"], name="n",
                                               blocksize=0, mode="CRD")], [], "DepthToSpace"),
        "batchnorm-negative-variance": (
            [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="n")],
            channels, "BatchNormalization"),
    }[case]
    message = refusal(_saved(tmp_path, nodes, [1, 3, 6, 6], inits, opset=13))
    assert f"node 'n' ({op})" in message, message
    assert "bug" not in message and "\n" not in message, message
    if case == "batchnorm-negative-variance":
        assert "running_var" in message, message


class Gelus(nn.Module):
    """F.gelu both ways: before opset 20 the exporter writes them out of Erf / Tanh, Mul and Add
    nodes (and x * x for the cube of the tanh form), which the importer matches back."""
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return F.gelu(self.b(F.gelu(self.a(x), approximate="tanh")))


@pytest.mark.parametrize("opset", [13, 17])
def test_gelu_in_both_forms_imports_as_one_layer_and_matches_torch(opset, tmp_path):
    text, _, _ = check_import(seeded(Gelus()), (3, 9, 7), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "gelu", "conv", "gelu"], text
    assert "approximate: tanh" in text and text.count("approximate") == 1, text


class FlatAndNot(nn.Module):
    def __init__(self, flipped):
        super().__init__()
        self.c, self.flipped = nn.Conv2d(3, 4, 3), flipped

    def forward(self, x):
        y = self.c(x)
        return (torch.flatten(y, 1), y) if self.flipped else (y, torch.flatten(y, 1))


@pytest.mark.parametrize("flipped", [False, True])
def test_an_output_and_its_flattening_are_two_outputs_in_either_order(flipped, tmp_path):
    module = seeded(FlatAndNot(flipped))
    text, _, graph = check_import(module, (3, 6, 5), tmp_path)
    assert ops_of(text) == ["conv", "flatten"] and len(graph.outputs) == 2, text


class OnFeatures(nn.Module):
    """Ops on the features of a flattened C,H,W image (H*W > 1): a softmax over all of them, a
    constant per feature, BatchNorm1d; and BatchNorm1d on a global pool's vector (C x 1 x 1)."""
    def __init__(self, kind):
        super().__init__()
        self.kind, self.conv = kind, nn.Conv2d(3, 4, 3)
        self.w = nn.Parameter(torch.randn(4 * 4 * 3))
        self.bn, self.bn_gap = nn.BatchNorm1d(48), nn.BatchNorm1d(4)
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        y = self.conv(x)
        f = torch.flatten(y, 1)
        if self.kind == "softmax":
            return f.softmax(1)
        if self.kind == "per-feature":
            return f * self.w + 1.0
        if self.kind == "batchnorm1d":
            return self.fc(self.bn(f)), self.fc(f)
        return self.bn_gap(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("kind,ops", [
    ("softmax", ["conv", "flatten", "softmax"]),
    ("per-feature", ["conv", "flatten", "affine"]),
    ("batchnorm1d", ["conv", "flatten", "batchnorm", "linear", "linear"]),
    ("gap-batchnorm1d", ["conv", "avgpool", "batchnorm", "flatten"]),
])
def test_ops_on_the_features_of_a_flattened_image_get_a_flatten_layer(kind, ops, opset,
                                                                       tmp_path):
    module = seeded(OnFeatures(kind))
    with torch.no_grad():
        for bn in (module.bn, module.bn_gap):
            bn.running_var.uniform_(0.5, 1.5)
            bn.running_mean.normal_()
    text, _, _ = check_import(module, (3, 6, 5), tmp_path, opset=opset,
                              do_constant_folding=False)
    assert ops_of(text) == ops, text
    assert text.count("op: flatten") == 1, text       # one flatten, shared by its readers


def test_a_final_argmax_is_refused_saying_what_to_export_instead(tmp_path):
    class Classes(nn.Module):
        def __init__(self):
            super().__init__()
            self.score = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.score(x).argmax(1)
    message = refusal(export(Classes(), (3, 5, 6), tmp_path / "argmax.onnx"))
    assert "(ArgMax): op ArgMax is not supported: export the network without its final " \
           "argmax" in message and "\n" not in message, message
