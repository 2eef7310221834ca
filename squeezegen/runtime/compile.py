"""Compile generated CUDA C to a cubin with nvcc, through a content-addressed build cache.

The cache key covers what decides the cubin: the generated source (and the headers beside it),
the target architecture, the nvcc version and its flags. The cache folder is private to the user
(0700; one that others can write to is refused), since a cubin planted there would run. Entries
are written atomically (temp folder + rename) under a file lock, and an entry whose cubin does
not match its recorded sha256 is rebuilt, never used. nvcc runs with an argument list (no
shell); its errors are shown with the generated file and line.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from ..errors import BuildError
from ..fsutil import private_dir

NVCC_FLAGS = ("-O3", "-std=c++17", "-Werror", "all-warnings")


def cache_dir() -> Path:
    root = os.environ.get("SQUEEZEGEN_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "squeezegen"


def cuda_roots() -> list[str]:
    """Where to look for the CUDA toolkit when nvcc is not on PATH."""
    roots = [os.environ.get("CUDA_ROOT"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    return [r for r in roots if r]


def find_nvcc() -> str:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in cuda_roots():
        if (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    raise BuildError("nvcc was not found (install the CUDA toolkit, or put nvcc on PATH or set "
                     "CUDA_HOME)")


@lru_cache(maxsize=None)
def nvcc_version(nvcc: str) -> str:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"cannot run nvcc ({nvcc}): {exc}") from None
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "unknown"


def _nvcc_errors(stderr: str, source_name: str, generated: Path | None) -> str:
    """The first errors nvcc printed, with paths shortened to the generated file's name."""
    lines = [ln.replace(str(generated.parent) + "/", "") if generated else ln
             for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"error|warning", ln)] or lines
    shown = "; ".join(errors[:3])
    return f"nvcc failed on {source_name}: {shown}" if shown else f"nvcc failed on {source_name}"


def compile_cubin(files: dict[str, bytes], source: str, arch: str, cache: Path | None = None,
                  extra_flags: tuple[str, ...] = ()) -> bytes:
    """The cubin of `files[source]` (other `files` are headers beside it), for `arch` (sm_90)."""
    if not re.fullmatch(r"sm_\d{2,3}a?", arch):
        raise BuildError(f"bad GPU architecture '{arch}' (expected like sm_90)")
    nvcc = find_nvcc()
    digest = hashlib.sha256()
    for part in (nvcc_version(nvcc), arch, " ".join(NVCC_FLAGS + extra_flags)):
        digest.update(part.encode() + b"\0")
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    key = digest.hexdigest()[:32]
    root = private_dir(cache or cache_dir(), "build cache")
    entry = root / key
    cubin_path, sum_path = entry / "module.cubin", entry / "module.cubin.sha256"
    try:
        lock = open(root / f"{key}.lock", "w")
    except OSError as exc:
        raise BuildError(f"cannot use the build cache: {exc.strerror or exc}", file=str(root)) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # released when the file closes, even if killed
        if cubin_path.is_file() and sum_path.is_file():
            data = cubin_path.read_bytes()
            if hashlib.sha256(data).hexdigest() == sum_path.read_text().strip():
                return data
        shutil.rmtree(entry, ignore_errors=True)  # missing, partial or corrupt: rebuild
        with tempfile.TemporaryDirectory(prefix=f".{key}.", dir=root) as tmp:
            tmpdir = Path(tmp)
            for name, content in files.items():
                (tmpdir / name).write_bytes(content)
            cmd = [nvcc, "-cubin", f"-arch={arch}", *NVCC_FLAGS, *extra_flags,
                   "-o", "module.cubin", source]
            try:
                proc = subprocess.run(cmd, cwd=tmpdir, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                raise BuildError(f"nvcc took more than 600 s on {source}") from None
            except OSError as exc:
                raise BuildError(f"cannot run nvcc: {exc}") from None
            if proc.returncode != 0:
                raise BuildError(_nvcc_errors(proc.stderr + proc.stdout, source, tmpdir / source))
            data = (tmpdir / "module.cubin").read_bytes()
            (tmpdir / "module.cubin.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
            for name in files:
                (tmpdir / name).unlink()
            staging = tmpdir.with_name(tmpdir.name + ".done")
            os.rename(tmpdir, staging)
            os.rename(staging, entry)
            tmpdir.mkdir()                        # TemporaryDirectory cleans up its own name
        return data
