"""groupnorm (PyTorch's GroupNorm; InstanceNorm2d with a group per channel; a LayerNorm over
C,H,W with one group) and layernorm (each pixel over its channels: ConvNeXt's LayerNorm2d): the
NumPy reference against PyTorch on odd shapes, groups that do not divide the channels refused in
one line naming the field, the kernels' code compiling with nvcc and a ReLU after them fused
into their store. The GPU runs them in test_gpu.py (`OP_CASES`)."""
from __future__ import annotations

import numpy as np
import pytest

import squeezegen
from squeezegen.errors import ModelError
from helpers import (assert_close, assert_compiles_with_nvcc, assert_layer_refused,
                     random_weights, small_model)
from test_codegen import needs_nvcc

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("groups, affine, eps", [(1, True, 1e-5), (2, True, 0.1),
                                                 (6, False, 1e-5), (6, True, 1e-3)])
@pytest.mark.parametrize("hw", [(9, 7), (1, 1), (1, 13)])
def test_reference_matches_torch(groups, affine, eps, hw):
    g = small_model((3,) + hw, f"""
        - {{name: c, op: conv, out: 6, kernel: 1}}
        - {{name: gn, op: groupnorm, groups: {groups}, affine: {str(affine).lower()}, eps: {eps}}}""",
                    "gn")
    w = random_weights(g, groups)
    x = np.random.default_rng(3).normal(2.0, 3.0, (3, 3) + hw).astype(np.float32)
    got = squeezegen.reference(g, w)(x)
    def t(a):                         # PyTorch in float64: a group of one pixel has variance 0,
        return torch.from_numpy(a).double()   # where float32's x - mean is only rounding
    c = F.conv2d(t(x), t(w["c.weight"]), t(w["c.bias"]))
    want = F.group_norm(c, groups, t(w["gn.weight"]) if affine else None,
                        t(w["gn.bias"]) if affine else None, eps).numpy()
    assert ("gn.weight" in w) == affine
    assert_close(got, want, 1e-5, what=f"groupnorm groups={groups}")


def test_instance_norm_is_a_group_per_channel():
    g = small_model((4, 5, 6), "- {name: n, op: groupnorm, groups: 4, affine: false}", "n")
    x = np.random.default_rng(1).normal(0, 5, (2, 4, 5, 6)).astype(np.float32)
    want = torch.nn.InstanceNorm2d(4)(torch.from_numpy(x)).numpy()
    assert_close(squeezegen.reference(g, {})(x), want, 1e-5, what="instance norm")


@pytest.mark.parametrize("layer, message", [
    ("{name: n, op: groupnorm, groups: 3}", "groups 3 does not divide the 4 channels"),
    ("{name: n, op: groupnorm}", "groups"),
    ("{name: n, op: groupnorm, groups: 2, eps: 0}", "eps"),
])
def test_bad_fields_are_refused_naming_them(layer, message):
    assert_layer_refused((4, 5, 6), layer, message)


def test_a_relu_after_it_is_fused_into_its_store():
    from squeezegen.build import build
    g = small_model((4, 5, 6), """
        - {name: n, op: groupnorm, groups: 2}
        - {name: r, op: relu}""", "r")
    result = build(g, 3)
    names = [k.name for k in result.output.kernels]
    assert names == ["n_relu"]
    source = result.output.files["t.cu"]
    source = source.decode() if isinstance(source, bytes) else source
    assert "one block: group g" in source and "fused relu" in source


@needs_nvcc
def test_both_forms_compile_with_nvcc(tmp_path):
    g = small_model((6, 9, 7), """
        - {name: c, op: conv, out: 6, kernel: 3, pad: 1}
        - {name: a, op: groupnorm, groups: 3}
        - {name: r, op: relu}
        - {name: b, op: groupnorm, input: c, groups: 6, affine: false}
        - {name: s, op: add, inputs: [r, b]}""", "s")
    assert_compiles_with_nvcc(g, tmp_path, [(3, "fp32"), (1, "fp16")])


@pytest.mark.parametrize("affine, eps", [(True, 1e-6), (False, 1e-5), (True, 0.1)])
@pytest.mark.parametrize("hw", [(9, 7), (1, 1), (1, 13)])
def test_layernorm_matches_torchs_layernorm2d(affine, eps, hw):
    g = small_model((3,) + hw, f"""
        - {{name: c, op: conv, out: 7, kernel: 1}}
        - {{name: ln, op: layernorm, affine: {str(affine).lower()}, eps: {eps}}}""", "ln")
    w = random_weights(g, 2)
    x = np.random.default_rng(4).normal(2.0, 3.0, (3, 3) + hw).astype(np.float32)
    got = squeezegen.reference(g, w)(x)
    def t(a):
        return torch.from_numpy(a).double()
    c = F.conv2d(t(x), t(w["c.weight"]), t(w["c.bias"])).permute(0, 2, 3, 1)
    want = F.layer_norm(c, (7,), t(w["ln.weight"]) if affine else None,
                        t(w["ln.bias"]) if affine else None, eps).permute(0, 3, 1, 2).numpy()
    assert ("ln.weight" in w) == affine
    assert_close(got, want, 1e-5, what="layernorm")


def test_layernorm_needs_an_image():
    g = "- {name: f, op: linear, out: 4}\n- {name: n, op: layernorm}"
    with pytest.raises(ModelError, match="layer 'n'.*layernorm needs a C,H,W input"):
        small_model((4, 5, 6), g, "n")


def test_layernorm_takes_its_relu_and_skip_add_in_its_store():
    from squeezegen.build import build
    g = small_model((4, 5, 6), """
        - {name: n, op: layernorm}
        - {name: r, op: relu}
        - {name: s, op: add, inputs: [r, input]}""", "s")
    result = build(g, 3)
    assert [k.name for k in result.output.kernels] == ["n_relu_add"]
    source = result.output.files["t.cu"].decode()
    assert "one thread: one pixel, normalised over its CI channels" in source


@needs_nvcc
def test_layernorm_compiles_with_nvcc(tmp_path):
    g = small_model((6, 9, 7), """
        - {name: c, op: conv, out: 96, kernel: 2, stride: 2}
        - {name: a, op: layernorm, eps: 1.0e-6}
        - {name: r, op: gelu}
        - {name: b, op: layernorm, input: c, affine: false}
        - {name: s, op: add, inputs: [r, b]}""", "s")
    assert_compiles_with_nvcc(g, tmp_path, [(3, "fp32"), (1, "fp16")])
