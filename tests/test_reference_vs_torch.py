"""The NumPy reference executor against PyTorch (CPU, float32): every op over odd shapes, and the
whole models. Tolerance: max abs error relative to the output's max magnitude <= 1e-5."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import squeezegen
from squeezegen.ir.printer import param_specs
from squeezegen.reference import ReferenceExecutor

from helpers import (assert_close, random_input, random_weights, small_model, torch_module,
                     torch_run)

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

TOL = 1e-5           # whole models (measured: at most 5.6e-6, squeezenet 1.0)
OP_TOL = 2e-6        # one op (measured: at most 3.8e-7, a 7x7/2 conv)
ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


# ------------------------------------------------------------------ independent PyTorch models
# benchmarks/torch_models.py holds the paper network's PyTorch definition (as in
# ../shared/peers/squeezeseg_torch.py) and LeNet; their state_dict naming is squeezegen's format.
sys.path.insert(0, str(ROOT / "benchmarks"))
from torch_models import Fire, LeNet, SqueezeSeg  # noqa: E402


def _state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _randomise_biases(module, seed=0):
    """PyTorch's default biases are small; make them clearly non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=g) * 0.9 + 0.1)
                        * torch.sign(torch.rand(p.shape, generator=g) - 0.5) * 0.2)


# ------------------------------------------------------------------ every op, odd shapes
def case(id_, shape, layers, output, batch=3, marks=()):
    return pytest.param(shape, layers, output, batch, id=id_, marks=marks)


OP_CASES = [
    # conv
    case("conv-3x3-odd-nonsquare-input", [3, 7, 9], "- {name: c, op: conv, out: 5, kernel: 3}", "c"),
    case("conv-nonsquare-kernel-stride-pad", [2, 9, 7],
         "- {name: c, op: conv, out: 4, kernel: [3, 5], stride: [2, 1], pad: [1, 2]}", "c"),
    case("conv-stride-gt-kernel", [3, 11, 10],
         "- {name: c, op: conv, out: 4, kernel: 2, stride: 3}", "c"),
    case("conv-stride-not-dividing", [2, 8, 10],
         "- {name: c, op: conv, out: 3, kernel: 3, stride: 2}", "c"),
    case("conv-stride-nonsquare-gt-kernel", [2, 13, 9],
         "- {name: c, op: conv, out: 3, kernel: [2, 1], stride: [4, 3], pad: [1, 0]}", "c"),
    case("conv-1x1", [5, 6, 7], "- {name: c, op: conv, out: 4, kernel: 1}", "c"),
    case("conv-1x1-stride2", [5, 7, 6], "- {name: c, op: conv, out: 4, kernel: 1, stride: 2}", "c"),
    case("conv-kernel-equals-input", [2, 5, 4], "- {name: c, op: conv, out: 6, kernel: [5, 4]}",
         "c"),
    case("conv-7x7-stride2-pad3", [3, 17, 15],
         "- {name: c, op: conv, out: 8, kernel: 7, stride: 2, pad: 3}", "c"),
    case("conv-no-bias", [3, 6, 5], "- {name: c, op: conv, out: 4, kernel: 3, bias: false}", "c"),
    case("conv-relu", [3, 6, 5], "- {name: c, op: conv, out: 4, kernel: 3, relu: true}", "c"),
    case("conv-batch1", [3, 9, 9], "- {name: c, op: conv, out: 4, kernel: 3, pad: 1}", "c", batch=1),
    # pad more than half the kernel is legal for Conv2d (only pools limit it)
    case("conv-1x1-pad1", [3, 5, 6], "- {name: c, op: conv, out: 4, kernel: 1, pad: 1}", "c"),
    case("conv-3x3-pad2", [3, 5, 6], "- {name: c, op: conv, out: 4, kernel: 3, pad: 2}", "c"),
    # deconv
    case("deconv-3x3-s1", [3, 5, 6], "- {name: d, op: deconv, out: 4, kernel: 3}", "d"),
    case("deconv-3x3-s2-nobias", [4, 5, 7],
         "- {name: d, op: deconv, out: 3, kernel: 3, stride: 2, bias: false}", "d"),
    case("deconv-stride-gt-kernel", [3, 4, 5],
         "- {name: d, op: deconv, out: 2, kernel: 2, stride: 3}", "d"),
    case("deconv-pad", [3, 5, 4], "- {name: d, op: deconv, out: 2, kernel: 4, stride: 2, pad: 1}",
         "d"),
    case("deconv-output-padding", [3, 5, 4],
         "- {name: d, op: deconv, out: 2, kernel: 3, stride: 2, pad: 1, output_padding: 1}", "d"),
    case("deconv-output-padding-beyond-the-taps", [2, 4, 5],
         "- {name: d, op: deconv, out: 3, kernel: 2, stride: [3, 2], output_padding: [2, 1]}",
         "d"),
    case("deconv-pad-gt-half-kernel", [2, 6, 5],
         "- {name: d, op: deconv, out: 3, kernel: 3, stride: 2, pad: 2}", "d"),
    case("deconv-nonsquare", [3, 4, 6],
         "- {name: d, op: deconv, out: 2, kernel: [3, 5], stride: [2, 3], pad: [1, 0]}", "d"),
    case("deconv-11x11-s4", [3, 4, 5],
         "- {name: d, op: deconv, out: 5, kernel: 11, stride: 4, bias: false}", "d"),
    case("deconv-1x1-on-1x1", [4, 1, 1], "- {name: d, op: deconv, out: 3, kernel: 1}", "d"),
    # maxpool
    case("maxpool-stride-defaults-to-kernel", [3, 7, 7], "- {name: p, op: maxpool, kernel: 2}", "p"),
    case("maxpool-ceil-last-window-hangs-off", [2, 6, 6],
         "- {name: p, op: maxpool, kernel: 3, stride: 2}", "p"),
    case("maxpool-floor", [2, 6, 6],
         "- {name: p, op: maxpool, kernel: 3, stride: 2, ceil_mode: false}", "p"),
    case("maxpool-ceil-window-would-start-in-padding", [2, 5, 5],
         "- {name: p, op: maxpool, kernel: 2, stride: 2, pad: 1}", "p"),
    case("maxpool-floor-pad", [2, 6, 7],        # floor gives 3x4 where ceil would give 4x4
         "- {name: p, op: maxpool, kernel: 3, stride: 2, pad: 1, ceil_mode: false}", "p"),
    case("maxpool-pad-ceil", [2, 6, 7],
         "- {name: p, op: maxpool, kernel: 3, stride: 2, pad: 1}", "p"),
    case("maxpool-nonsquare", [3, 7, 8],
         "- {name: p, op: maxpool, kernel: [2, 3], stride: [1, 2], pad: [1, 1]}", "p"),
    case("maxpool-stride-gt-kernel-ceil", [2, 10, 11],
         "- {name: p, op: maxpool, kernel: 2, stride: 3}", "p"),
    case("maxpool-stride-gt-kernel-floor", [2, 10, 11],
         "- {name: p, op: maxpool, kernel: 2, stride: 3, ceil_mode: false}", "p"),
    case("maxpool-stride-gt-kernel-pad-ceil", [2, 4, 7],
         "- {name: p, op: maxpool, kernel: 2, stride: 3, pad: 1}", "p"),
    case("maxpool-kernel-taller-than-input-ceil", [2, 1, 3], "- {name: p, op: maxpool, kernel: 2}",
         "p"),
    case("maxpool-k3-s3-pad1-ceil", [2, 5, 7],
         "- {name: p, op: maxpool, kernel: 3, stride: 3, pad: 1}", "p"),
    case("maxpool-3x3-s2-odd", [4, 13, 11], "- {name: p, op: maxpool, kernel: 3, stride: 2}", "p"),
    # avgpool
    case("avgpool-stride-defaults-to-kernel", [3, 6, 7], "- {name: p, op: avgpool, kernel: 2}",
         "p"),
    case("avgpool-ceil-last-window-hangs-off", [2, 6, 6],
         "- {name: p, op: avgpool, kernel: 3, stride: 2}", "p"),
    case("avgpool-floor", [2, 6, 6],
         "- {name: p, op: avgpool, kernel: 3, stride: 2, ceil_mode: false}", "p"),
    case("avgpool-pad-ceil-count-include-pad", [2, 6, 7],
         "- {name: p, op: avgpool, kernel: 3, stride: 2, pad: 1}", "p"),
    case("avgpool-pad-floor", [2, 6, 7],
         "- {name: p, op: avgpool, kernel: 3, stride: 2, pad: 1, ceil_mode: false}", "p"),
    case("avgpool-ceil-window-would-start-in-padding", [2, 5, 5],
         "- {name: p, op: avgpool, kernel: 2, stride: 2, pad: 1}", "p"),
    case("avgpool-nonsquare", [3, 8, 7],
         "- {name: p, op: avgpool, kernel: [3, 2], stride: [2, 3], pad: [1, 1]}", "p"),
    case("avgpool-stride-gt-kernel-pad-ceil", [2, 7, 4],
         "- {name: p, op: avgpool, kernel: 2, stride: 3, pad: 1}", "p"),
    case("avgpool-kernel-taller-than-input-ceil", [2, 1, 3], "- {name: p, op: avgpool, kernel: 2}",
         "p"),
    case("avgpool-k3-s3-pad1-ceil", [2, 5, 7],
         "- {name: p, op: avgpool, kernel: 3, stride: 3, pad: 1}", "p"),
    case("avgpool-global", [4, 5, 7], "- {name: p, op: avgpool, global: true}", "p"),
    case("avgpool-global-after-conv", [3, 9, 8], """
        - {name: c, op: conv, out: 6, kernel: 3, stride: 2, relu: true}
        - {name: p, op: avgpool, global: true}""", "p"),
    # add / concat / relu
    case("add-two", [3, 6, 5], """
        - {name: a, op: conv, out: 4, kernel: 3, pad: 1}
        - {name: b, op: conv, input: input, out: 4, kernel: 1}
        - {name: s, op: add, inputs: [a, b]}""", "s"),
    case("add-three-with-input", [3, 5, 7], """
        - {name: a, op: conv, out: 3, kernel: 3, pad: 1}
        - {name: b, op: conv, input: input, out: 3, kernel: 1, relu: true}
        - {name: s, op: add, inputs: [a, b, input]}""", "s"),
    case("add-relu", [3, 6, 5], """
        - {name: a, op: conv, out: 4, kernel: 3, pad: 1}
        - {name: b, op: conv, input: input, out: 4, kernel: 1}
        - {name: s, op: add, inputs: [a, b], relu: true}""", "s"),
    case("relu-on-add", [3, 6, 5], """
        - {name: a, op: conv, out: 4, kernel: 3, pad: 1}
        - {name: b, op: conv, input: input, out: 4, kernel: 1}
        - {name: s, op: add, inputs: [a, b]}
        - {name: r, op: relu}""", "r"),
    case("concat-two", [3, 6, 5], """
        - {name: a, op: conv, out: 2, kernel: 3, pad: 1}
        - {name: b, op: conv, input: input, out: 5, kernel: 1}
        - {name: k, op: concat, inputs: [a, b]}""", "k"),
    case("concat-three-with-input", [3, 7, 4], """
        - {name: a, op: conv, out: 2, kernel: 3, pad: 1}
        - {name: b, op: maxpool, input: input, kernel: 3, stride: 1, pad: 1}
        - {name: k, op: concat, inputs: [b, input, a]}""", "k"),
    case("relu", [3, 5, 6], "- {name: r, op: relu}", "r"),
    case("branch-several-consumers", [3, 9, 7], """
        - {name: a, op: conv, out: 4, kernel: 3, relu: true}
        - {name: b, op: conv, out: 4, kernel: 3, pad: 1}
        - {name: c, op: maxpool, input: a, kernel: 3, stride: 1, pad: 1}
        - {name: d, op: add, inputs: [b, c, a], relu: true}
        - {name: e, op: concat, inputs: [d, a]}""", "e"),
    # linear / softmax
    case("linear-after-conv", [3, 6, 5], """
        - {name: c, op: conv, out: 4, kernel: 3, stride: 2}
        - {name: fc, op: linear, out: 7}""", "fc"),
    case("linear-on-image-input", [2, 3, 5], "- {name: fc, op: linear, out: 6, relu: true}", "fc"),
    case("linear-on-vector-input-no-bias", [9], """
        - {name: fc1, op: linear, out: 5, bias: false, relu: true}
        - {name: fc2, op: linear, out: 3}""", "fc2"),
    case("concat-vectors", [4], """
        - {name: a, op: linear, out: 3}
        - {name: b, op: linear, input: input, out: 2}
        - {name: k, op: concat, inputs: [a, b, input]}""", "k"),
    case("softmax-image", [5, 4, 3], "- {name: s, op: softmax}", "s"),
    case("softmax-vector", [3, 4, 4], """
        - {name: fc, op: linear, out: 10}
        - {name: s, op: softmax}""", "s"),
    # fire
    case("fire", [5, 7, 6], "- {name: f, op: fire, squeeze: 3, expand1x1: 4, expand3x3: 5}", "f"),
    case("fire-fire-pool", [4, 9, 8], """
        - {name: f1, op: fire, squeeze: 2, expand1x1: 3, expand3x3: 3}
        - {name: f2, op: fire, squeeze: 3, expand1x1: 2, expand3x3: 4}
        - {name: p, op: maxpool, kernel: 3, stride: 2}""", "p"),
]


@pytest.mark.parametrize("shape, layers, output, batch", OP_CASES)
def test_op_matches_torch(shape, layers, output, batch):
    graph = small_model(shape, layers, output)
    weights = random_weights(graph, seed=len(layers))
    x = random_input(graph, batch, seed=batch)
    got = ReferenceExecutor(graph, weights)(x)
    want = torch_run(torch_module(graph, weights), x)
    assert_close(got, want, OP_TOL, what=f"{output} {got.shape}")


def test_multiple_outputs_match_torch():
    graph = small_model([3, 7, 6], """
        - {name: a, op: conv, out: 4, kernel: 3, relu: true}
        - {name: p, op: maxpool, kernel: 2}
        - {name: fc, op: linear, out: 5}""", "[fc, a]")
    weights = random_weights(graph)
    x = random_input(graph, 3)
    got = ReferenceExecutor(graph, weights)(x)
    want = torch_run(torch_module(graph, weights), x)
    assert isinstance(got, tuple) and len(got) == 2
    assert got[0].shape == (3, 5) and got[1].shape == (3, 4, 5, 4)
    for g, w, name in zip(got, want, ("fc", "a")):
        assert_close(g, w, TOL, what=name)


def test_outputs_are_float32_and_input_not_modified():
    graph = small_model([3, 5, 5], """
        - {name: r, op: relu}
        - {name: a, op: add, inputs: [input, r]}""", "a")
    x = random_input(graph, 2)
    before = x.copy()
    y = ReferenceExecutor(graph, {})(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    assert_close(y, before + np.maximum(before, 0), TOL)


# ------------------------------------------------------------------ hand-written PyTorch twins
def test_fire_matches_handwritten_torch_fire():
    """Independent of the parser's lowering: the Fire module of the paper's PyTorch code."""
    graph = small_model([6, 7, 5], "- {name: fire2, op: fire, squeeze: 3, expand1x1: 4, "
                                   "expand3x3: 5}", "fire2")
    torch.manual_seed(0)
    fire = Fire(6, 3, 4, 5).eval()
    _randomise_biases(fire)
    weights = {f"fire2.{k}": v for k, v in _state(fire).items()}
    assert {k: v.shape for k, v in weights.items()} == param_specs(graph)
    x = random_input(graph, 3)
    with torch.no_grad():
        want = fire(torch.from_numpy(x)).numpy()
    assert_close(ReferenceExecutor(graph, weights)(x), want, TOL)


def test_lenet_matches_handwritten_torch_lenet():
    """Independent of the graph-walking twin: LeNet in PyTorch by hand, same state_dict names."""
    graph = squeezegen.load_model(MODELS / "lenet.yaml")
    torch.manual_seed(1)
    net = LeNet().eval()
    _randomise_biases(net)
    weights = _state(net)
    assert {k: tuple(v.shape) for k, v in weights.items()} == param_specs(graph)
    x = random_input(graph, 3) * 2
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = ReferenceExecutor(graph, weights)(x)
    assert got.shape == (3, 10)
    assert_close(got, want, TOL)


# ------------------------------------------------------------------ whole models
@pytest.mark.parametrize("path, batch", [
    pytest.param("models/squeezeseg.yaml", 2, id="squeezeseg-batch2"),
    pytest.param("models/lenet.yaml", 3, id="lenet-batch3"),
    pytest.param("models/squeezenet1_0.yaml", 1, id="squeezenet1_0-batch1"),
])
def test_whole_model_matches_torch(path, batch):
    graph = squeezegen.load_model(ROOT / path)
    weights = random_weights(graph, seed=7)
    assert all(np.abs(v).min() > 0 for k, v in weights.items() if k.endswith(".bias"))
    x = random_input(graph, batch, seed=3)
    got = ReferenceExecutor(graph, weights)(x)
    want = torch_run(torch_module(graph, weights), x)
    assert np.abs(want).max() > 1e-3          # a meaningful output, not all zeros
    assert_close(got, want, TOL, what=path)


def test_squeezeseg_state_dict_names_and_shapes_equal_param_specs():
    specs = param_specs(squeezegen.load_model(MODELS / "squeezeseg.yaml"))
    module = SqueezeSeg()
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert got == specs
    assert list(got) == list(specs)           # same order too (graph order = module order)
    assert sum(np.prod(s) for s in specs.values()) == 1348951


def test_squeezeseg_reference_with_torch_state_dict_matches_module():
    torch.manual_seed(0)
    module = SqueezeSeg().eval()
    _randomise_biases(module)
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    graph = squeezegen.load_model(MODELS / "squeezeseg.yaml")
    x = (np.random.default_rng(0).random((1, 3, 227, 227), dtype=np.float32) * 2 - 1)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = squeezegen.reference(MODELS / "squeezeseg.yaml", weights)(x)
    assert got.shape == (1, 21, 227, 227)
    assert_close(got, want, TOL, what="squeezeseg")
    # the same through the executor built from a Graph
    assert_close(ReferenceExecutor(graph, weights)(x), want, TOL)


# ------------------------------------------------------------------ the helpers themselves
def test_assert_close_detects_errors():
    a = np.array([1.0, -2.0, 4.0], np.float32)
    assert_close(a, a)
    assert_close(a * (1 + 1e-7), a)
    with pytest.raises(AssertionError, match="max abs error"):
        assert_close(a + np.float32(1e-3), a)
    with pytest.raises(AssertionError):
        assert_close(np.array([np.nan, 0, 0], np.float32), a)
    with pytest.raises(AssertionError):
        assert_close(a[:2], a)
    assert_close(np.zeros(3), np.zeros(3))
    with pytest.raises(AssertionError):
        assert_close(np.array([0, 1e-6, 0]), np.zeros(3))


def test_torch_twin_detects_a_wrong_weight():
    """The twin really uses the weights: a perturbed weight changes its output past tolerance."""
    graph = small_model([3, 6, 5], "- {name: c, op: conv, out: 4, kernel: 3}", "c")
    weights = random_weights(graph)
    x = random_input(graph, 2)
    ref = ReferenceExecutor(graph, weights)(x)
    bad = dict(weights, **{"c.bias": weights["c.bias"] + np.float32(0.01)})
    with pytest.raises(AssertionError):
        assert_close(ref, torch_run(torch_module(graph, bad), x), TOL)
