"""softmax and its log form (`log: true`, PyTorch's log_softmax) over the channels: the NumPy
reference against PyTorch on odd shapes and on logits far apart (where the softmax underflows
to 0 and its log must stay finite), the field's checks, the kernel's comment, and both forms of
the kernel compiling with nvcc. The GPU runs them in test_gpu.py (`OP_CASES`)."""
from __future__ import annotations

import numpy as np
import pytest

import squeezegen
from helpers import assert_close, assert_compiles_with_nvcc, small_model
from test_codegen import needs_nvcc

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape", [(5, 3, 4), (7, 1, 1), (1, 2, 9), (11,)])
def test_reference_matches_torch(shape, log):
    g = small_model(shape, f"- {{name: p, op: softmax, log: {str(log).lower()}}}", "p")
    x = np.random.default_rng(len(shape)).normal(0, 4, (3,) + shape).astype(np.float32)
    got = squeezegen.reference(g, {})(x)
    want = (F.log_softmax if log else F.softmax)(torch.from_numpy(x), 1).numpy()
    assert got.shape == want.shape
    assert_close(got, want, 1e-6, what=f"softmax log={log}")


def test_log_softmax_stays_finite_where_the_softmax_underflows():
    g = small_model((3, 2, 2), "- {name: p, op: softmax, log: true}", "p")
    x = np.zeros((2, 3, 2, 2), np.float32)
    x[:, 0] = 200.0                                      # exp(-200) is 0 in float32
    x[1, 2] = -150.0
    got = squeezegen.reference(g, {})(x)
    want = F.log_softmax(torch.from_numpy(x), 1).numpy()
    assert np.isfinite(got).all() and got.min() < -149
    assert_close(got, want, 1e-6, what="log_softmax of far-apart logits")


def test_log_is_a_boolean_field():
    with pytest.raises(squeezegen.SqueezegenError, match=r"field 'log'.*true or false"):
        small_model((3, 2, 2), "- {name: p, op: softmax, log: 3}", "p")


def test_the_kernel_says_which_form_it_computes():
    from squeezegen.build import build
    for log in (True, False):
        g = small_model((4, 3, 5), f"- {{name: p, op: softmax, log: {str(log).lower()}}}", "p")
        source = build(g, 2).output.files["t.cu"]
        source = source.decode() if isinstance(source, bytes) else source
        assert ("one thread: the log-softmax over" in source) == log
        assert ("one thread: the softmax over" in source) != log


@needs_nvcc
def test_both_forms_compile_with_nvcc(tmp_path):
    g = small_model((5, 3, 4), """
        - {name: c, op: conv, out: 6, kernel: 1}
        - {name: p, op: softmax}
        - {name: q, op: softmax, input: c, log: true}
        - {name: s, op: add, inputs: [p, q]}""", "s")
    assert_compiles_with_nvcc(g, tmp_path, [(3, "fp32")])
