"""What an attacker or a careless caller controls cannot get out of comments and names.

- Free text (file names, folders, layer names, pass names from a Python-built graph) reaches the
  generated C only inside comments: the comment-stripped code never holds it.
- Names that become C symbols and file names are checked where they are emitted.
- The caches squeezegen writes for itself are private, and refused when they are not.
- The C API's blob checks say what is wrong (they run before any GPU call, so on the CPU too).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from squeezegen import load_model
from squeezegen.build import build, write_outputs
from squeezegen.codegen.ctext import comment
from squeezegen.errors import BuildError
from squeezegen.fsutil import private_dir
from squeezegen.weights import init_weights

NVCC = shutil.which("nvcc")
GCC = shutil.which("g++")
PAYLOAD = "static int pwned = 1;"

# every way a line can end or a comment can be closed, as C compilers and editors see it
BREAKS = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\f", "\v", "\x85", "*/ ", "\\\n", "??/\n"]
FILE_BREAKS = [b for b in BREAKS if "/" not in b]       # a file name cannot hold a slash


def strip_comments(source: str) -> str:
    """The code of a C/C++ file without its comments, as the compiler's preprocessor sees it."""
    proc = subprocess.run([GCC, "-fpreprocessed", "-dD", "-E", "-P", "-x", "c++", "-"],
                          input=source, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def assert_payload_only_in_comments(files: dict[str, bytes]) -> None:
    sources = {name: data.decode() for name, data in files.items() if name.endswith((".cu", ".h"))}
    assert any("pwned" in text for text in sources.values()), "the payload should reach comments"
    for name, text in sources.items():
        assert "pwned" not in strip_comments(text), f"code outside a comment in {name}"
        for line in text.splitlines():            # and each line it is on is a comment line
            if "pwned" in line:
                assert line.lstrip().startswith(("//", "/*", "*")), line


@pytest.mark.skipif(GCC is None, reason="g++ is not installed")
@pytest.mark.parametrize("brk", FILE_BREAKS, ids=[repr(b) for b in FILE_BREAKS])
def test_a_hostile_file_name_stays_inside_comments(tmp_path, brk):
    folder = tmp_path / f"dir{brk}{PAYLOAD}{brk}x*"          # the path holds */ too
    folder.mkdir()
    path = folder / f"m{brk}{PAYLOAD}{brk}int x.yaml"
    shutil.copy("models/lenet.yaml", path)
    out = build(str(path), 1).output
    assert_payload_only_in_comments(out.files)
    manifest = json.loads(out.files["manifest.json"])
    assert manifest["source"] == path.name               # the manifest keeps it, JSON-escaped


def test_the_comment_filter_leaves_no_way_out():
    nasty = "a\nb\rc\u2028d\u2029e\x0cf\x0bg\x85h\x00i\u202ej*/k/*l??/"
    text = comment(nasty)
    assert text.isprintable() and "*/" not in text and "/*" not in text and "??/" not in text
    assert text == "a\\nb\\rc\\u2028d\\u2029e\\ff\\vg\\x85h\\x00i\\u202ej* /k/ *l? ?/"
    for tail in ("x\\", "x\\\\", "x\\ \t", "\\"):
        assert not comment(tail).rstrip().endswith("\\"), tail
    assert comment("fire2 (squeezeseg.yaml:12)") == "fire2 (squeezeseg.yaml:12)"


@pytest.mark.skipif(GCC is None, reason="g++ is not installed")
@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
def test_python_built_graphs_keep_free_text_in_comments(brk):
    g = load_model("models/lenet.yaml")
    nodes = tuple(n.replace(layer=f"{n.layer}{brk}{PAYLOAD}{brk}") for n in g.nodes)
    hostile = g.replace(nodes=nodes, source=f"/x{brk}{PAYLOAD}{brk}/m{brk}{PAYLOAD}{brk}.yaml",
                        passes=(f"evil{brk}{PAYLOAD}{brk}",))
    assert_payload_only_in_comments(build(hostile, 2).output.files)


@pytest.mark.parametrize("edit, named", [
    (lambda g: g.replace(name="../x y"), "'../x y'"),
    (lambda g: g.replace(name="lenet;int"), "'lenet;int'"),
    (lambda g: g.replace(name=f"m\n{PAYLOAD}"), "pwned"),
    (lambda g: g.replace(source_hash="0" * 63 + "\"); system(\"x"), "model hash"),
])
def test_python_edited_graphs_cannot_carry_c_into_names(edit, named):
    g = load_model("models/lenet.yaml")
    with pytest.raises(BuildError) as info:
        build(edit(g), 1)
    text = str(info.value)
    assert named in text and "\n" not in text


def test_a_python_renamed_node_is_refused_with_its_layer():
    g = load_model("models/lenet.yaml")
    renamed = {"conv1": "conv1 /*"}
    nodes = tuple(n.replace(name=renamed.get(n.name, n.name),
                            inputs=tuple(renamed.get(i, i) for i in n.inputs)) for n in g.nodes)
    with pytest.raises(BuildError, match=r"'conv1 /\*' cannot be emitted"):
        build(g.replace(nodes=nodes), 1)


def test_a_graph_without_a_source_gets_a_stable_hash():
    g = load_model("models/lenet.yaml").replace(source=None, source_hash=None)
    a, b = build(g, 1).output, build(g, 1).output
    assert a.files == b.files
    assert len(a.manifest["model_hash"]) == 64


def test_cli_builds_a_hostile_file_name_without_leaking_it(tmp_path):
    path = tmp_path / f"m\n{PAYLOAD}\nint x.yaml"
    shutil.copy("models/lenet.yaml", path)
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "build", str(path), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cu = (tmp_path / "out" / "lenet" / "lenet.cu").read_text()
    assert f"\n{PAYLOAD}" not in cu and "m\\nstatic int pwned = 1;\\nint x.yaml" in cu


# ------------------------------------------------------------------------------ caches
def test_private_dir_is_created_0700(tmp_path):
    path = private_dir(tmp_path / "a" / "cache", "build cache")
    assert (path.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_cache_others_can_write_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(BuildError, match=f"can be written by other users \\(mode {mode:o}\\)"):
        private_dir(shared, "build cache")


def test_a_cache_another_user_owns_is_refused(tmp_path, monkeypatch):
    mine = private_dir(tmp_path / "c", "build cache")
    monkeypatch.setattr(os, "getuid", lambda: os.stat(mine).st_uid + 1)
    with pytest.raises(BuildError, match="belongs to another user"):
        private_dir(mine, "build cache")


def test_compile_and_tuning_refuse_a_shared_cache(tmp_path, monkeypatch):
    from squeezegen.runtime.autotune import save_tuning, tuning_file
    from squeezegen.runtime.compile import compile_cubin
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(BuildError, match="build cache can be written by other users"):
        compile_cubin({"m.cu": b"// nothing\n"}, "m.cu", "sm_90", cache=shared)
    assert list(shared.iterdir()) == []                   # refused before writing anything
    monkeypatch.setenv("SQUEEZEGEN_CACHE", str(shared))
    with pytest.raises(BuildError, match="tuning cache can be written by other users"):
        tuning_file()
    with pytest.raises(BuildError, match="tuning cache can be written by other users"):
        save_tuning({}, shared / "tuning.json")


# ------------------------------------------------------------------------------ C API
def build_c_driver(model: str, batch: int, folder, weights=True):
    """Build `model` (with its blob) into `folder` and compile examples/run_model.c against it."""
    g = load_model(f"models/{model}.yaml")
    w = init_weights(g, seed=batch)
    out = build(g, batch, weights=w if weights else None).output
    write_outputs(out, folder)
    exe = folder / f"run_{model}"
    proc = subprocess.run([NVCC, "-O2", "-arch=sm_90", "-Werror", "all-warnings", "-I", str(folder),
                           f"-DSG_MODEL={model}", f"-DSG_MACRO=SG_{model.upper()}",
                           f'-DSG_HEADER="{model}.h"', "examples/run_model.c",
                           str(folder / f"{model}.cu"), "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return g, w, exe


def run_driver(exe, blob, x: np.ndarray | None, folder):
    inp, outp = folder / "input.f32", folder / "output.f32"
    if x is not None:
        x.astype("<f4").tofile(inp)
    return subprocess.run([str(exe), str(blob), str(inp), str(outp)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_the_c_api_says_why_a_blob_is_refused(tmp_path):
    """Another model's blob, another batch's, a truncated one, a missing file, not a blob: each
    refused before any GPU call, with its own message (the blob checks need no GPU)."""
    _, _, exe = build_c_driver("lenet", 1, tmp_path / "l1")
    for model, batch in (("squeezeseg", 1), ("lenet", 3)):      # blobs of other builds
        g = load_model(f"models/{model}.yaml")
        out = build(g, batch, weights=init_weights(g, 0)).output
        write_outputs(out, tmp_path / f"{model}{batch}")
    blob = (tmp_path / "l1" / "lenet.weights.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(blob[:-4])
    (tmp_path / "long.bin").write_bytes(blob + b"\0\0\0\0")
    (tmp_path / "header.bin").write_bytes(blob[:100])
    (tmp_path / "text.bin").write_bytes(b"x" * 300)
    cases = {
        tmp_path / "squeezeseg1" / "squeezeseg.weights.bin": "belongs to another model",
        tmp_path / "lenet3" / "lenet.weights.bin":
            "was packed for batch 3, this network is built for batch 1",
        tmp_path / "short.bin": "(truncated)",
        tmp_path / "long.bin": "(trailing bytes)",
        tmp_path / "header.bin": "shorter than its 256-byte header",
        tmp_path / "text.bin": "not a squeezegen weights blob",
        tmp_path / "missing.bin": "cannot open the weights file",
    }
    x = np.zeros((1, 1, 28, 28), np.float32)
    for path, message in cases.items():
        proc = run_driver(exe, path, x, tmp_path)
        assert proc.returncode == 3, (path.name, proc.stderr)
        assert proc.stderr.startswith("loading the weights: lenet"), proc.stderr
        assert message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1


def test_forward_resets_the_split_k_counters_before_its_first_kernel():
    out = build("models/squeezeseg.yaml", 1).output
    assert out.manifest["memory"]["counters_bytes"] > 0, "squeezeseg at batch 1 splits K"
    cu = out.files["squeezeseg.cu"].decode()
    forward = cu[cu.index("cudaError_t squeezeseg_forward("):]
    reset = forward.index("cudaMemsetAsync((char*)net->arena + ")
    assert reset < forward.index("sg_launch_")
    assert "create one net per stream" in out.files["squeezeseg.h"].decode()
    assert "const char* squeezeseg_last_error(void);" in out.files["squeezeseg.h"].decode()


# ------------------------------------------------------------------------------ on the GPU
def _gpu_reason():
    from squeezegen.runtime.network import GPUError, cuda    # a broken runtime fails, never skips
    try:
        cuda()
    except GPUError as exc:            # no driver, no PyCUDA or no GPU
        return str(exc)
    return None


TOL = 1e-4           # fp32, relative to the output's largest magnitude


def rel_err(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.mark.parametrize("model, batch", [("lenet", 1), ("lenet", 3), ("squeezeseg", 1),
                                          ("squeezeseg", 3)])
@pytest.mark.gpu
def test_the_c_api_runs_a_real_input_like_the_reference(model, batch, tmp_path):
    if _gpu_reason():
        pytest.skip(f"no GPU: {_gpu_reason()}")
    from squeezegen.reference import ReferenceExecutor
    g, w, exe = build_c_driver(model, batch, tmp_path)
    x = np.random.default_rng(batch).uniform(-1, 1, (batch,) + g.input.type.shape)
    x = x.astype(np.float32)
    proc = run_driver(exe, tmp_path / f"{model}.weights.bin", x, tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(tmp_path / "output.f32", "<f4").reshape((batch,) + g[g.outputs[0]].type.shape)
    err = rel_err(got, ReferenceExecutor(g, w)(x))
    print(f"C API {model} batch {batch}: {err:.2e}")
    assert err <= TOL
    proc = run_driver(exe, tmp_path / f"{model}.weights.bin", x[:, :, :-1], tmp_path)  # short input
    assert proc.returncode == 4 and "must hold exactly" in proc.stderr


def _reference(g, w, x):
    from squeezegen.reference import ReferenceExecutor
    return ReferenceExecutor(g, w)(x)


@pytest.mark.parametrize("use_graph", [True, False])
@pytest.mark.gpu
def test_a_network_built_on_one_thread_runs_on_others(use_graph):
    """What thread pools, web servers and Ray actors do; the first call is made elsewhere."""
    if _gpu_reason():
        pytest.skip(f"no GPU: {_gpu_reason()}")
    from concurrent.futures import ThreadPoolExecutor
    import squeezegen
    g = load_model("models/squeezeseg.yaml")
    w = init_weights(g, seed=1)
    xs = [np.random.default_rng(s).uniform(-1, 1, (2,) + g.input.type.shape).astype(np.float32)
          for s in range(6)]
    with squeezegen.compile(g, w, batch=2, use_graph=use_graph) as net:
        with ThreadPoolExecutor(3) as pool:
            outs = list(pool.map(net, xs))               # three threads share one network
        for x, y in zip(xs, outs):
            assert rel_err(y, _reference(g, w, x)) <= TOL

        def device_run(x):                               # device pointers, the thread's own stream
            with net.active() as drv:
                stream = drv.Stream()
                d_in, d_out = drv.to_device(x), drv.mem_alloc(4 * 2 * g[g.outputs[0]].type.numel)
                net.run(d_in, d_out, stream)
                y = np.empty((2,) + g[g.outputs[0]].type.shape, np.float32)
                drv.memcpy_dtoh_async(y, d_out, stream)
                stream.synchronize()
                d_in.free(), d_out.free()                # freed where their context is current
                del stream
                return y
        with ThreadPoolExecutor(1) as pool:
            y = pool.submit(device_run, xs[0]).result()
        assert rel_err(y, _reference(g, w, xs[0])) <= TOL


@pytest.mark.gpu
def test_two_networks_on_two_threads_at_once():
    if _gpu_reason():
        pytest.skip(f"no GPU: {_gpu_reason()}")
    import threading
    import squeezegen
    nets, errors = {}, []
    for model, batch in (("lenet", 5), ("squeezeseg", 1)):
        g = load_model(f"models/{model}.yaml")
        w = init_weights(g, seed=2)
        x = np.random.default_rng(3).uniform(-1, 1, (batch,) + g.input.type.shape)
        x = x.astype(np.float32)
        nets[model] = (squeezegen.compile(g, w, batch=batch), x, _reference(g, w, x))

    def hammer(model):
        net, x, want = nets[model]
        try:
            for _ in range(25):
                err = rel_err(net(x), want)
                assert err <= TOL, f"{model}: {err:.2e}"
        except Exception as exc:          # reported on the main thread
            errors.append(exc)
    threads = [threading.Thread(target=hammer, args=(m,)) for m in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for net, _, _ in nets.values():
        net.close()
    assert not errors, errors


@pytest.mark.gpu
def test_a_network_compiled_in_a_worker_thread_runs_and_closes_on_the_main_thread():
    if _gpu_reason():
        pytest.skip(f"no GPU: {_gpu_reason()}")
    from concurrent.futures import ThreadPoolExecutor
    import squeezegen
    g = load_model("models/lenet.yaml")
    w = init_weights(g, seed=4)
    x = np.random.default_rng(5).uniform(-1, 1, (3,) + g.input.type.shape).astype(np.float32)
    with ThreadPoolExecutor(1) as pool:
        net = pool.submit(squeezegen.compile, g, w, 3).result()
    assert rel_err(net(x), _reference(g, w, x)) <= TOL
    net.close()


@pytest.mark.gpu
def test_device_indices_are_checked():
    if _gpu_reason():
        pytest.skip(f"no GPU: {_gpu_reason()}")
    import pycuda.driver as drv
    import squeezegen
    from squeezegen.runtime.network import GPUError
    count = drv.Device.count()
    g = load_model("models/lenet.yaml")
    w = init_weights(g, seed=0)
    with pytest.raises(GPUError, match=f"there is no GPU {count}: this machine has {count}"):
        squeezegen.compile(g, w, device=count)
    for bad in (-1, "0", True, 1.0):
        with pytest.raises(GPUError, match="device must be a GPU index"):
            squeezegen.compile(g, w, device=bad)


@pytest.mark.gpu
def test_networks_on_every_gpu_in_one_process():
    if _gpu_reason():
        pytest.skip(f"no GPU: {_gpu_reason()}")
    import pycuda.driver as drv
    import squeezegen
    count = drv.Device.count()
    if count < 2:
        pytest.skip(f"one GPU here; networks on several GPUs need two or more (found {count})")
    g = load_model("models/lenet.yaml")
    w = init_weights(g, seed=6)
    x = np.random.default_rng(7).uniform(-1, 1, (4,) + g.input.type.shape).astype(np.float32)
    nets = [squeezegen.compile(g, w, batch=4, device=i) for i in range(count)]
    want = _reference(g, w, x)
    for net in reversed(nets):             # alternate GPUs from one thread
        assert rel_err(net(x), want) <= TOL
        net.close()


@pytest.mark.parametrize("use_graph", [True, False])
@pytest.mark.gpu
def test_a_run_resets_split_k_counters_left_dirty(use_graph):
    """A run cut short, or one network run on two streams at once, leaves tile counters
    non-zero; the next run must still be right."""
    if _gpu_reason():
        pytest.skip(f"no GPU: {_gpu_reason()}")
    import squeezegen
    g = load_model("models/squeezeseg.yaml")
    w = init_weights(g, seed=8)
    x = np.random.default_rng(9).uniform(-1, 1, (1,) + g.input.type.shape).astype(np.float32)
    want = _reference(g, w, x)
    with squeezegen.compile(g, w, batch=1, use_graph=use_graph) as net:
        plan = net.build.plan
        assert plan.counters_bytes > 0
        assert rel_err(net(x), want) <= TOL
        with net.active() as drv:                        # dirty every counter
            drv.memset_d32(int(net._arena) + plan.counters_offset, 1, plan.counters_bytes // 4)
        assert rel_err(net(x), want) <= TOL
