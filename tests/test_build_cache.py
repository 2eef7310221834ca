"""Safe builds: the nvcc cubin cache (content-addressed, locked, atomic, self-checking), nvcc
errors with the generated file and line, and concurrent builds of the same model."""
from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from squeezegen.build import build
from squeezegen.errors import BuildError
from squeezegen.runtime import compile as cubin_compile
from squeezegen.runtime.compile import compile_cubin

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


def lenet_sources() -> dict[str, bytes]:
    files = build("models/lenet.yaml", 2).output.files
    return {k: v for k, v in files.items() if k.endswith((".cu", ".h"))}


def entries(cache):
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


@needs_nvcc
def test_cubin_is_cached_and_reused(tmp_path, monkeypatch):
    first = compile_cubin(lenet_sources(), "lenet.cu", "sm_90", tmp_path)
    assert first[:4] == b"\x7fELF"
    assert len(entries(tmp_path)) == 1

    def no_nvcc(cmd, *a, **k):
        if "-cubin" in cmd:
            raise AssertionError("nvcc ran although the cubin was cached")
        return subprocess.run(cmd, *a, **k)
    monkeypatch.setattr(cubin_compile.subprocess, "run", no_nvcc)
    assert compile_cubin(lenet_sources(), "lenet.cu", "sm_90", tmp_path) == first


@needs_nvcc
def test_corrupt_cache_entry_is_rebuilt_not_used(tmp_path):
    good = compile_cubin(lenet_sources(), "lenet.cu", "sm_90", tmp_path)
    (entry,) = entries(tmp_path)
    (tmp_path / entry / "module.cubin").write_bytes(b"\x7fELF garbage")
    assert compile_cubin(lenet_sources(), "lenet.cu", "sm_90", tmp_path) == good
    (tmp_path / entry / "module.cubin").write_bytes(b"\x7fELF garbage")
    (tmp_path / entry / "module.cubin.sha256").unlink()          # a half-written entry
    assert compile_cubin(lenet_sources(), "lenet.cu", "sm_90", tmp_path) == good


@needs_nvcc
def test_nvcc_errors_name_the_generated_file_and_line(tmp_path):
    broken = {"net.cu": b"// fine\n__global__ void k() { int x = ; }\n"}
    with pytest.raises(BuildError) as err:
        compile_cubin(broken, "net.cu", "sm_90", tmp_path)
    message = str(err.value)
    assert "net.cu(2)" in message and "error" in message
    assert entries(tmp_path) == [], "a failed build must leave nothing in the cache"


@needs_nvcc
def test_concurrent_compiles_agree(tmp_path):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: compile_cubin(lenet_sources(), "lenet.cu", "sm_90",
                                                        tmp_path), range(3)))
    assert results[0] == results[1] == results[2]
    assert len(entries(tmp_path)) == 1


def test_bad_arch_is_refused(tmp_path):
    with pytest.raises(BuildError, match="architecture"):
        compile_cubin(lenet_sources(), "lenet.cu", "sm_90; rm -rf /", tmp_path)


def test_missing_nvcc_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cubin_compile.shutil, "which", lambda name: None)
    monkeypatch.setattr(cubin_compile, "cuda_roots", lambda: [str(tmp_path)])
    with pytest.raises(BuildError, match="nvcc was not found"):
        compile_cubin(lenet_sources(), "lenet.cu", "sm_90", tmp_path)


def test_concurrent_cli_builds_give_identical_complete_files(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "squeezegen", "build",
                               "models/squeezeseg.yaml", "-o", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    expected = build("models/squeezeseg.yaml", 1).output.files
    folder = tmp_path / "squeezeseg"
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)   # no temp files left
    for name, content in expected.items():
        assert (folder / name).read_bytes() == content


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from squeezegen import fsutil

    def explode(f):
        f.write(b"half a kernel")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fsutil.atomic_write(tmp_path / "net.cu", explode)
    assert list(tmp_path.iterdir()) == []


@needs_nvcc
def test_cubin_holds_every_kernel_the_manifest_launches(tmp_path):
    """The runtime looks kernels up by their manifest symbol: each must be a function of the
    cubin (an ELF `.text.<symbol>` section), with C linkage (no mangling)."""
    result = build("models/squeezeseg.yaml", 1)
    files = {k: v for k, v in result.output.files.items() if k.endswith((".cu", ".h"))}
    cubin = compile_cubin(files, "squeezeseg.cu", "sm_90", tmp_path)
    symbols = [k["symbol"] for k in result.output.manifest["kernels"]]
    assert symbols[0] == "squeezeseg_conv1_relu"
    for symbol in symbols:
        assert b".text." + symbol.encode() + b"\0" in cubin, symbol
