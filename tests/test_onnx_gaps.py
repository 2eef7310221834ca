"""ONNX import: the gaps an audit found, each checked against PyTorch or refused in one line.

Resize by a float32 scale that is not exact (1.7), padding="same" and auto_pad, ceil_mode pools
whose last window starts in the padding, squeeze-and-excitation gates computed by Linear layers,
axes out of range, opsets out of range, oversized constant folding, file names that need YAML
escapes, Neg, and graphs with a tensor computed twice or a cycle. Then a second audit's: expand
over the channels or the pixels, global pools in two reductions, sums, F.normalize (refused),
slices with steps, and the SELU, CELU, Softsign and LogSigmoid activations.
"""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import squeezegen                                                         # noqa: E402
from squeezegen.frontend.onnx_import import import_onnx                   # noqa: E402
from squeezegen.reference import ReferenceExecutor                        # noqa: E402

from helpers import assert_close                                          # noqa: E402
from onnx import TensorProto, helper, numpy_helper                        # noqa: E402
from test_onnx_import import (TOL, check_import, export, fvalue, init,    # noqa: E402
                              layer_lines, onnx_model, ops_of, refusal, seeded)

nn = torch.nn
F = torch.nn.functional


def saved(tmp_path, nodes, in_shape, inits=(), opset=13, out_shape=None, name="h"):
    path = tmp_path / f"{name}.onnx"
    model = onnx_model(nodes, [fvalue("x", in_shape)], [fvalue("y", out_shape)], inits, opset)
    onnx.save(model, str(path))
    return path


def reference(text, weights, x):
    return ReferenceExecutor(squeezegen.parse_model(text), weights)(x)


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


# ------------------------------------------------------------------ 1. resize scales
@pytest.mark.parametrize("scale", [0.85, 1.1, 1.45, 1.7, 2.2, 3.4])
@pytest.mark.parametrize("mode,opset", [("nearest", 13), ("nearest", 18), ("bilinear", 17)])
def test_resize_by_a_scale_float32_cannot_hold_matches_torch(scale, mode, opset, tmp_path):
    """ONNX stores 1.7 as the float32 1.70000005; the YAML must say 1.7, which PyTorch used
    (the float32 widened gave 1/scale one ulp off: relative errors of 1.0-1.6 for nearest)."""
    module = seeded(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=scale, mode=mode)))
    text, _, _ = check_import(module, (3, 37, 53), tmp_path, opset=opset, batch=2)
    assert re.search(rf"scale: {scale}[,}}]", text), text


def test_resize_whose_declared_size_disagrees_is_refused(tmp_path):
    scales = numpy_helper.from_array(np.array([1, 1, 1.7, 1.7], np.float32), "s")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("Resize", ["r", "", "s"], ["y"], name="up", mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    ok = import_onnx(saved(tmp_path, nodes, [1, 2, 10, 10], [scales], out_shape=[1, 2, 17, 17]))
    assert "scale: 1.7}" in ok[0], ok[0]
    message = refusal(saved(tmp_path, nodes, [1, 2, 10, 10], [scales], out_shape=[1, 2, 18, 18]))
    assert "node 'up' (Resize), attribute 'scales'" in message and "declares 18x18" in message


# ------------------------------------------------------------------ 2. padding="same", auto_pad
@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), (2, 1), (4, 2), ((2, 5), (1, 2))])
@pytest.mark.parametrize("opset", [13, 17])
def test_conv_padding_same_matches_torch(kernel, dilation, opset, tmp_path):
    """PyTorch exports padding="same" as auto_pad SAME_UPPER (an even kernel's extra row and
    column at the end)."""
    module = seeded(nn.Sequential(nn.Conv2d(3, 4, kernel, padding="same", dilation=dilation),
                                  nn.ReLU()))
    text, _, _ = check_import(module, (3, 9, 10), tmp_path, opset=opset)
    assert ops_of(text) == ["conv"]


def test_auto_pad_same_lower_and_pools_match_torch(tmp_path):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    t = torch.from_numpy(x)
    conv = helper.make_node("Conv", ["x", "k"], ["y"], name="c", auto_pad="SAME_LOWER")
    text, weights = import_onnx(saved(tmp_path, [conv], [1, 3, 7, 8], [init("k", k)]))
    assert "pad: [2, 2, 1, 1]" in text, text           # the odd row and column at the start
    want = F.conv2d(F.pad(t, (2, 1, 2, 1)), torch.from_numpy(k))
    assert_close(reference(text, weights, x), want.numpy(), TOL)
    cases = [  # ONNX attributes, then PyTorch's pool of the same numbers
        (dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),       # pads 1, 1
         lambda v: F.max_pool2d(v, 3, 2, 1), [1, 3, 9, 9]),
        (dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID", ceil_mode=1),  # even:
         lambda v: F.max_pool2d(v, 2, 2), [1, 3, 8, 6])]                # ceil changes nothing
    for attrs, pool, shape in cases:
        node = helper.make_node("MaxPool", ["x"], ["y"], name="p", **attrs)
        text, weights = import_onnx(saved(tmp_path, [node], shape))
        x = rng.standard_normal([2] + shape[1:]).astype(np.float32)
        assert_close(reference(text, weights, x), pool(torch.from_numpy(x)).numpy(), TOL)
    node = helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                            auto_pad="SAME_UPPER")
    message = refusal(saved(tmp_path, [node], [1, 3, 6, 6]))
    assert "node 'p' (AveragePool), attribute 'auto_pad'" in message and "[0, 0, 1, 1]" in message
    # VALID with ceil_mode where ceil and floor differ: ONNX's text says the ceil is ignored,
    # its shape inference (and onnxruntime) apply it; refused rather than guessed
    node = helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                            strides=[2, 2], auto_pad="VALID", ceil_mode=1)
    message = refusal(saved(tmp_path, [node], [1, 3, 7, 7]))
    assert "node 'p' (MaxPool), attribute 'ceil_mode'" in message and "VALID" in message


# ------------------------------------------------------------------ 3. ceil_mode pools
@pytest.mark.parametrize("pool", [nn.MaxPool2d(2, 2, 1, ceil_mode=True),
                                  nn.AvgPool2d(3, 3, 1, ceil_mode=True),
                                  nn.AvgPool2d(3, 3, 1, ceil_mode=True, count_include_pad=False)])
@pytest.mark.parametrize("shape", [(3, 9, 10), (3, 10, 11)])
def test_ceil_mode_pool_whose_last_window_starts_in_the_padding_matches_torch(pool, shape,
                                                                             tmp_path):
    """ONNX declares the shape with that window (MaxPool 2/2/1 on 9: 6), PyTorch drops it (5)."""
    for tail in ([], [nn.ReLU()]):
        check_import(seeded(nn.Sequential(nn.Conv2d(3, 4, 1), pool, *tail)), shape, tmp_path,
                     opset=17)


# ------------------------------------------------------------------ 4. SE with Linear layers
class LinearSE(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Sequential(nn.Linear(16, 4, bias=False), nn.ReLU(),
                                nn.Linear(4, 16, bias=False), nn.Sigmoid())

    def forward(self, x):
        x = self.conv(x)
        b, c = x.shape[0], x.shape[1]
        y = self.fc(F.adaptive_avg_pool2d(x, 1).view(b, c))
        if self.form == "also-doubled":        # another reader of the gate: refused
            return x * y.view(b, c, 1, 1), y * 2.0
        y = {"view": lambda: y.view(b, c, 1, 1), "none": lambda: y[:, :, None, None],
             "reshape": lambda: y.reshape(b, c, 1, 1),
             "unsqueeze": lambda: y.unsqueeze(-1).unsqueeze(-1),
             "expand": lambda: y.view(b, c, 1, 1).expand_as(x)}[self.form]()
        return x * y


@pytest.mark.parametrize("form", ["view", "none", "reshape", "unsqueeze", "expand"])
@pytest.mark.parametrize("opset", [13, 17])
def test_squeeze_excitation_with_linear_layers_matches_torch(form, opset, tmp_path):
    text, _, _ = check_import(seeded(LinearSE(form)), (3, 37, 53), tmp_path, opset=opset,
                              batch=2)
    assert ops_of(text) == ["conv", "avgpool", "conv", "conv", "sigmoid", "mul"], text


def test_a_gate_that_cannot_be_an_image_is_refused_without_contradiction(tmp_path):
    message = refusal(export(seeded(LinearSE("also-doubled")), (3, 7, 5), tmp_path / "se.onnx"))
    assert "(Mul): multiplies [N, 16, 7, 5] by [N, 16, 1, 1]" in message, message
    assert "reshape of a 16 layer output" in message and "needs two tensors" not in message


# ------------------------------------------------------------------ 5. axes out of range
def _node(op, inputs=("x",), **attrs):
    return helper.make_node(op, list(inputs), ["y"], name="n", **attrs)


@pytest.mark.parametrize("make,op,attribute", [
    (lambda: _node("Softmax", axis=99), "Softmax", "axis"),
    (lambda: _node("LogSoftmax", axis=-99), "LogSoftmax", "axis"),
    (lambda: _node("ReduceMean", axes=[-99]), "ReduceMean", "axes"),
    (lambda: _node("ReduceMax", axes=[4]), "ReduceMax", "axes"),
    (lambda: _node("Concat", ["x", "x"], axis=4), "Concat", "axis"),
    (lambda: _node("Flatten", axis=5), "Flatten", "axis"),
    (lambda: _node("Squeeze", axes=[9]), "Squeeze", "axes"),
    (lambda: _node("Unsqueeze", axes=[99]), "Unsqueeze", "axes"),
])
def test_axes_out_of_range_are_refused(make, op, attribute, tmp_path):
    message = refusal(saved(tmp_path, [make()], [1, 3, 4, 4], opset=11))
    assert f"node 'n' ({op}), attribute '{attribute}'" in message, message
    assert "outside [" in message and "\n" not in message


def test_folded_axes_out_of_range_are_refused(tmp_path):
    nodes = [helper.make_node("Unsqueeze", ["shape"], ["u"], name="u", axes=[5]),
             helper.make_node("Reshape", ["x", "u"], ["y"], name="r")]
    message = refusal(saved(tmp_path, nodes, [1, 3, 4, 4], [ints("shape", [1, 48])], opset=11))
    assert "node 'u' (Unsqueeze), attribute 'axes'" in message and "outside [-2, 1]" in message


# ------------------------------------------------------------------ 6. opsets
@pytest.mark.parametrize("opset,ok", [(1, False), (6, False), (7, True), (22, True),
                                      (23, False), (99, False)])
def test_opsets_outside_the_supported_range_are_refused(opset, ok, tmp_path):
    path = saved(tmp_path, [_node("Relu")], [1, 3, 4, 4], opset=opset)
    if ok:
        assert ops_of(import_onnx(path)[0]) == ["relu"]
    else:
        assert f"declares ONNX opset {opset}; squeezegen imports opsets 7 to 22" in refusal(path)


def test_an_opset_declared_twice_is_refused(tmp_path):
    """"" and "ai.onnx" both name the default domain: two versions of it are refused in either
    order (one of them used to win by its place in the list)."""
    import onnx
    for versions in ((23, 13), (13, 23)):
        path = saved(tmp_path, [_node("Relu")], [1, 3, 4, 4], opset=versions[0])
        model = onnx.load(str(path))
        model.opset_import.append(helper.make_opsetid("ai.onnx", versions[1]))
        onnx.save(model, str(path))
        assert "declares the ONNX (default-domain) opset more than once" in refusal(path)


# ------------------------------------------------------------------ 7. folding size cap
@pytest.mark.parametrize("grow", ["ConstantOfShape", "Add"])
def test_a_huge_folded_constant_is_refused_before_it_is_allocated(grow, tmp_path):
    """An 818-byte file asked for a 16384 x 32768 constant (2 GB) before."""
    if grow == "ConstantOfShape":
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="grow",
                                  value=numpy_helper.from_array(np.ones(1, np.float32)))]
        inits = [ints("shape", [16384, 32768])]
    else:                                      # [65536, 1] + [1, 2048]: a broadcast to 2^27
        nodes = [helper.make_node("Add", ["a", "b"], ["big"], name="grow")]
        inits = [init("a", np.ones((65536, 1))), init("b", np.ones((1, 2048)))]
    nodes += [helper.make_node("Slice", ["big", "st", "en"], ["s"], name="slice"),
              helper.make_node("Reshape", ["s", "rs"], ["r"], name="reshape"),
              helper.make_node("Mul", ["x", "r"], ["y"], name="mul")]
    inits += [ints("st", [0, 0]), ints("en", [1, 3]), ints("rs", [1, 3, 1, 1])]
    message = refusal(saved(tmp_path, nodes, [1, 3, 4, 4], inits))
    assert f"node 'grow' ({grow}): this constant expression would hold" in message, message


# ------------------------------------------------------------------ 8. file names
@pytest.mark.parametrize("name", ["e\x1b[31m.onnx", b"\x85nel.onnx", "new\nline.onnx",
                                  "sep\u2028\t.onnx", 'mod\u00e8le "q" \\.onnx'])
def test_any_file_name_round_trips_through_the_description(name, tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 2, 1))
    path = export(module, (3, 4, 4), tmp_path / "ok.onnx")
    target = os.path.join(os.fsencode(tmp_path), name if isinstance(name, bytes)
                          else name.encode())
    shutil.copy(path, target)
    text, _ = import_onnx(os.fsdecode(target))
    assert yaml.safe_load(text)["description"] == "imported from " + os.fsdecode(
        os.path.basename(target))
    assert all(line.isprintable() for line in text.splitlines()), text


# ------------------------------------------------------------------ 9. small ones
class Negated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return F.relu(-self.conv(x))


def test_neg_is_an_affine_of_minus_one(tmp_path):
    text, _, _ = check_import(seeded(Negated()), (3, 8, 9), tmp_path)
    assert ops_of(text) == ["conv", "affine"]


class OneSided(nn.Module):
    def __init__(self, bound):
        super().__init__()
        self.conv, self.bound = nn.Conv2d(3, 4, 3), bound

    def forward(self, x):
        return torch.clamp(self.conv(x), **self.bound)


@pytest.mark.parametrize("bound", [{"min": 0.1}, {"max": -0.2}])
@pytest.mark.parametrize("opset", [10, 13])
def test_a_clamp_with_one_bound_is_a_clip_with_one(bound, opset, tmp_path):
    text, _, _ = check_import(seeded(OneSided(bound)), (3, 8, 9), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "clip"], text
    assert ("min: 0.1" in text) == ("min" in bound) and ("max: -0.2" in text) == ("max" in bound)


@pytest.mark.parametrize("make,op,attribute,needle", [
    (lambda: _node("LeakyRelu", alpha=float("nan")), "LeakyRelu", "alpha", "not a finite"),
    (lambda: _node("HardSigmoid", alpha=float("nan")), "HardSigmoid", "alpha", "alpha nan"),
    (lambda: _node("Clip", min=float("inf")), "Clip", "min", "every output would be that"),
    (lambda: _node("Expand", ["x", "shape"]), "Expand", None, "an Add or Mul reads it"),
])
def test_small_refusals(make, op, attribute, needle, tmp_path):
    message = refusal(saved(tmp_path, [make()], [1, 3, 4, 4], [ints("shape", [2, 3, 4, 4])],
                            opset=10 if op == "Clip" else 13))
    where = f"node 'n' ({op})" + (f", attribute '{attribute}'" if attribute else "")
    assert where in message and needle in message, message


def test_a_tensor_computed_twice_or_a_cycle_is_refused(tmp_path):
    twice = [helper.make_node("Relu", ["x"], ["y"], name="a"),
             helper.make_node("Sigmoid", ["x"], ["y"], name="b")]
    message = refusal(saved(tmp_path, twice, [1, 3, 4, 4]))
    assert "node 'b' (Sigmoid): its output 'y' is also computed by node 'a' (Relu)" in message
    cycle = [helper.make_node("Add", ["x", "z"], ["y"], name="a"),
             helper.make_node("Relu", ["y"], ["z"], name="b")]
    assert "is on a cycle" in refusal(saved(tmp_path, cycle, [1, 3, 4, 4]))
    unsorted = [helper.make_node("Sigmoid", ["r"], ["y"], name="b"),
                helper.make_node("Relu", ["x"], ["r"], name="a")]
    assert ops_of(import_onnx(saved(tmp_path, unsorted, [1, 3, 4, 4]))[0]) == ["relu", "sigmoid"]


def test_an_expand_read_by_an_add_of_a_later_tensor_imports(tmp_path):
    """Expand's reader's other operand may be computed after the Expand in the file (here the
    Mul that also reads it): checked once every node is mapped (it used to be refused)."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
             helper.make_node("Sigmoid", ["g"], ["s"], name="sig"),
             helper.make_node("Expand", ["s", "shape"], ["e"], name="exp"),
             helper.make_node("Mul", ["x", "e"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "e"], ["y"], name="add")]
    text, weights = import_onnx(saved(tmp_path, nodes, [1, 3, 4, 5], [ints("shape", [1, 3, 4, 5])]))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    gate = 1 / (1 + np.exp(-x.mean((2, 3), keepdims=True)))
    assert_close(reference(text, weights, x), x * gate + gate, 1e-6)
    nodes[4] = helper.make_node("Add", ["m", "s2"], ["y"], name="add")     # a wrong shape: no
    nodes.insert(4, helper.make_node("Sigmoid", ["e"], ["s2"], name="sig2"))
    message = refusal(saved(tmp_path, nodes, [1, 3, 4, 5], [ints("shape", [1, 3, 4, 5])]))
    assert "node 'exp' (Expand)" in message and "for a Sigmoid" in message, message


class FlatPool(nn.Module):
    """A global pool written over a flattened image: view(n, c, -1).mean(-1),
    flatten(2).mean(2), flatten(2).amax(2); the last also gating its input (SE)."""
    def __init__(self, form):
        super().__init__()
        self.conv, self.fc, self.form = nn.Conv2d(3, 16, 3), nn.Linear(16, 16), form

    def forward(self, x):
        y = self.conv(x)
        n, c = y.shape[:2]
        if self.form == "view":
            return self.fc(y.view(n, c, -1).mean(-1))
        if self.form == "flatten":
            return self.fc(y.flatten(2).mean(2))
        gate = torch.sigmoid(self.fc(y.flatten(2).amax(2)))
        return y * gate.view(n, c, 1, 1)


@pytest.mark.parametrize("form", ["view", "flatten", "gate"])
@pytest.mark.parametrize("opset", [13, 17])
def test_a_global_pool_over_a_flattened_image(form, opset, tmp_path):
    text, _, _ = check_import(seeded(FlatPool(form)), (3, 11, 14), tmp_path, opset=opset)
    ops = ops_of(text)
    assert ops[:2] == ["conv", "maxpool" if form == "gate" else "avgpool"], text


class Repeats(nn.Module):
    """A grey image given to a 3-channel network (torch.cat([x, x, x], 1)), and a layer's
    output concatenated with itself and another."""
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 2, 3)

    def forward(self, x):
        rgb = torch.cat([x, x, x], 1)
        y = torch.relu(self.a(rgb))
        return torch.cat([y, self.b(rgb), y], 1)


@pytest.mark.parametrize("opset", [13, 17])
def test_a_tensor_concatenated_with_itself_is_copied(opset, tmp_path):
    text, weights, graph = check_import(seeded(Repeats()), (1, 9, 11), tmp_path, opset=opset)
    assert ops_of(text).count("conv") == 2 + 3 and ops_of(text).count("concat") == 2, text
    from host_kernels import COMPILER, run_on_host
    if COMPILER is not None:                     # the copies and concats as the GPU runs them
        x = np.random.default_rng(3).standard_normal((2, 1, 9, 11)).astype(np.float32)
        (got,), stray, _ = run_on_host(graph, weights, x, tmp_path)
        assert stray == 0
        assert_close(got, reference(text, weights, x), 1e-6)


class Tiled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x.repeat(1, 3, 1, 1))


@pytest.mark.parametrize("opset", [13, 17])
def test_a_grey_image_repeated_to_three_channels(opset, tmp_path):
    text, _, _ = check_import(seeded(Tiled()), (1, 8, 9), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "conv", "concat", "conv"], text


def test_a_tile_of_rows_is_refused(tmp_path):
    node = helper.make_node("Tile", ["x", "repeats"], ["y"], name="n")
    message = refusal(saved(tmp_path, [node], [1, 3, 4, 4], [ints("repeats", [1, 1, 2, 1])]))
    assert "node 'n' (Tile)" in message and "tiles only the channels" in message, message


# ------------------------------------------------------------------ 10. the second audit
def on_host(graph, weights, x, tmp_path):
    """`graph`'s generated kernels run on the host (tests/host_kernels.py) against the NumPy
    reference; skipped where there is no C++ compiler."""
    from host_kernels import COMPILER, run_on_host
    if COMPILER is None:
        return
    got, stray, _ = run_on_host(graph, weights, x, tmp_path)
    assert stray == 0
    want = ReferenceExecutor(graph, weights)(x)
    for g, w in zip(got, want if isinstance(want, tuple) else (want,)):
        assert_close(g, w, 1e-5)


def _x(shape, batch=2, seed=5):
    return np.random.default_rng(seed).standard_normal((batch,) + tuple(shape)).astype(np.float32)


class Expanded(nn.Module):
    """An N x 1 x H x W map and an N x C x 1 x 1 gate expanded to N x C x H x W
    (x.expand(-1, 3, -1, -1), expand_as) before an Add or a Mul, as they broadcast."""
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 1, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.b(x)
        y = y + self.a(x).expand(-1, 3, -1, -1)
        y = y * torch.sigmoid(self.a(y)).expand_as(y)
        gate = y.mean((2, 3), keepdim=True)
        return y + gate.expand(-1, -1, y.shape[2], y.shape[3])


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("dynamic", [False, True])
def test_an_expand_over_the_channels_or_the_pixels_is_a_broadcast(opset, dynamic, tmp_path):
    """The exporter writes expand(-1, ...) as Where(shape == -1, 1, shape) of constants:
    evaluated at import (Equal and Where used to be refused)."""
    axes = {"dynamic_axes": {"x": {0: "n"}}} if dynamic else {}
    text, weights, graph = check_import(seeded(Expanded()), (3, 7, 6), tmp_path, opset=opset,
                                        **axes)
    assert ops_of(text) == ["conv", "conv", "add", "conv", "sigmoid", "mul", "avgpool",
                            "add"], text
    if opset == 13 and not dynamic:
        on_host(graph, weights, _x((3, 7, 6)), tmp_path)


def test_equal_and_where_of_layer_outputs_are_refused(tmp_path):
    node = helper.make_node("Equal", ["x", "x"], ["y"], name="n")
    assert "node 'n' (Equal): op Equal is not supported" in refusal(
        saved(tmp_path, [node], [1, 3, 4, 4]))


class TwoStep(nn.Module):
    """A global pool written as two reductions, one axis each, and one over one axis alone."""
    def __init__(self, form):
        super().__init__()
        self.form, self.conv, self.fc = form, nn.Conv2d(3, 8, 3), nn.Linear(8, 5)

    def forward(self, x):
        y = self.conv(x)
        f = self.form
        if f == "mean-1":
            return self.fc(y.mean(-1).mean(-1))
        if f == "mean32":
            return self.fc(y.mean(3).mean(2))
        if f == "mean23":
            return self.fc(y.mean(2).mean(2))
        if f == "amax":
            return self.fc(y.amax(-1).amax(-1))
        if f == "sum":
            return self.fc(y.sum(-1).sum(-1))
        if f == "keep":                             # keepdims: an SE gate
            return y * torch.sigmoid(y.mean(3, keepdim=True).mean(2, keepdim=True))
        if f == "max-keep":
            return y * torch.sigmoid(y.amax(2, keepdim=True).amax(3, keepdim=True))
        if f == "rows":                             # over W alone: a pool of kernel 1 x W
            return y.mean(3, keepdim=True) + y.amax(3, keepdim=True)
        if f == "shared":                           # the first step read twice: two pools
            rows = y.mean(3)
            return self.fc(rows.mean(2)) + self.fc(rows.amax(2))
        raise ValueError(f)


@pytest.mark.parametrize("form,ops", [
    ("mean-1", ["conv", "avgpool", "linear"]),
    ("mean32", ["conv", "avgpool", "linear"]),
    ("mean23", ["conv", "avgpool", "linear"]),
    ("amax", ["conv", "maxpool", "linear"]),
    ("sum", ["conv", "avgpool", "affine", "linear"]),
    ("keep", ["conv", "avgpool", "sigmoid", "mul"]),
    ("max-keep", ["conv", "maxpool", "sigmoid", "mul"]),
    ("rows", ["conv", "avgpool", "maxpool", "add"]),
])
@pytest.mark.parametrize("opset", [13, 17])
def test_a_global_pool_in_two_reductions_is_one_pool(form, ops, opset, tmp_path):
    text, _, _ = check_import(seeded(TwoStep(form)), (3, 8, 11), tmp_path, opset=opset)
    assert ops_of(text) == ops, text
    if form == "rows":
        assert "kernel: [1, 9], ceil_mode: false" in text, text


class RowMax(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.relu(self.conv(x)).amax(3, keepdim=True)


def test_a_max_over_four_columns_runs_in_the_conv_before_it(tmp_path):
    """A max pool of kernel 1 x 4 after a conv is fused into it (fuse_pool): run on the host."""
    text, weights, graph = check_import(seeded(RowMax()), (3, 9, 6), tmp_path)
    assert "op: maxpool, kernel: [1, 4], ceil_mode: false" in text, text
    from squeezegen.passes import run_passes
    assert run_passes(graph)["conv"].attrs.get("pool") == (1, 4)
    on_host(graph, weights, _x((3, 9, 6)), tmp_path)


def test_a_first_reduction_read_twice_stays_a_pool_over_one_axis(tmp_path):
    text, weights, graph = check_import(seeded(TwoStep("shared")), (3, 8, 11), tmp_path)
    ops = ops_of(text)
    assert "kernel: [1, 9]" in text and ops.count("avgpool") == 2 and "maxpool" in ops, text
    on_host(graph, weights, _x((3, 8, 11)), tmp_path)


class Sums(nn.Module):
    """ReduceSum over H and W (keepdim or not) and over the channels."""
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = y * torch.sigmoid(y.sum((2, 3), keepdim=True) * 0.05)
        y = y + y.sum(1, keepdim=True) + y.sum(1).unsqueeze(1)
        return self.fc(y.sum((2, 3)))


@pytest.mark.parametrize("opset", [13, 17])
def test_sums_are_means_times_their_count(opset, tmp_path):
    text, weights, graph = check_import(seeded(Sums()), (3, 9, 7), tmp_path, opset=opset)
    ops = ops_of(text)
    assert ops.count("reduce_channels") == 2 and ops.count("avgpool") == 2, text
    assert ops.count("affine") == 4, text          # the * 0.05 merged into the first
    if opset == 13:
        on_host(graph, weights, _x((3, 9, 7)), tmp_path)


class Normalized(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.conv, self.form = nn.Conv2d(3, 4, 3), form
        self.gate = nn.Conv2d(3, 1, 3)

    def forward(self, x):
        y = self.conv(x)
        if self.form == "normalize":           # ReduceL2, Clip(min=eps), Expand, Div
            return F.normalize(y, dim=1)
        if self.form == "norm":                # an L2 norm without keepdim, unsqueezed back
            return y.norm(dim=1).unsqueeze(1) * torch.sigmoid(self.gate(x))
        if self.form == "divide":              # two layer outputs; a per-channel and a
            g = torch.sigmoid(y.mean((2, 3), keepdim=True)) + 0.5     # per-pixel divisor
            return y / g + y / (torch.sigmoid(self.gate(x)) + 0.5) + g / (torch.sigmoid(y) + 0.5)
        if self.form == "norm_over_pixels":
            return y.norm(dim=(2, 3), keepdim=True)
        if self.form == "itself":
            return y / y
        return y.sum((1, 2, 3), keepdim=True)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("form", ["normalize", "norm", "divide"])
def test_l2_norms_and_divisions_of_layer_outputs_import(form, opset, tmp_path):
    """F.normalize(x, dim=1): reduce_channels in mode l2, a clip at eps, a div broadcast over
    the channels; x / y of two layer outputs (one shape, a per-channel or a per-pixel divisor):
    div layers."""
    text, weights, graph = check_import(seeded(Normalized(form)), (3, 7, 6), tmp_path,
                                        opset=opset)
    ops = ops_of(text)
    if form != "divide":
        assert "reduce_channels" in ops and "mode: l2" in text, text
    if form != "norm":
        assert "div" in ops, text
    if opset == 13:
        on_host(graph, weights, _x((3, 7, 6)), tmp_path)


def test_other_l2_norms_a_sum_over_everything_and_self_division_are_refused_in_one_line(
        tmp_path):
    message = refusal(export(Normalized("norm_over_pixels"), (3, 6, 6), tmp_path / "n.onnx"))
    assert "node '/ReduceL2' (ReduceL2), attribute 'axes'" in message, message
    assert "only over the channels" in message and "\n" not in message, message
    message = refusal(export(Normalized("sum"), (3, 6, 6), tmp_path / "s.onnx"))
    assert "node '/ReduceSum' (ReduceSum), attribute 'axes'" in message, message
    assert "got axes [1, 2, 3]" in message and "\n" not in message, message
    message = refusal(export(Normalized("itself"), (3, 6, 6), tmp_path / "i.onnx"))
    assert "divides a tensor by itself" in message and "\n" not in message, message


class Stepped(nn.Module):
    """Slices with steps over rows and columns: YOLOv5's Focus (space to depth by slicing),
    with start offsets, an end, a channel range, and one read twice."""
    def __init__(self, form):
        super().__init__()
        self.form, self.conv = form, nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        if self.form == "focus":
            return torch.cat([y[..., ::2, ::2], y[..., 1::2, ::2], y[..., ::2, 1::2],
                              y[..., 1::2, 1::2]], 1)
        if self.form == "offsets":
            return y[:, :, 1:-1:3, 2::2]
        if self.form == "channels":
            return y[:, 1:3, ::2, 1::3]
        if self.form == "rows":
            return torch.relu(y[:, :, 2::3])
        if self.form == "shared":
            rows = y[:, :, ::2]
            return torch.cat([rows, rows + 1.0], 1)[:, :, :, ::2]
        raise ValueError(self.form)


@pytest.mark.parametrize("form", ["focus", "offsets", "channels", "rows", "shared"])
@pytest.mark.parametrize("shape", [(3, 9, 11), (3, 8, 10)])
@pytest.mark.parametrize("opset", [13, 17])
def test_a_slice_with_steps_is_a_max_pool_of_kernel_one(form, shape, opset, tmp_path):
    if form == "focus" and shape[1] % 2:
        shape = (3, 6, 12)                        # YOLOv5's Focus needs an even size
    text, weights, graph = check_import(seeded(Stepped(form)), shape, tmp_path, opset=opset)
    pools = [line for line in layer_lines(text) if "op: maxpool" in line]
    assert pools and all("kernel: 1," in line and "ceil_mode: false" in line
                         for line in pools), text
    if form == "focus":
        assert ops_of(text) == ["conv", "maxpool"] + ["crop", "maxpool"] * 3 + ["concat"], text
        if opset == 13 and shape == (3, 6, 12):
            on_host(graph, weights, _x(shape), tmp_path)


class InputSliced(nn.Module):
    def __init__(self, step):
        super().__init__()
        self.conv, self.step = nn.Conv2d(3, 4, 1), step

    def forward(self, x):
        return self.conv(x[:, :, 1:, 2::self.step])


@pytest.mark.parametrize("step", [1, 2])
def test_a_slice_of_the_network_input_imports(step, tmp_path):
    """A crop of the input itself, the first layer (an IndexError before: the crop looked for a
    crop to merge into at layer -1)."""
    text, _, _ = check_import(seeded(InputSliced(step)), (3, 7, 9), tmp_path)
    assert ops_of(text) == ["crop", "conv"] if step == 1 else ["crop", "maxpool", "conv"], text


@pytest.mark.parametrize("make,needle", [
    (lambda: helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"], name="n"),
     "step 0 on axis 3 is a step of 0"),
    (lambda: helper.make_node("Slice", ["x", "s", "e", "a", "back"], ["y"], name="n"),
     "step -1 on axis 3 is a reversal"),
])
def test_steps_of_zero_or_backwards_over_the_columns_are_refused(make, needle, tmp_path):
    """(Steps over the channels are a Gather's slices: test_onnx_arch_gaps.py.)"""
    inits = [ints("s", [-1]), ints("e", [-2 ** 63]), ints("a", [3]), ints("st", [0]),
             ints("back", [-1])]
    message = refusal(saved(tmp_path, [make()], [1, 3, 4, 4], inits))
    assert "node 'n' (Slice), attribute 'steps'" in message and needle in message, message


class NewActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 1)
        self.acts = nn.Sequential(nn.SELU(), nn.CELU(0.7), nn.Softsign())
        self.last = nn.LogSigmoid()

    def forward(self, x):
        return self.last(self.c2(self.acts(self.c1(x)) * 30.0))


@pytest.mark.parametrize("opset", [13, 17])
def test_selu_celu_softsign_and_logsigmoid_import_and_match_torch(opset, tmp_path):
    """Softsign exports as Abs, Add and Div, LogSigmoid as Sigmoid and Log: one layer each.
    LogSigmoid is PyTorch's: finite where the exported Log(Sigmoid(x)) would give -inf."""
    module = seeded(NewActivations())
    text, weights, graph = check_import(module, (3, 8, 7), tmp_path, opset=opset)
    assert ops_of(text) == ["conv", "selu", "celu", "softsign", "affine", "conv",
                            "logsigmoid"], text
    assert "op: celu, alpha: 0.7}" in text
    x = _x((3, 8, 7)) * 40.0                                   # past sigmoid's underflow
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    assert want.min() < -100.0
    assert_close(reference(text, weights, x), want, 1e-5)
    if opset == 13:
        on_host(graph, weights, x, tmp_path)


def test_the_onnx_softsign_and_celu_ops_import_and_other_selu_constants_are_refused(tmp_path):
    nodes = [helper.make_node("Softsign", ["x"], ["s"], name="a"),
             helper.make_node("Celu", ["s"], ["y"], name="b", alpha=2.0)]
    text, weights = import_onnx(saved(tmp_path, nodes, [1, 3, 4, 4], opset=17))
    assert ops_of(text) == ["softsign", "celu"] and "alpha: 2.0" in text, text
    x = _x((3, 4, 4))
    assert_close(reference(text, weights, x), F.celu(F.softsign(torch.from_numpy(x)), 2.0)
                 .numpy(), 1e-6)
    for attrs, attribute in (({"alpha": 1.5}, "alpha"), ({"gamma": 1.0}, "gamma")):
        node = helper.make_node("Selu", ["x"], ["y"], name="n", **attrs)
        message = refusal(saved(tmp_path, [node], [1, 3, 4, 4]))
        assert f"node 'n' (Selu), attribute '{attribute}'" in message, message
    node = helper.make_node("Celu", ["x"], ["y"], name="n", alpha=0.0)
    assert "node 'n' (Celu), attribute 'alpha'" in refusal(saved(tmp_path, [node],
                                                                 [1, 3, 4, 4], opset=17))


@pytest.mark.parametrize("op,needle", [("Abs", "Abs is imported only inside Softsign"),
                                        ("Log", "Log is imported only right after a Sigmoid")])
def test_abs_and_log_outside_their_patterns_are_refused(op, needle, tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node(op, ["r"], ["y"], name="n")]
    message = refusal(saved(tmp_path, nodes, [1, 3, 4, 4]))
    assert f"node 'n' ({op}): {needle}" in message, message
