"""Bad and hostile input: every case exits 1 with ONE line on stderr, `squeezegen: error: ...`,
naming the file, the YAML line and the layer/field where there is one, and never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import squeezegen
from squeezegen.errors import InputError, ModelError, WeightsError
from squeezegen.reference import ReferenceExecutor
from squeezegen.weights import check_weights

from helpers import random_input, random_weights

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "squeezegen", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k != "SQUEEZEGEN_DEBUG"})


def check_error(r, *needles, file=None, line=None) -> str:
    """r failed cleanly: exit 1, one stderr line 'squeezegen: error: FILE[:LINE]: ...' holding
    every needle; no traceback. Returns that line."""
    everything = r.stdout + r.stderr
    assert "Traceback" not in everything, everything
    assert r.returncode == 1, f"exit {r.returncode}, stderr: {r.stderr!r}"
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {r.stderr!r}"
    msg = lines[0]
    assert msg.startswith("squeezegen: error:"), msg
    if file is not None:
        assert str(file) in msg, f"the message does not name {file}: {msg}"
        if line is not None:
            assert f"{file}:{line}:" in msg, f"the message does not give line {line}: {msg}"
    body = msg.replace(str(file), "<FILE>") if file is not None else msg
    for needle in needles:                  # not satisfied by the file's name
        assert needle in body, f"{needle!r} not in: {msg}"
    return msg


def summary_error(tmp_path, text, line, *needles, name="model.yaml"):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return check_error(cli("summary", path, cwd=tmp_path), *needles, file=path, line=line)


HEAD = "name: t\ninput: {shape: [3, 9, 8]}\nlayers:\n"     # the layers start on line 4


def layers(*items, output="a"):
    return HEAD + "".join(f"  - {i}\n" for i in items) + f"output: {output}\n"


# ------------------------------------------------------------------ the model file
# (id, YAML text, the line the error must name, needles the message must hold)
MODEL_CASES = [
    ("invalid-yaml-tab", HEAD + "  - {name: a, op: relu}\noutput: a\n\tbad: 1\n", 6,
     ["invalid YAML"]),
    ("invalid-yaml-mapping-in-value", "name: t: u\n", 1, ["invalid YAML"]),
    ("not-a-mapping", "- name: t\n- op: conv\n", 1, ["mapping"]),
    ("unknown-top-level-field", HEAD + "  - {name: a, op: relu}\noutputs: a\n", 5,
     ["'outputs'", "did you mean 'output'"]),
    ("missing-top-level-field", "name: t\ninput: {shape: [3, 9, 8]}\noutput: a\n", 1,
     ["'layers'"]),
    ("empty-layers", "name: t\ninput: {shape: [3, 9, 8]}\nlayers: []\noutput: a\n", 3,
     ["field 'layers'"]),
    ("unknown-op", layers("{name: a, op: maxpol, kernel: 2}"), 4,
     ["layer 'a'", "field 'op'", "maxpol", "did you mean 'maxpool'"]),
    ("misspelled-field", HEAD + "  - name: a\n    op: conv\n    out: 4\n    kernel: 3\n"
     "    stide: 2\noutput: a\n", 8, ["layer 'a'", "stide", "did you mean 'stride'"]),
    ("missing-required-field", layers("{name: a, op: conv, kernel: 3}"), 4,
     ["layer 'a'", "field 'out'", "missing"]),
    ("missing-op", layers("{name: a, out: 3}"), 4, ["layer 'a'", "field 'op'"]),
    ("missing-name", layers("{op: relu}"), 4, ["name"]),
    ("duplicate-layer-name", layers("{name: a, op: relu}", "{name: b, op: relu}",
                                    "{name: a, op: relu}"), 6,
     ["layer 'a'", "duplicate", "line 4"]),
    ("duplicate-key", HEAD + "  - name: a\n    op: conv\n    out: 4\n    kernel: 3\n"
     "    out: 5\noutput: a\n", 8, ["duplicate key 'out'", "line 6"]),
    ("duplicate-top-level-key", layers("{name: a, op: relu}") + "name: u\n", 6,
     ["duplicate key 'name'", "line 1"]),
    ("reference-to-nonexistent-layer", layers("{name: a, op: relu, input: nosuch}"), 4,
     ["layer 'a'", "field 'input'", "nosuch"]),
    ("reference-to-later-layer", layers("{name: a, op: relu, input: b}", "{name: b, op: relu}",
                                        output="b"), 4,
     ["layer 'a'", "'b'", "later", "line 5"]),
    ("self-reference", layers("{name: a, op: relu, input: a}"), 4,
     ["layer 'a'", "own output"]),
    ("self-reference-in-inputs", layers("{name: r, op: relu}", "{name: a, op: add, inputs: [r, a]}"),
     5, ["layer 'a'", "field 'inputs'"]),
    ("add-same-input-twice", layers("{name: a, op: add, inputs: [input, input]}"), 4,
     ["layer 'a'", "twice"]),
    ("name-starts-with-digit", layers("{name: 2conv, op: relu}", output="2conv"), 4,
     ["2conv", "identifier"]),
    ("name-with-dash", layers("{name: my-conv, op: relu}", output="my-conv"), 4,
     ["my-conv", "identifier"]),
    ("name-with-dot", layers("{name: conv.1, op: relu}", output="conv.1"), 4,
     ["conv.1", "identifier"]),
    ("name-not-a-string", layers("{name: 12, op: relu}", output="12"), 4, ["name", "string"]),
    ("name-is-input", layers("{name: input, op: relu}", output="input"), 4, ["'input'"]),
    ("model-name-not-identifier", "name: my net\ninput: {shape: [3, 9, 8]}\nlayers:\n"
     "  - {name: a, op: relu}\noutput: a\n", 1, ["my net"]),
    ("c-keyword-int", layers("{name: int, op: relu}", output="int"), 4,
     ["layer 'int'", "reserved"]),
    ("c-keyword-float", layers("{name: float, op: relu}", output="float"), 4,
     ["layer 'float'", "reserved"]),
    ("cuda-keyword-global", layers("{name: __global__, op: relu}", output="__global__"), 4,
     ["__global__"]),
    ("c-keyword-main", layers("{name: main, op: relu}", output="main"), 4, ["main", "reserved"]),
    ("collides-with-generated-relu", layers("{name: conv1, op: conv, out: 4, kernel: 3, relu: true}",
                                            "{name: conv1_relu, op: relu}", output="conv1_relu"),
     5, ["conv1_relu", "conv1", "line 4"]),
    ("collides-with-generated-fire", layers(
        "{name: fire2, op: fire, squeeze: 2, expand1x1: 2, expand3x3: 2}",
        "{name: fire2_squeeze, op: relu}", output="fire2_squeeze"),
     5, ["fire2_squeeze", "fire2", "line 4"]),
    ("number-as-string", layers('{name: a, op: conv, out: 4, kernel: "3"}'), 4,
     ["layer 'a'", "field 'kernel'", "string"]),
    ("number-as-string-in-pair", layers('{name: a, op: conv, out: 4, kernel: [3, "3"]}'), 4,
     ["layer 'a'", "field 'kernel'"]),
    ("bool-where-int", layers("{name: a, op: conv, out: true, kernel: 3}"), 4,
     ["layer 'a'", "field 'out'", "positive integer"]),
    ("bool-in-pair", layers("{name: a, op: conv, out: 2, kernel: [true, 3]}"), 4,
     ["layer 'a'", "field 'kernel'"]),
    ("int-where-bool", layers("{name: a, op: conv, out: 2, kernel: 3, relu: 1}"), 4,
     ["layer 'a'", "field 'relu'", "true or false"]),
    ("float-where-int", layers("{name: a, op: conv, out: 3.5, kernel: 3}"), 4,
     ["layer 'a'", "field 'out'", "3.5"]),
    ("integral-float-where-int", layers("{name: a, op: conv, out: 3.0, kernel: 3}"), 4,
     ["layer 'a'", "field 'out'"]),
    ("zero-out", layers("{name: a, op: conv, out: 0, kernel: 3}"), 4, ["field 'out'"]),
    ("negative-out", layers("{name: a, op: conv, out: -4, kernel: 3}"), 4, ["field 'out'"]),
    ("zero-kernel", layers("{name: a, op: conv, out: 2, kernel: [3, 0]}"), 4,
     ["field 'kernel'"]),
    ("zero-stride", layers("{name: a, op: maxpool, kernel: 2, stride: 0}"), 4,
     ["field 'stride'"]),
    ("negative-pad", layers("{name: a, op: conv, out: 2, kernel: 3, pad: -1}"), 4,
     ["field 'pad'"]),
    ("pair-of-three", layers("{name: a, op: conv, out: 2, kernel: [3, 3, 3]}"), 4,
     ["field 'kernel'"]),
    ("absurd-size", layers("{name: a, op: conv, out: 100000000, kernel: 1}"), 4,
     ["field 'out'", "100000000"]),
    ("zero-input-size", "name: t\ninput: {shape: [3, 0, 8]}\nlayers:\n  - {name: a, op: relu}\n"
     "output: a\n", 2, ["input"]),
    ("negative-input-size", "name: t\ninput: {shape: [3, -9, 8]}\nlayers:\n"
     "  - {name: a, op: relu}\noutput: a\n", 2, ["input"]),
    ("kernel-larger-than-input", HEAD + "  - name: a\n    op: conv\n    out: 4\n"
     "    kernel: [10, 3]\noutput: a\n", 7, ["layer 'a'", "field 'kernel'", "9x8"]),
    ("pool-kernel-larger-than-input", layers("{name: a, op: relu}",
                                             "{name: b, op: maxpool, kernel: 9, ceil_mode: false}",
                                             output="b"), 5, ["layer 'b'", "field 'kernel'"]),
    ("pool-pad-more-than-half-kernel", HEAD + "  - name: a\n    op: maxpool\n    kernel: 3\n"
     "    pad: 2\noutput: a\n", 7, ["layer 'a'", "field 'pad'", "half"]),
    ("deconv-pad-crops-everything", layers("{name: a, op: deconv, out: 2, kernel: 3, pad: 5}"), 4,
     ["layer 'a'", "field 'pad'"]),
    ("add-mismatched-channels", layers("{name: a, op: conv, out: 2, kernel: 1}",
                                       "{name: s, op: add, inputs: [a, input]}", output="s"), 5,
     ["layer 's'", "field 'inputs'", "2x9x8", "3x9x8"]),
    ("concat-mismatched-hw", layers("{name: a, op: conv, out: 2, kernel: 3}",
                                    "{name: s, op: concat, inputs: [a, input]}", output="s"), 5,
     ["layer 's'", "field 'inputs'", "2x7x6", "3x9x8"]),
    ("add-single-input", layers("{name: a, op: add, inputs: [input]}"), 4,
     ["layer 'a'", "field 'inputs'"]),
    ("conv-after-linear", layers("{name: a, op: linear, out: 5}",
                                 "{name: b, op: conv, out: 2, kernel: 1}", output="b"), 5,
     ["layer 'b'", "linear"]),
    ("pool-after-linear", layers("{name: a, op: linear, out: 5}",
                                 "{name: b, op: maxpool, kernel: 1}", output="b"), 5,
     ["layer 'b'"]),
    ("global-pool-with-kernel", HEAD + "  - name: a\n    op: avgpool\n    global: true\n"
     "    kernel: 2\noutput: a\n", 7, ["layer 'a'", "field 'kernel'"]),
    ("avgpool-without-kernel", layers("{name: a, op: avgpool}"), 4, ["layer 'a'", "kernel"]),
    ("unused-layer", layers("{name: a, op: relu}", "{name: b, op: relu}", "{name: c, op: relu, "
                            "input: a}", output="c"), 5, ["layer 'b'", "never used"]),
    ("output-unknown-layer", layers("{name: a, op: relu}", output="nosuch"), 5,
     ["field 'output'", "nosuch"]),
    ("output-listed-twice", layers("{name: a, op: relu}", "{name: b, op: relu}",
                                   output="[a, b, a]"), 6, ["field 'output'", "'a'", "twice"]),
    ("output-empty", layers("{name: a, op: relu}", output="[]"), 5, ["field 'output'"]),
    ("output-is-input", layers("{name: a, op: relu}", output="[a, input]"), 5,
     ["field 'output'", "input"]),
    ("layer-not-a-mapping", layers("relu"), 4, ["layers"]),
    ("generated-name-collides-with-earlier-layer", layers(
        "{name: a_relu, op: relu}", "{name: a, op: conv, out: 2, kernel: 1, relu: true, "
        "input: input}", output="[a, a_relu]"), 5, ["a_relu", "line 4"]),
    ("relu-on-deconv", layers("{name: a, op: deconv, out: 2, kernel: 2, stride: 2, relu: true}"),
     4, ["layer 'a'", "field 'relu'", "add a layer {name: ..., op: relu} after it",
         "fused into the deconv's kernel"]),
    ("relu-on-maxpool", layers("{name: a, op: maxpool, kernel: 2, relu: true}"), 4,
     ["layer 'a'", "field 'relu'", "add a layer {name: ..., op: relu} after it"]),
    ("merge-key", "name: t\ninput: {shape: [3, 9, 8]}\ndescription: &b {op: relu}\nlayers:\n"
     "  - {name: a, <<: *b}\noutput: a\n", 5, ["merge"]),
]


@pytest.mark.parametrize("text, line, needles",
                         [pytest.param(t, ln, nd, id=i) for i, t, ln, nd in MODEL_CASES])
def test_bad_model(tmp_path, text, line, needles):
    summary_error(tmp_path, text, line, *needles)


def test_bad_model_in_process_raises_model_error():
    """The same errors from Python: a ModelError with its location attributes."""
    with pytest.raises(ModelError) as info:
        squeezegen.parse_model(layers("{name: a, op: conv, out: 4, kernel: \"3\"}"), "m.yaml")
    err = info.value
    assert (err.file, err.line, err.layer, err.field) == ("m.yaml", 4, "a", "kernel")
    assert str(err).startswith("m.yaml:4: layer 'a', field 'kernel': ")


@pytest.mark.parametrize("op", ["[conv]", "{x: 1}"], ids=["list", "map"])
def test_op_not_a_string(tmp_path, op):
    summary_error(tmp_path, layers(f"{{name: a, op: {op}}}"), 4, "layer 'a'", "field 'op'")


def test_scalar_document_names_its_line(tmp_path):
    summary_error(tmp_path, "just some text\n", 1, "mapping")


def test_deeply_nested_yaml_refused_cleanly(tmp_path):
    depth = 3000
    text = ("name: t\ndescription: " + "[" * depth + "]" * depth + "\n" + HEAD[8:]
            + "  - {name: a, op: relu}\noutput: a\n")
    summary_error(tmp_path, text, 2, "nest")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    check_error(cli("summary", path), "document", file=path)


@pytest.mark.parametrize("text, line", [
    (layers('{name: a, op: relu, input: !!python/object/apply:os.system ["touch PWNED"]}'), 4),
    ('name: !!python/object/apply:os.system ["touch PWNED"]\n' + HEAD[8:]
     + "  - {name: a, op: relu}\noutput: a\n", 1),
    (layers("{name: a, op: relu}") + "description: !!python/object/new:os.system [touch PWNED]\n",
     6),
    (layers("{name: a, op: relu}") + "description: !!python/name:os.system\n", 6),
], ids=["apply-in-layer", "apply-as-name", "new-in-description", "python-name"])
def test_yaml_python_tags_refused_and_not_run(tmp_path, text, line):
    summary_error(tmp_path, text, line, "tag")
    assert not (tmp_path / "PWNED").exists(), "the YAML tag ran a command"


def test_alias_bomb_refused_quickly(tmp_path):
    lol = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lol.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(lol) + "\n" + HEAD + "  - {name: a, op: relu}\noutput: a\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.monotonic()
    r = cli("summary", path, timeout=30)
    assert time.monotonic() - start < 10
    msg = check_error(r, "alias", file=path)
    # the anchor's line (1) or the first alias's line (2)
    assert f"{path}:1:" in msg or f"{path}:2:" in msg, msg


def test_model_file_missing(tmp_path):
    path = tmp_path / "nope.yaml"
    check_error(cli("summary", path), "not found", file=path)


def test_onnx_file_given_as_model_points_at_import(tmp_path):
    path = tmp_path / "mynet.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.13.0")     # how an ONNX file starts
    check_error(cli("summary", path), "ONNX model",
                "squeezegen import <FILE> -o models/mynet.yaml", file=path)


def test_model_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(layers("{name: a, op: relu}").encode() + b"# caf\xe9 \xff\xfe\n")
    check_error(cli("summary", path), "UTF-8", file=path)


def test_model_file_is_a_directory(tmp_path):
    check_error(cli("summary", tmp_path), "not a regular file", file=tmp_path)


def test_run_reports_model_errors_too(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(layers("{name: a, op: conv, out: 4, kernel: 3, stide: 2}"))
    np.savez(tmp_path / "w.npz", x=np.zeros(1, np.float32))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 9, 8), np.float32))
    check_error(cli("run", path, "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
                    "--output", tmp_path / "y.npy", "--backend", "numpy"), "stide", file=path,
                line=4)
    assert not (tmp_path / "y.npy").exists()


def test_bad_command_line_usage_exits_2(tmp_path):
    r = cli("init-weights", ROOT / "models" / "lenet.yaml", "-o", tmp_path / "w.npz",
            "--seed", "-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "seed" in r.stderr
    assert not (tmp_path / "w.npz").exists()


# ------------------------------------------------------------------ weights
WEIGHTS_MODEL = """name: w
input: {shape: [2, 6, 5]}
layers:
  - {name: c, op: conv, out: 3, kernel: 3, relu: true}
  - {name: fire2, op: fire, squeeze: 2, expand1x1: 2, expand3x3: 2}
  - {name: fc, op: linear, out: 4}
output: fc
"""


class Setup:
    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.model = tmp_path / "w.yaml"
        self.model.write_text(WEIGHTS_MODEL)
        self.graph = squeezegen.load_model(self.model)
        self.weights = random_weights(self.graph)
        self.x = random_input(self.graph, 2)
        self.xfile = tmp_path / "x.npy"
        np.save(self.xfile, self.x)
        self.wfile = tmp_path / "weights.npz"
        self.out = tmp_path / "y.npy"

    def save(self, weights):
        np.savez(self.wfile, **weights)
        return self.wfile

    def run(self, weights=None, x=None, wfile=None):
        if weights is not None:
            self.save(weights)
        elif wfile is None and not self.wfile.exists():
            self.save(self.weights)
        xfile = self.xfile
        if x is not None:
            xfile = self.dir / "x_bad.npy"
            np.save(xfile, x)
        return cli("run", self.model, "--weights", wfile or self.wfile, "--input", xfile,
                   "--output", self.out, "--backend", "numpy", cwd=self.dir)


@pytest.fixture
def setup(tmp_path):
    return Setup(tmp_path)


def test_good_weights_run(setup):
    """The baseline the weight cases below vary: this one works."""
    r = setup.run(setup.weights)
    assert r.returncode == 0, r.stderr
    assert np.load(setup.out).shape == (2, 4)


def test_weights_missing_keys_listed(setup):
    w = dict(setup.weights)
    del w["c.bias"], w["fire2.expand3x3.weight"]
    check_error(setup.run(w), "missing", "c.bias", "fire2.expand3x3.weight", file=setup.wfile)
    assert not setup.out.exists()


def test_weights_that_do_not_fit_say_so(setup):
    w = dict(setup.weights)
    del w["c.bias"]
    check_error(setup.run(w), "the weights do not fit model 'w': missing 1 tensor(s): c.bias",
                file=setup.wfile)


def test_weights_empty_archive(setup):
    np.savez(setup.wfile)                            # a valid .npz without arrays
    check_error(setup.run(), "missing 10 tensor(s)", "the archive holds no tensors at all",
                file=setup.wfile)


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_weights_under_a_wrapper_prefix_are_recognised(setup, prefix):
    msg = check_error(setup.run({prefix + k: v for k, v in setup.weights.items()}),
                      f"the keys start with '{prefix}'", f"'{prefix}c.weight' for 'c.weight'",
                      f"k.removeprefix('{prefix}')", file=setup.wfile)
    assert "unexpected" not in msg, msg


def test_weights_extra_keys_listed(setup):
    w = dict(setup.weights, **{"c.scale": np.ones(3, np.float32),
                               "zzz.weight": np.ones((2, 2), np.float32)})
    check_error(setup.run(w), "c.scale", "zzz.weight", file=setup.wfile)


def test_weights_wrong_shape(setup):
    w = dict(setup.weights, **{"c.weight": np.ones((3, 2, 3, 2), np.float32)})
    check_error(setup.run(w), "c.weight", "(3, 2, 3, 3)", "(3, 2, 3, 2)", file=setup.wfile)


def test_weights_transposed_linear(setup):
    w = dict(setup.weights)
    w["fc.weight"] = np.ascontiguousarray(w["fc.weight"].T)
    check_error(setup.run(w), "fc.weight", str(tuple(setup.weights["fc.weight"].shape)),
                str(tuple(w["fc.weight"].shape)), file=setup.wfile)


@pytest.mark.parametrize("key, shape", [
    ("c.bias", (1, 3)), ("fire2.squeeze.bias", (2, 1)), ("fc.bias", (1,)),
    ("c.weight", (1, 3, 2, 3, 3)),
], ids=["bias-1xN", "bias-Nx1", "bias-1-broadcasts", "weight-extra-unit-dim"])
def test_weights_merely_broadcastable_shape_rejected(setup, key, shape):
    w = dict(setup.weights, **{key: np.ones(shape, np.float32)})
    expected = str(tuple(setup.weights[key].shape))
    check_error(setup.run(w), key, expected, str(shape), file=setup.wfile)


@pytest.mark.parametrize("key, value", [("fc.weight", np.nan), ("fire2.squeeze.bias", np.inf),
                                        ("c.weight", -np.inf)], ids=["nan", "inf", "-inf"])
def test_weights_non_finite(setup, key, value):
    w = {k: v.copy() for k, v in setup.weights.items()}
    w[key].flat[1] = value
    check_error(setup.run(w), key, file=setup.wfile)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_weights_integer_dtype(setup, dtype):
    w = dict(setup.weights, **{"c.weight": np.ones((3, 2, 3, 3), dtype)})
    check_error(setup.run(w), "c.weight", np.dtype(dtype).name, file=setup.wfile)


class _Boom:
    """Unpickling this runs `touch UNPICKLED` (in the cwd of the process that unpickles)."""

    def __reduce__(self):
        return (os.system, ("touch UNPICKLED",))


def test_weights_object_array_refused_without_unpickling(setup):
    w = dict(setup.weights)
    w["c.bias"] = np.array([_Boom(), 1, 2], dtype=object)
    np.savez(setup.wfile, **w)                      # pickles the object array
    assert not (setup.dir / "UNPICKLED").exists()
    check_error(setup.run(), "holds Python objects", file=setup.wfile)
    assert not (setup.dir / "UNPICKLED").exists(), "the weights file was unpickled"


@pytest.mark.parametrize("cut", [0.5, 0.99, 30, 0], ids=["half", "all-but-end", "30-bytes",
                                                       "empty"])
def test_weights_truncated_refused(setup, cut):
    """Exit 1, the error (first line) names the file; no traceback. (The one-line rule is checked
    separately below: a leaked-file warning follows the error today.)"""
    data = setup.save(setup.weights).read_bytes()
    setup.wfile.write_bytes(data[:int(len(data) * cut) if isinstance(cut, float) else cut])
    r = setup.run()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("squeezegen: error:") and str(setup.wfile) in first, first
    assert not setup.out.exists()


def test_weights_truncated_one_line(setup):
    data = setup.save(setup.weights).read_bytes()
    setup.wfile.write_bytes(data[:len(data) // 2])
    check_error(setup.run(), "truncated", file=setup.wfile)


def test_weights_file_missing(setup):
    check_error(setup.run(wfile=setup.dir / "none.npz"), "not found", file=setup.dir / "none.npz")


def test_weights_file_is_npy_not_npz(setup):
    path = setup.dir / "w.npy"
    np.save(path, np.zeros(3, np.float32))
    check_error(setup.run(wfile=path), "npz", file=path)


def test_weights_file_is_text(setup):
    path = setup.dir / "weights.dat"
    path.write_text("these are not weights\n")
    check_error(setup.run(wfile=path), "npz", file=path)


def test_check_weights_in_process(setup):
    w = dict(setup.weights)
    w["fc.bias"] = np.ones((1, 4), np.float32)
    with pytest.raises(WeightsError, match=r"fc\.bias.*\(1, 4\).*\(4,\)"):
        check_weights(setup.graph, w)
    with pytest.raises(WeightsError, match="fc.bias"):
        ReferenceExecutor(setup.graph, {k: v for k, v in w.items() if k != "fc.bias"})
    # float64 weights are fine: converted to float32
    ok = check_weights(setup.graph, {k: v.astype(np.float64) for k, v in setup.weights.items()})
    assert all(v.dtype == np.float32 for v in ok.values())


# ------------------------------------------------------------------ inputs
def test_input_wrong_rank(setup):
    check_error(setup.run(x=setup.x[0]), "(2, 6, 5)", "(N, 2, 6, 5)",
                file=setup.dir / "x_bad.npy")
    assert not setup.out.exists()


def test_input_wrong_shape(setup):
    check_error(setup.run(x=np.zeros((2, 2, 5, 6), np.float32)), "(2, 2, 5, 6)", "(N, 2, 6, 5)",
                file=setup.dir / "x_bad.npy")


def test_input_empty_batch(setup):
    check_error(setup.run(x=np.zeros((0, 2, 6, 5), np.float32)), "N must be at least 1",
                file=setup.dir / "x_bad.npy")


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_input_wrong_dtype(setup, dtype):
    check_error(setup.run(x=setup.x.astype(dtype)), np.dtype(dtype).name, "float32",
                file=setup.dir / "x_bad.npy")


@pytest.mark.parametrize("content", [b"1.0 2.0 3.0\n", b"", b"\x80\x04K\x01."],
                         ids=["text", "empty", "pickle"])
def test_input_that_is_not_npy_never_suggests_pickle(setup, content):
    xfile = setup.dir / "x.dat"
    xfile.write_bytes(content)
    setup.save(setup.weights)
    r = cli("run", setup.model, "--weights", setup.wfile, "--input", xfile, "--output",
            setup.out, "--backend", "numpy", cwd=setup.dir)
    msg = check_error(r, "not a .npy array", file=xfile)
    assert "pickle" not in msg, msg


def test_input_object_array(setup):
    x = np.array([_Boom(), 1], dtype=object)
    xfile = setup.dir / "x_obj.npy"
    np.save(xfile, x, allow_pickle=True)
    setup.save(setup.weights)
    r = cli("run", setup.model, "--weights", setup.wfile, "--input", xfile, "--output",
            setup.out, "--backend", "numpy", cwd=setup.dir)
    msg = check_error(r, "holds Python objects", file=xfile)
    assert "allow_pickle" not in msg and "unsafely" not in msg, msg
    assert not (setup.dir / "UNPICKLED").exists()


def test_input_file_missing(setup):
    setup.save(setup.weights)
    r = cli("run", setup.model, "--weights", setup.wfile, "--input", setup.dir / "none.npy",
            "--output", setup.out, "--backend", "numpy")
    check_error(r, "not found", file=setup.dir / "none.npy")


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_input_non_finite_warns_but_runs(setup, value):
    x = setup.x.copy()
    x[1, 0, 2, 3] = value
    r = setup.run(setup.weights, x=x)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["squeezegen: warning: input holds 1 non-finite value(s) "
                                     "(NaN/Inf), first at index (1, 0, 2, 3); they propagate "
                                     "through the network"], r.stderr        # once
    y = np.load(setup.out)
    assert y.shape == (2, 4)
    assert np.isfinite(y[0]).all()          # the other image is unaffected


# ------------------------------------------------------------------ outputs
TWO_OUTPUTS = """name: two
input: {shape: [2, 6, 5]}
layers:
  - {name: c, op: conv, out: 3, kernel: 3}
  - {name: fc, op: linear, out: 4}
output: [fc, c]
"""


@pytest.mark.parametrize("name, two, needles", [
    ("seg.jpg", False, [".png"]),
    ("seg.jpeg", False, [".png"]),
    ("y.txt", False, ["'.txt'", ".npy", ".npz", ".png"]),
    ("y", False, ["'", ".npy"]),
    ("y.npy", True, ["2 outputs (fc, c)", ".npz"]),
], ids=["jpg", "jpeg", "txt", "no-suffix", "npy-for-two-outputs"])
def test_output_whose_extension_does_not_name_what_is_written(setup, name, two, needles):
    """Refused before anything runs, and nothing is written."""
    model = setup.model
    if two:
        model = setup.dir / "two.yaml"
        model.write_text(TWO_OUTPUTS)
    setup.save(random_weights(squeezegen.load_model(model)))
    out = setup.dir / name
    r = cli("run", model, "--weights", setup.wfile, "--input", setup.xfile, "--output", out,
            "--backend", "numpy", cwd=setup.dir)
    check_error(r, *needles, file=out)
    assert not out.exists() and not out.with_suffix(".npy").exists()


def test_check_input_in_process(setup):
    net = ReferenceExecutor(setup.graph, setup.weights)
    with pytest.raises(InputError, match="float64"):
        net(setup.x.astype(np.float64))
    with pytest.raises(InputError, match="shape"):
        net(setup.x[:, :, :5])
    with pytest.raises(InputError):
        net(setup.x.tolist())
    x = setup.x.copy()
    x[0, 0, 0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(setup.x)                        # finite input: no warning


# ------------------------------------------------------------------ build --check
def test_build_check_of_a_missing_folder_says_it_does_not_exist(tmp_path):
    check_error(cli("build", ROOT / "models/lenet.yaml", "--check", "-o", tmp_path),
                "the folder does not exist", "squeezegen build", file=tmp_path / "lenet")


def test_build_check_names_missing_and_differing_files(tmp_path):
    assert cli("build", ROOT / "models/lenet.yaml", "-o", tmp_path).returncode == 0
    folder = tmp_path / "lenet"
    (folder / "lenet.cu").write_text("// edited\n")
    msg = check_error(cli("build", ROOT / "models/lenet.yaml", "--check", "-o", tmp_path),
                      "lenet.cu differs from what", file=folder)
    assert "is missing" not in msg, msg
    (folder / "lenet.h").unlink()
    (folder / "manifest.json").write_text("{}\n")
    check_error(cli("build", ROOT / "models/lenet.yaml", "--check", "-o", tmp_path,
                    "--precision", "tf32"),
                "lenet.h is missing; lenet.cu and manifest.json differ from what",
                "--precision tf32", file=folder)


def test_bench_compare_names_and_a_bad_one():
    """`--compare torch` is every PyTorch variant that fits the precision; a wrong name is a
    one-line error before anything runs."""
    from squeezegen.cli import compare_variants
    assert compare_variants("torch") == ["eager", "graph", "compile"]
    assert compare_variants("torch,numpy", "fp16") == ["eager", "graph", "compile", "fp16", "numpy"]
    assert compare_variants("graph, eager,graph") == ["graph", "eager"]
    assert compare_variants("none") == []
    check_error(cli("bench", ROOT / "models/squeezeseg.yaml", "--compare", "torch,cudnn"),
                "--compare takes torch", "'torch,cudnn'")
    check_error(cli("bench", ROOT / "models/squeezeseg.yaml", "--compare", ","), "--compare takes")


# ------------------------------------------------------------------ forged sizes, values, outputs
def _forged_npy(shape) -> bytes:
    """An .npy header declaring `shape` float32, followed by 16 bytes of data."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                "shape": tuple(shape)})
    return buf.getvalue() + bytes(16)


def test_weights_member_whose_header_claims_terabytes_is_refused_unread(setup):
    """numpy would try to allocate what the header declares: refused from the header instead."""
    import zipfile
    setup.save(setup.weights)
    with zipfile.ZipFile(setup.wfile, "a") as z:
        z.writestr("big.npy", _forged_npy((100000, 100000, 100)))
    check_error(setup.run(wfile=setup.wfile), "'big'", "truncated or corrupt",
                "4,000,000,000,000 bytes", file=setup.wfile)


def test_input_whose_header_claims_more_than_the_file_holds(setup):
    bad = setup.dir / "forged.npy"
    bad.write_bytes(_forged_npy((10**8, 2, 6, 5)))
    setup.save(setup.weights)
    r = cli("run", setup.model, "--weights", setup.wfile, "--input", bad, "--output", setup.out,
            "--backend", "numpy", cwd=setup.dir)
    check_error(r, "truncated or corrupt", "[100000000, 2, 6, 5]", file=bad)


def test_batchnorm_with_a_negative_variance_is_refused(tmp_path):
    """It would make every output NaN (sqrt of a negative): refused naming layer and tensor."""
    model = tmp_path / "bn.yaml"
    model.write_text("name: bn\ninput: {shape: [3, 4, 4]}\nlayers:\n"
                     "  - {name: p, op: maxpool, kernel: 2}\n  - {name: n, op: batchnorm}\n"
                     "output: n\n")
    graph = squeezegen.load_model(model)
    weights = random_weights(graph)
    weights["n.running_var"] = np.array([1.0, -0.5, 2.0], np.float32)
    with pytest.raises(WeightsError, match=r"layer 'n': running_var .* channel 1: -0.5"):
        check_weights(graph, weights)
    np.savez(tmp_path / "w.npz", **weights)
    np.save(tmp_path / "x.npy", random_input(graph, 1))
    r = cli("run", model, "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npy", "--backend", "numpy", cwd=tmp_path)
    check_error(r, "layer 'n'", "running_var", file=tmp_path / "w.npz")
    weights["n.running_var"] = np.array([1.0, -1e-6, 2.0], np.float32)   # within eps: PyTorch's
    check_weights(graph, weights)


def test_png_output_of_a_model_without_class_scores_is_refused_before_running(setup):
    out = setup.dir / "seg.png"
    setup.save(setup.weights)
    r = cli("run", setup.model, "--weights", setup.wfile, "--input", setup.xfile, "--output", out,
            "--backend", "numpy", cwd=setup.dir)
    check_error(r, "(classes, H, W)", "'fc'", "[4]", file=out)
    assert not out.exists() and not out.with_suffix(".npy").exists()


def test_png_output_of_more_than_256_classes_is_refused(tmp_path):
    """An 8-bit palette cannot hold class 298 (it used to be written as 42)."""
    model = tmp_path / "many.yaml"
    model.write_text("name: many\ninput: {shape: [3, 4, 4]}\nlayers:\n"
                     "  - {name: c, op: conv, out: 300, kernel: 1}\noutput: c\n")
    graph = squeezegen.load_model(model)
    np.savez(tmp_path / "w.npz", **random_weights(graph))
    np.save(tmp_path / "x.npy", random_input(graph, 1))
    out = tmp_path / "seg.png"
    r = cli("run", model, "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--output", out, "--backend", "numpy", cwd=tmp_path)
    check_error(r, "at most 256 classes", "300", file=out)
    assert not out.exists()


def test_image_claiming_ten_billion_pixels_is_a_clean_error(tmp_path):
    """Pillow's decompression-bomb guard is a user error, not an internal one."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data    # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    model = ROOT / "models" / "lenet.yaml"
    graph = squeezegen.load_model(model)
    np.savez(tmp_path / "w.npz", **random_weights(graph))
    r = cli("run", model, "--weights", tmp_path / "w.npz", "--input", bomb,
            "--output", tmp_path / "y.npy", "--backend", "numpy", cwd=tmp_path)
    check_error(r, "cannot read the image", "decompression bomb", file=bomb)


def test_out_of_host_memory_is_one_line(monkeypatch, capsys):
    from squeezegen import cli as cli_module

    def exhausted(args):
        raise MemoryError
    monkeypatch.setattr(cli_module, "_cmd_summary", exhausted)
    monkeypatch.delenv("SQUEEZEGEN_DEBUG", raising=False)
    assert cli_module.main(["summary", str(ROOT / "models" / "lenet.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("squeezegen: error: out of host memory"), err


def test_a_file_name_with_a_line_break_stays_on_one_line(tmp_path):
    bad = tmp_path / "bad\nname.yaml"
    bad.write_text("name: t\nbogus: 1\n")
    r = cli("summary", bad, cwd=tmp_path)
    check_error(r, "bad\\nname.yaml:2", "bogus")


def test_large_object_arrays_are_refused_as_objects_not_as_truncated(setup):
    """A pickle is smaller than its header's 8 bytes an element: still 'holds Python objects'."""
    bad = setup.dir / "objects.npy"
    np.save(bad, np.full(1000, None, object), allow_pickle=True)
    setup.save(setup.weights)
    r = cli("run", setup.model, "--weights", setup.wfile, "--input", bad, "--output", setup.out,
            "--backend", "numpy", cwd=setup.dir)
    check_error(r, "Python objects", file=bad)
    weights = dict(setup.weights, **{"fc.weight": np.full((4, 7), None, object)})
    np.savez(setup.wfile, **weights)
    check_error(setup.run(wfile=setup.wfile), "Python objects", file=setup.wfile)


def test_a_variance_of_minus_eps_in_float32_is_refused(tmp_path):
    """running_var + eps is 0 in float32, as the kernel adds them: 1/sqrt of it is Inf there and
    NaN in PyTorch, so it is refused like a negative one."""
    graph = squeezegen.parse_model("name: bn\ninput: {shape: [2, 3, 3]}\nlayers:\n"
                                   "  - {name: p, op: maxpool, kernel: 1}\n"
                                   "  - {name: n, op: batchnorm, eps: 1.0e-5}\noutput: n\n")
    weights = random_weights(graph)
    weights["n.running_var"] = np.array([1.0, np.float32(-1e-5)], np.float32)
    with pytest.raises(WeightsError, match="running_var"):
        check_weights(graph, weights)


# ------------------------------------------------ an audit's findings (hostile inputs, round 2)
SMALL = """name: small
input: {shape: [2, 6, 5]}
layers:
  - {name: c, op: conv, out: 3, kernel: 3, pad: 1}
output: c
"""


def _small(tmp_path):
    (tmp_path / "m.yaml").write_text(SMALL)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    squeezegen.save_weights(tmp_path / "w.npz", squeezegen.init_weights(graph, 1))
    np.save(tmp_path / "x.npy", random_input(graph, 1))
    return graph


@pytest.mark.parametrize("field", ["negative_slope: 1{zeros}", "negative_slope: -1{zeros}"])
def test_an_integer_beyond_a_double_in_a_float_field(tmp_path, field):
    text = ("name: m\ninput: {shape: [1, 4, 4]}\nlayers:\n"
            f"  - {{name: a, op: leaky_relu, {field.format(zeros='0' * 400)}}}\noutput: a\n")
    (tmp_path / "m.yaml").write_text(text)
    check_error(cli("summary", tmp_path / "m.yaml"), "layer 'a'", "field 'negative_slope'",
                "an integer of 401 digits is beyond float32's range", file=tmp_path / "m.yaml",
                line=4)


@pytest.mark.parametrize("value,reads", [("010", "8"), ("1:30", "90"), ("1_0", "10"),
                                         ("0x10", "16"), ("0b11", "3")])
def test_yaml_11_integer_forms_are_refused(tmp_path, value, reads):
    """YAML 1.1 reads 010 as 8 and 1:30 as 90: numbers nobody meant. Only plain decimals."""
    (tmp_path / "m.yaml").write_text(SMALL.replace("out: 3", f"out: {value}"))
    check_error(cli("summary", tmp_path / "m.yaml"), f"'{value}' is not a plain decimal integer",
                f"would read it as {reads}", "field 'out'", file=tmp_path / "m.yaml", line=4)


def test_yaml_11_float_forms_are_refused_and_plain_ones_read():
    from squeezegen.frontend.parse import parse_model
    with pytest.raises(ModelError, match="'1_0.5' is not a plain decimal number"):
        parse_model(SMALL.replace("pad: 1}", "pad: 1}\n  - {name: l, op: leaky_relu, "
                                  "negative_slope: 1_0.5}").replace("output: c", "output: l"))
    for good in ("0.5", "5e-1", ".5", "+0.5"):
        graph = parse_model(SMALL.replace("pad: 1}", "pad: 1}\n  - {name: l, op: leaky_relu, "
                                          f"negative_slope: {good}}}").replace("output: c",
                                                                               "output: l"))
        assert graph["l"].attrs["negative_slope"] == 0.5


def test_user_text_in_an_error_stays_on_one_line_without_escapes(tmp_path):
    """Control characters in a layer name, a field name or a quoted value are shown escaped:
    the error stays one line and cannot drive the terminal."""
    (tmp_path / "m.yaml").write_text('name: m\ninput: {shape: [1, 4, 4]}\nlayers:\n'
                                     '  - {name: "a\\nb\\e[31m", op: relu}\noutput: a\n')
    msg = check_error(cli("summary", tmp_path / "m.yaml"), "layer 'a\\nb\\x1b[31m'",
                      file=tmp_path / "m.yaml")
    assert "\x1b" not in msg
    (tmp_path / "m.yaml").write_text('name: m\ninput: {shape: [1, 4, 4]}\nlayers:\n'
                                     '  - {name: a, op: relu, "f\\ro\\e[2J": 1}\noutput: a\n')
    msg = check_error(cli("summary", tmp_path / "m.yaml"), "field 'f\\ro\\x1b[2J'")
    assert "\x1b" not in msg and "\r" not in msg


def _patched_zip(src: Path, dst: Path, flag_bits: int = 0, method: int | None = None) -> None:
    """`src` (a stored zip) with its members' general-purpose flags or method changed, in the
    local and the central headers."""
    data = bytearray(src.read_bytes())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(sig)
        while at >= 0:
            data[at + flag_at] |= flag_bits
            if method is not None:
                data[at + method_at:at + method_at + 2] = method.to_bytes(2, "little")
            at = data.find(sig, at + 4)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["encrypted", "unknown method"])
def test_weights_in_a_zip_numpy_cannot_open(tmp_path, how):
    _small(tmp_path)
    bad = tmp_path / "bad.npz"
    _patched_zip(tmp_path / "w.npz", bad, flag_bits=1 if how == "encrypted" else 0,
                 method=97 if how == "unknown method" else None)
    check_error(cli("run", tmp_path / "m.yaml", "--weights", bad, "--input", tmp_path / "x.npy",
                    "--output", tmp_path / "y.npy", "--backend", "numpy"),
                "not a readable .npz weights file", file=bad)
    assert not (tmp_path / "y.npy").exists()


def test_a_weights_zip_bomb_is_refused_before_it_inflates(tmp_path):
    """A 0.5 MB archive whose member inflates to 512 MB (zeros): refused from the zip's
    directory, before a byte is inflated."""
    import zipfile
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("c.weight.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.zeros(2**27, np.float32))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(WeightsError, match=r"would inflate to 536,871,\d+ bytes from a"):
        squeezegen.load_weights(bomb)


def test_save_weights_never_pickles_and_takes_names_only(tmp_path):
    w = {"c.weight": np.ones((3, 2, 3, 3), np.float32), "c.bias": np.zeros(3, np.float64)}
    squeezegen.save_weights(tmp_path / "w.npz", w)
    back = squeezegen.load_weights(tmp_path / "w.npz")
    assert set(back) == set(w) and all(np.array_equal(back[k], w[k]) for k in w)
    for bad, match in [({"../x": np.ones(2)}, "bad weight name '../x'"),
                       ({1: np.ones(2)}, "bad weight name 1"),
                       ({"a": np.array(["x"])}, "'a' holds <U1 values"),
                       ({"a": np.array([object()])}, "'a' holds object values"),
                       ({"a": np.ones(2, complex)}, "'a' holds complex128 values")]:
        with pytest.raises(WeightsError, match=match):
            squeezegen.save_weights(tmp_path / "bad.npz", bad)
    with pytest.raises(WeightsError, match="must be a dict of arrays, got NoneType"):
        squeezegen.save_weights(tmp_path / "bad.npz", None)
    assert not (tmp_path / "bad.npz").exists()


def test_float64_weights_beyond_float32(tmp_path):
    graph = _small(tmp_path)
    w = {k: v.astype(np.float64) for k, v in squeezegen.init_weights(graph, 1).items()}
    w["c.weight"][1, 0, 2, 2] = -1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # no numpy overflow warning first
        with pytest.raises(WeightsError, match=r"'c.weight' holds 1 value\(s\) beyond float32's "
                           r"range .* first -1e\+300 at index \(1, 0, 2, 2\)"):
            check_weights(graph, w)


def test_run_and_init_weights_never_write_over_what_they_read(tmp_path):
    _small(tmp_path)
    m, w, x = tmp_path / "m.yaml", tmp_path / "w.npz", tmp_path / "x.npy"
    before = {p: p.read_bytes() for p in (m, w, x)}
    for output, what in [(x, "the input"), (w, "the weights"), (tmp_path / "x.png", "the input"),
                         (m, "the model")]:
        r = cli("run", m, "--weights", w, "--input", x, "--output", output, "--backend", "numpy")
        if output == m:                              # refused for its suffix first: fine too
            assert r.returncode == 1 and "Traceback" not in r.stderr
            continue
        check_error(r, f"would overwrite {what}")
    check_error(cli("init-weights", m, "-o", m), "would overwrite the model")
    assert {p: p.read_bytes() for p in (m, w, x)} == before
    assert not (tmp_path / "x.png").exists()


def test_a_failed_build_leaves_the_old_files_not_a_mix(tmp_path):
    _small(tmp_path)
    assert cli("build", tmp_path / "m.yaml", "-o", tmp_path / "g").returncode == 0
    folder = tmp_path / "g" / "small"
    old = {p.name: p.read_bytes() for p in folder.iterdir()}
    (tmp_path / "m.yaml").write_text(SMALL.replace("out: 3", "out: 4"))
    (folder / "small.h").unlink()
    (folder / "small.h").mkdir()                     # a folder in the way of one file
    check_error(cli("build", tmp_path / "m.yaml", "-o", tmp_path / "g"),
                "cannot write: it is a folder", file=folder / "small.h")
    assert (folder / "small.cu").read_bytes() == old["small.cu"]
    assert (folder / "manifest.json").read_bytes() == old["manifest.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(old)      # no temp files left


def test_a_file_in_the_way_of_an_output_folder_is_named(tmp_path):
    _small(tmp_path)
    (tmp_path / "afile").write_text("x")
    check_error(cli("run", tmp_path / "m.yaml", "--weights", tmp_path / "w.npz", "--input",
                    tmp_path / "x.npy", "--output", tmp_path / "afile" / "sub" / "y.npy",
                    "--backend", "numpy"), f"{tmp_path / 'afile'} is a file, not a folder")


def test_a_long_name_that_fits_is_written(tmp_path):
    """The temp file's name (the final name, a dot, 8 random characters, .tmp) must not push
    a name that fits the file system past its 255 bytes."""
    from squeezegen.fsutil import atomic_write, temp_prefix
    name = "a" * 250 + ".png"
    atomic_write(tmp_path / name, lambda f: f.write(b"x"))
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert len(temp_prefix(name)) + 8 + len(".tmp") <= 255
    assert temp_prefix("short.png") == ".short.png."


@pytest.mark.parametrize("bad", [None, 3, b"m.yaml", {}])
def test_the_api_refuses_what_is_not_a_model(bad):
    with pytest.raises(ModelError, match="a model is a path to a .yaml file or a Graph"):
        squeezegen.load_model(bad)


def test_the_api_refuses_odd_weights_and_seeds(tmp_path):
    graph = _small(tmp_path)
    w = squeezegen.init_weights(graph, 1)
    with pytest.raises(WeightsError, match="weight names are strings, got 1"):
        squeezegen.reference(graph, {**w, 1: np.ones(2)})
    with pytest.raises(WeightsError, match="weights are an .npz path or a dict of arrays"):
        squeezegen.reference(graph, 3)
    with pytest.raises(WeightsError, match="seed must be a non-negative integer"):
        squeezegen.init_weights(graph, -1)
    assert squeezegen.build(graph, batch=np.int64(2)).output.files


def test_comment_filter_leaves_no_trigraph():
    from squeezegen.codegen.ctext import comment
    for text in ("???/", "??=", "x??y??/", "a*/b", "/*/"):
        out = comment(text)
        assert "??" not in out and "*/" not in out and "/*" not in out, (text, out)


@pytest.mark.parametrize("command", ["segment", "bench"])
def test_a_json_path_that_cannot_be_written_is_refused_before_the_work(tmp_path, command):
    _small(tmp_path)
    (tmp_path / "jdir").mkdir()
    args = ([command, tmp_path / "m.yaml", "--weights", tmp_path / "w.npz"]
            + ([tmp_path, "-o", tmp_path / "out"] if command == "segment" else []))
    check_error(cli(*args, "--json", tmp_path / "jdir"), "cannot write: it is a folder",
                file=tmp_path / "jdir")
    assert not (tmp_path / "out").exists()


def test_import_writes_its_yaml_and_weights_together_or_neither(tmp_path):
    """A folder in the way of the YAML: neither file is written (the weights used to be)."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    torch.onnx.export(model, torch.randn(1, 3, 8, 8), str(tmp_path / "ok.onnx"), dynamo=False,
                      opset_version=13)
    (tmp_path / "o" / "x.yaml").mkdir(parents=True)
    check_error(cli("import", tmp_path / "ok.onnx", "-o", tmp_path / "o" / "x.yaml"),
                "cannot write: it is a folder", file=tmp_path / "o" / "x.yaml")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x.yaml"]
    assert cli("import", tmp_path / "ok.onnx", "-o", tmp_path / "p" / "x.yaml").returncode == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["x.npz", "x.yaml"]
