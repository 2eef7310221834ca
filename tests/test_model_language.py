"""The model language: Table 1 from models/squeezeseg.yaml, the other models' sizes, defaults and
lowering, weight layouts, and the CLI's summary / init-weights / run commands."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from math import prod
from pathlib import Path

import numpy as np
import pytest

import squeezegen
from squeezegen.ir.printer import param_specs, summarize
from squeezegen.reference import ReferenceExecutor

from helpers import assert_close, random_input, random_weights, small_model, yaml_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

TABLE1_PARAMS = {
    "conv1": 14208, "pool1": 0, "fire2": 11920, "fire3": 12432, "fire4": 45344, "pool4": 0,
    "fire5": 49440, "fire6": 104880, "fire7": 111024, "fire8": 188992, "pool8": 0,
    "fire9": 197184, "conv10": 513000, "score": 21021, "score_pool8": 10773, "fuse8": 0,
    "conv11": 3969, "score_pool4": 5397, "fuse4": 0, "conv12": 3969, "score_pool1": 2037,
    "fuse1": 0, "conv13": 53361,
}
TABLE1_SHAPES = {
    "conv1": [96, 111, 111], "pool1": [96, 55, 55], "fire2": [128, 55, 55],
    "fire3": [128, 55, 55], "fire4": [256, 55, 55], "pool4": [256, 27, 27],
    "fire5": [256, 27, 27], "fire9": [512, 13, 13], "pool8": [512, 13, 13],
    "conv10": [1000, 13, 13], "score": [21, 13, 13], "conv11": [21, 27, 27],
    "conv12": [21, 55, 55], "conv13": [21, 227, 227],
}


def cli(*args, cwd=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "squeezegen", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def squeezeseg():
    return squeezegen.load_model(MODELS / "squeezeseg.yaml")


@pytest.fixture(scope="module")
def squeezeseg_summary(squeezeseg):
    return summarize(squeezeseg)


# ------------------------------------------------------------------ Table 1
def test_squeezeseg_rows_are_the_yaml_layers_in_order(squeezeseg_summary):
    assert [r["layer"] for r in squeezeseg_summary["layers"]] == list(TABLE1_PARAMS)


@pytest.mark.parametrize("layer, params", list(TABLE1_PARAMS.items()))
def test_squeezeseg_table1_params(squeezeseg_summary, layer, params):
    row = {r["layer"]: r for r in squeezeseg_summary["layers"]}[layer]
    assert row["params"] == params


def test_squeezeseg_total_params(squeezeseg_summary, squeezeseg):
    assert squeezeseg_summary["total_params"] == 1348951
    assert sum(prod(s) for s in param_specs(squeezeseg).values()) == 1348951


@pytest.mark.parametrize("layer, shape", list(TABLE1_SHAPES.items()))
def test_squeezeseg_table1_shapes(squeezeseg_summary, layer, shape):
    row = {r["layer"]: r for r in squeezeseg_summary["layers"]}[layer]
    assert row["shape"] == shape


def test_squeezeseg_ops_and_output(squeezeseg_summary, squeezeseg):
    ops = {r["layer"]: r["op"] for r in squeezeseg_summary["layers"]}
    assert ops["conv1"] == "conv" and ops["pool1"] == "maxpool" and ops["fire2"] == "fire"
    assert ops["conv13"] == "deconv" and ops["fuse8"] == "add"
    assert squeezeseg.input.type.shape == (3, 227, 227)
    assert [squeezeseg[o].type.shape for o in squeezeseg.outputs] == [(21, 227, 227)]


@pytest.mark.parametrize("model, total, out_shape", [
    ("lenet.yaml", 431080, [10]),
    ("squeezenet1_0.yaml", 1248424, [1000, 1, 1]),   # softmax over channels of 1x1
])
def test_other_model_totals(model, total, out_shape):
    s = summarize(squeezegen.load_model(MODELS / model))
    assert s["total_params"] == total
    assert s["layers"][-1]["shape"] == out_shape


def test_lenet_shapes():
    rows = {r["layer"]: r for r in summarize(squeezegen.load_model(MODELS / "lenet.yaml"))["layers"]}
    assert rows["pool2"]["shape"] == [50, 4, 4]
    assert rows["ip1"]["params"] == 800 * 500 + 500
    assert rows["prob"]["params"] == 0


def test_squeezenet_global_pool():
    rows = {r["layer"]: r for r in
            summarize(squeezegen.load_model(MODELS / "squeezenet1_0.yaml"))["layers"]}
    assert rows["conv1"]["shape"] == [96, 109, 109]
    assert rows["pool1"]["shape"] == [96, 54, 54]
    assert rows["pool8"]["shape"] == [512, 13, 13]      # 27 -> 13 (ceil, as torchvision)
    assert rows["pool10"]["shape"] == [1000, 1, 1]


# ------------------------------------------------------------------ defaults and lowering
DEFAULTS_YAML = """
    name: d
    input: {shape: [3, 12, 10]}
    layers:
      - {name: c, op: conv, out: 4, kernel: 3}
      - {name: cr, op: conv, out: 4, kernel: [3, 1], relu: true}
      - {name: p, op: maxpool, kernel: 3}
      - {name: q, op: avgpool, kernel: [2, 1], stride: [1, 2]}
      - {name: dc, op: deconv, out: 2, kernel: 2}
      - {name: fc, op: linear, out: 3}
    output: fc
"""


@pytest.fixture(scope="module")
def defaults_graph():
    return yaml_model(DEFAULTS_YAML)


def test_conv_defaults(defaults_graph):
    c = defaults_graph["c"]
    assert c.op == "conv"
    assert c.attrs["kernel"] == (3, 3)
    assert c.attrs["stride"] == (1, 1)
    assert c.attrs["pad"] == (0, 0)
    assert c.attrs["bias"] is True
    assert c.inputs == ("input",)                 # the previous layer: the network's input
    assert c.type.shape == (4, 10, 8)
    assert "c_relu" not in defaults_graph         # relu defaults to false
    assert not any(n.op == "relu" and n.layer == "c" for n in defaults_graph.nodes)


def test_kernel_as_pair_and_relu_node(defaults_graph):
    cr = defaults_graph["cr"]
    assert cr.attrs["kernel"] == (3, 1)
    assert cr.type.shape == (4, 8, 8)
    relus = [n for n in defaults_graph.nodes if n.op == "relu" and n.layer == "cr"]
    assert len(relus) == 1 and relus[0].inputs[0] == "cr"
    assert "cr.weight" in param_specs(defaults_graph)
    assert param_specs(defaults_graph)["cr.weight"] == (4, 4, 3, 1)


def test_pool_defaults(defaults_graph):
    p = defaults_graph["p"]
    assert p.attrs["kernel"] == (3, 3)
    assert p.attrs["stride"] == (3, 3)            # stride defaults to the kernel for pools
    assert p.attrs["pad"] == (0, 0)
    assert p.attrs["ceil_mode"] is True           # Caffe's default
    assert p.type.shape == (4, 3, 3)              # 8x8 in, k3 s3, ceil: 2.67 -> 3
    q = defaults_graph["q"]
    assert q.attrs["kernel"] == (2, 1) and q.attrs["stride"] == (1, 2)
    assert q.attrs["ceil_mode"] is True
    assert q.type.shape == (4, 2, 2)


def test_deconv_and_linear_defaults(defaults_graph):
    dc = defaults_graph["dc"]
    assert dc.attrs["stride"] == (1, 1) and dc.attrs["pad"] == (0, 0) and dc.attrs["bias"] is True
    assert dc.type.shape == (2, 3, 3)
    specs = param_specs(defaults_graph)
    assert specs["dc.weight"] == (4, 2, 2, 2)     # deconv: IOHW
    assert specs["dc.bias"] == (2,)
    assert specs["fc.weight"] == (3, 2 * 3 * 3)   # linear: [out, C*H*W]
    assert specs["fc.bias"] == (3,)
    assert defaults_graph["fc"].type.shape == (3,)


@pytest.mark.parametrize("ceil, expected", [(None, (2, 3, 3)), (True, (2, 3, 3)),
                                            (False, (2, 2, 2))],
                         ids=["default", "true", "false"])
def test_ceil_mode_shapes(ceil, expected):
    extra = "" if ceil is None else f", ceil_mode: {str(ceil).lower()}"
    g = small_model([2, 6, 6], f"- {{name: p, op: maxpool, kernel: 3, stride: 2{extra}}}", "p")
    assert g["p"].type.shape == expected


def test_explicit_input_and_conv_layouts():
    g = small_model([3, 8, 9], """
        - {name: a, op: conv, out: 5, kernel: [3, 2], stride: [2, 1], pad: [1, 0], bias: false}
        - {name: b, op: conv, input: input, out: 2, kernel: 1}
        - {name: s, op: concat, inputs: [b, input]}""", "[s, a]")
    assert g["b"].inputs == ("input",)
    assert param_specs(g) == {"a.weight": (5, 3, 3, 2), "b.weight": (2, 3, 1, 1),
                              "b.bias": (2,)}
    assert g["a"].type.shape == (5, 4, 8)
    assert g["s"].type.shape == (5, 8, 9)


def test_fire_lowering():
    g = small_model([6, 7, 5], "- {name: fire2, op: fire, squeeze: 3, expand1x1: 4, "
                               "expand3x3: 5}", "fire2")
    assert param_specs(g) == {
        "fire2.squeeze.weight": (3, 6, 1, 1), "fire2.squeeze.bias": (3,),
        "fire2.expand1x1.weight": (4, 3, 1, 1), "fire2.expand1x1.bias": (4,),
        "fire2.expand3x3.weight": (5, 3, 3, 3), "fire2.expand3x3.bias": (5,)}
    convs = {n.param_prefix: n for n in g.nodes if n.op == "conv"}
    assert convs["fire2.expand3x3"].attrs["pad"] == (1, 1)
    assert convs["fire2.squeeze"].attrs["pad"] == (0, 0)
    out = g["fire2"]
    assert out.op == "concat" and out.type.shape == (9, 7, 5)

    def source_conv(name):              # follow relus back to the conv that feeds them
        node = g[name]
        seen_relu = False
        while node.op == "relu":
            seen_relu = True
            node = g[node.inputs[0]]
        return node, seen_relu
    firsts = [source_conv(i) for i in out.inputs]
    assert [n.param_prefix for n, _ in firsts] == ["fire2.expand1x1", "fire2.expand3x3"]
    assert all(relu for _, relu in firsts)           # ReLU after both expands
    sq, sq_relu = source_conv(convs["fire2.expand1x1"].inputs[0])
    assert sq.param_prefix == "fire2.squeeze" and sq_relu    # ... and after the squeeze


def test_every_node_remembers_its_layer_and_line(squeezeseg):
    lines = {r["layer"]: r["line"] for r in summarize(squeezeseg)["layers"]}
    text = (MODELS / "squeezeseg.yaml").read_text().splitlines()
    for layer, line in lines.items():
        assert f"name: {layer}," in text[line - 1], (layer, line)
    for n in squeezeseg.nodes[1:]:
        assert n.line == lines[n.layer]


# ------------------------------------------------------------------ CLI: summary
def test_cli_summary_json_structure():
    r = cli("summary", "--json", MODELS / "squeezeseg.yaml")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    data = json.loads(r.stdout)
    assert data["model"] == "squeezeseg"
    assert data["total_params"] == 1348951
    assert isinstance(data["total_flops"], int) and data["total_flops"] > 0
    rows = data["layers"]
    assert [row["layer"] for row in rows] == list(TABLE1_PARAMS)
    for row in rows:
        assert {"layer", "op", "shape", "params", "flops"} <= set(row), row
        assert isinstance(row["params"], int) and isinstance(row["flops"], int)
        assert all(isinstance(d, int) for d in row["shape"])
    assert data["total_flops"] == sum(row["flops"] for row in rows)
    conv1 = rows[0]
    assert (conv1["layer"], conv1["op"], conv1["shape"], conv1["params"]) == (
        "conv1", "conv", [96, 111, 111], 14208)
    macs = 96 * 111 * 111 * 3 * 7 * 7
    assert 2 * macs <= conv1["flops"] <= 2 * macs + 2 * 96 * 111 * 111    # + the ReLU at most
    assert {row["layer"]: row["params"] for row in rows} == TABLE1_PARAMS
    assert 1.9e9 < data["total_flops"] < 2.2e9          # the paper network: ~2.03 GFLOP/image


def test_cli_summary_table():
    r = cli("summary", MODELS / "squeezeseg.yaml")
    assert r.returncode == 0, r.stderr
    assert "1,348,951" in r.stdout
    for layer in TABLE1_PARAMS:            # a row per layer, not a substring (conv1 in conv10)
        assert re.search(rf"^\s*{layer}\s", r.stdout, re.M), layer
    assert "14,208" in r.stdout and "513,000" in r.stdout


# ------------------------------------------------------------------ CLI: init-weights
@pytest.fixture(scope="module")
def init_weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("init")
    files = {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        path = d / f"w_{tag}.npz"
        r = cli("init-weights", MODELS / "squeezeseg.yaml", "-o", path, "--seed", seed)
        assert r.returncode == 0, r.stderr
        files[tag] = path
    return files


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_init_weights_keys_shapes_dtypes(init_weight_files, squeezeseg):
    w = _load(init_weight_files["a"])
    specs = param_specs(squeezeseg)
    assert {k: v.shape for k, v in w.items()} == specs
    assert all(v.dtype == np.float32 for v in w.values())
    assert all(np.isfinite(v).all() for v in w.values())


def test_init_weights_same_seed_same_arrays(init_weight_files):
    a, b = _load(init_weight_files["a"]), _load(init_weight_files["b"])
    assert list(a) == list(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_init_weights_different_seed_different_arrays(init_weight_files):
    a, c = _load(init_weight_files["a"]), _load(init_weight_files["c"])
    for k in a:
        if k.endswith(".weight"):
            assert not np.array_equal(a[k], c[k]), k


@pytest.mark.parametrize("key, fan_in", [
    ("conv1.weight", 3 * 7 * 7),
    ("fire9.expand3x3.weight", 64 * 3 * 3),
    ("conv10.weight", 512),
    ("fire5.squeeze.weight", 256),
])
def test_init_weights_he_std(init_weight_files, key, fan_in):
    w = _load(init_weight_files["a"])[key].astype(np.float64)
    std = np.sqrt(2.0 / fan_in)
    assert abs(w.std() / std - 1) < 0.03, (w.std(), std)
    assert abs(w.mean()) < 0.05 * std


def test_init_weights_in_process_matches_cli(init_weight_files, squeezeseg):
    w = squeezegen.init_weights(squeezeseg, 3)
    a = _load(init_weight_files["a"])
    for k in a:
        np.testing.assert_array_equal(w[k], a[k])


# ------------------------------------------------------------------ CLI: run
def test_cli_run_numpy_equals_in_process_reference(tmp_path):
    graph = squeezegen.load_model(MODELS / "lenet.yaml")
    weights = random_weights(graph, seed=5)
    np.savez(tmp_path / "w.npz", **weights)
    x = random_input(graph, 2, seed=6)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", MODELS / "lenet.yaml", "--weights", tmp_path / "w.npz", "--input",
            tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ""
    y = np.load(tmp_path / "y.npy", allow_pickle=False)
    want = ReferenceExecutor(graph, weights)(x)
    assert y.shape == (2, 10) and y.dtype == np.float32
    np.testing.assert_array_equal(y, want)  # same NumPy code: bit for bit
    assert_close(y.sum(axis=1), np.ones(2), 1e-5)     # softmax rows
    # the public one-liner gives the same
    np.testing.assert_array_equal(
        squeezegen.reference(MODELS / "lenet.yaml", tmp_path / "w.npz")(x), want)


def test_cli_run_image_output(tmp_path):
    model = tmp_path / "m.yaml"
    model.write_text("name: m\ninput: {shape: [2, 9, 7]}\nlayers:\n"
                     "  - {name: a, op: conv, out: 3, kernel: 3, stride: 2, relu: true}\n"
                     "  - {name: b, op: deconv, out: 2, kernel: 3, stride: 2}\n"
                     "output: b\n")
    graph = squeezegen.load_model(model)
    weights = random_weights(graph)
    np.savez(tmp_path / "w.npz", **weights)
    x = random_input(graph, 3)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", model, "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npy", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (3, 2, 9, 7)
    np.testing.assert_array_equal(y, ReferenceExecutor(graph, weights)(x))


def test_cli_run_several_outputs_keyed_by_layer_name(tmp_path):
    model = tmp_path / "m.yaml"
    model.write_text("name: m\ninput: {shape: [3, 7, 6]}\nlayers:\n"
                     "  - {name: a, op: conv, out: 4, kernel: 3, relu: true}\n"
                     "  - {name: fc, op: linear, out: 5}\n"
                     "output: [fc, a]\n")
    graph = squeezegen.load_model(model)
    weights = random_weights(graph)
    np.savez(tmp_path / "w.npz", **weights)
    x = random_input(graph, 2)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", model, "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npz", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    fc, a = ReferenceExecutor(graph, weights)(x)
    with np.load(tmp_path / "y.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["a", "fc"]
        np.testing.assert_array_equal(z["fc"], fc)  # same NumPy code: bit for bit
        np.testing.assert_array_equal(z["a"], a)



def test_cli_run_png_of_several_outputs_writes_the_arrays_as_npz_beside_it(tmp_path):
    model = tmp_path / "m.yaml"
    model.write_text("name: m\ninput: {shape: [2, 5, 4]}\nlayers:\n"
                     "  - {name: seg, op: conv, out: 3, kernel: 1}\n"
                     "  - {name: fc, op: linear, out: 2}\n"
                     "output: [seg, fc]\n")
    graph = squeezegen.load_model(model)
    weights = random_weights(graph)
    np.savez(tmp_path / "w.npz", **weights)
    x = random_input(graph, 1)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", model, "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "out.png", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.png").is_file() and not (tmp_path / "out.npy").exists()
    seg, fc = ReferenceExecutor(graph, weights)(x)
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["fc", "seg"]
        np.testing.assert_array_equal(z["seg"], seg)  # same NumPy code: bit for bit
        np.testing.assert_array_equal(z["fc"], fc)


def test_cli_run_one_output_into_an_npz_is_an_npz(tmp_path):
    graph = squeezegen.load_model(MODELS / "lenet.yaml")
    weights = random_weights(graph)
    np.savez(tmp_path / "w.npz", **weights)
    x = random_input(graph, 1)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", MODELS / "lenet.yaml", "--weights", tmp_path / "w.npz", "--input",
            tmp_path / "x.npy", "--output", tmp_path / "y.npz", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "y.npz", allow_pickle=False) as z:
        assert z.files == ["prob"]
        np.testing.assert_array_equal(z["prob"], ReferenceExecutor(graph, weights)(x))


# ------------------------------------------------------------------ Python: squeezegen.build
def test_python_build_returns_the_files_and_writes_them_with_write(tmp_path):
    """The Python call that generates the .cu without a GPU: the same bytes as `squeezegen build`
    (the committed generated/lenet/), in memory, and on disk with write=."""
    result = squeezegen.build(MODELS / "lenet.yaml")
    committed = MODELS.parent / "generated" / "lenet"
    assert sorted(result.files) == ["lenet.cu", "lenet.h", "manifest.json"]
    assert result.files == {name: (committed / name).read_bytes() for name in result.files}
    assert result.written == []
    result = squeezegen.build(MODELS / "lenet.yaml", batch=2, write=tmp_path)
    assert sorted(result.written) == sorted(tmp_path / "lenet" / n for n in result.files)
    assert {p.name: p.read_bytes() for p in (tmp_path / "lenet").iterdir()} == result.files
    assert "build" in squeezegen.__all__


def test_the_weights_blob_the_demo_builds_is_ignored_by_git():
    """`squeezegen build models/squeezeseg.yaml --weights w.npz` (the C demo's command) writes
    generated/squeezeseg/squeezeseg.weights.bin beside the committed files."""
    root = MODELS.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for blob in ("generated/squeezeseg/squeezeseg.weights.bin",
                 "generated/lenet/lenet.weights.bin"):
        assert subprocess.run(["git", "check-ignore", "-q", blob], cwd=root).returncode == 0, blob
