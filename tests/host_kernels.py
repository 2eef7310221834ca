"""Run a build's generated kernels on the host, without a GPU: the CUDA text of each kernel and
its launch, compiled as C++ with g++ behind a small shim for CUDA's built-ins, every thread of
every block run in order. Only kernels whose threads are independent can run this way (no
shared memory, no block synchronisation); a build with another kernel is refused.

The arena and the outputs start as NaN, so an element no thread writes shows; every `__ldg` is
checked against the buffers the network owns (input, arena, weights, outputs), and a load
outside them counts as stray; the arena and the outputs sit between guard margins whose
contents are checked afterwards, so a store out of bounds (up to the margin) shows too (plain
loads, like a fused add's, read NaN there). The CPU suite uses this to check the indexing of kernels that
have not run on a GPU since they changed, against the NumPy reference on odd shapes.
"""
from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from squeezegen.build import build

COMPILER = shutil.which("g++") or shutil.which("c++")

_SHIM = r"""
#include <cmath>
#include <cstdint>
struct sg_dim { unsigned x, y, z; };
static sg_dim blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __launch_bounds__(...)
#define __device__
#define __forceinline__ inline
typedef int cudaError_t;
typedef void* cudaStream_t;
static const int cudaSuccess = 0;
static long long sg_stray = 0;
static const char* sg_lo[64];
static const char* sg_hi[64];
static int sg_ranges = 0;
template <class T> static inline T __ldg(const T* p) {
    const char* c = (const char*)p;
    for (int i = 0; i < sg_ranges; ++i)
        if (c >= sg_lo[i] && c + sizeof(T) <= sg_hi[i]) return *p;
    ++sg_stray;
    return (T)NAN;
}
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
#define __expf(x) expf(x)
#define __logf(x) logf(x)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }
"""

_KERNEL = re.compile(r'(extern "C" __global__.*?\n\}\n)', re.S)
_LAUNCH = re.compile(r"(\w+)<<<dim3\((\d+), (\d+), (\d+)\), (\d+), (\w+), sg_stream>>>\((.*?)\);")


class NotEmulable(Exception):
    """The build has a kernel whose threads depend on each other."""


def host_source(cu: str) -> str:
    """C++ for the host: the shim, the buffers' struct, each kernel, and each launch as loops
    over blocks and threads, then `sg_run(buffers, ranges...)` calling them in order."""
    if "__shared__" in cu or "__syncthreads" in cu or "mma." in cu:
        raise NotEmulable("a kernel uses shared memory, block synchronisation or tensor cores")
    struct = re.search(r"struct sg_buffers \{.*?\};", cu, re.S).group(0)
    body = [_SHIM, struct]
    launches = {}
    for text in _KERNEL.findall(cu):
        body.append(text)
    for name, inner in re.findall(r"static cudaError_t (sg_launch_\w+)\(const sg_buffers& sg_b, "
                                  r"cudaStream_t sg_stream\)\n\{\n(.*?)\n\}", cu, re.S):
        m = _LAUNCH.search(inner)
        if m is None:
            raise NotEmulable(f"{name}: no launch found")
        fn, gx, gy, gz, block, smem, args = m.groups()
        if smem != "0":
            raise NotEmulable(f"{name}: {smem} bytes of dynamic shared memory")
        body.append(f"""
static void {name}(const sg_buffers& sg_b) {{
    gridDim = {{{gx}u, {gy}u, {gz}u}};
    blockDim = {{{block}u, 1u, 1u}};
    for (unsigned z = 0; z < {gz}u; ++z) for (unsigned y = 0; y < {gy}u; ++y)
        for (unsigned x = 0; x < {gx}u; ++x) for (unsigned t = 0; t < {block}u; ++t) {{
            blockIdx = {{x, y, z}};
            threadIdx = {{t, 0u, 0u}};
            {fn}({args});
        }}
}}""")
        launches[name] = True
    order = re.findall(r"if \(\(err = (sg_launch_\w+)\(buffers", cu)
    assert order and set(order) <= set(launches), (order, launches)
    calls = "\n".join(f"    {name}(*b);" for name in order)
    body.append(f"""
extern "C" long long sg_run(const sg_buffers* b, const char** lo, const char** hi, int n) {{
    for (int i = 0; i < n; ++i) {{ sg_lo[i] = lo[i]; sg_hi[i] = hi[i]; }}
    sg_ranges = n;
    sg_stray = 0;
{calls}
    return sg_stray;
}}
""")
    return "\n".join(body)


def run_on_host(graph, weights, x: np.ndarray, folder: Path, **build_options):
    """(outputs, stray loads, the Build) of `graph` run on the host at batch len(x)."""
    if COMPILER is None:
        raise NotEmulable("no C++ compiler")
    result = build(graph, x.shape[0], weights=weights, **build_options)
    files = result.output.files
    name = result.fused.name
    cu = files[f"{name}.cu"]
    cu = cu.decode() if isinstance(cu, bytes) else cu
    source = host_source(cu)
    stem = "k_" + hashlib.sha256(source.encode()).hexdigest()[:16]   # a new library per source:
    (folder / f"{stem}.cpp").write_text(source)                      # dlopen caches by path
    subprocess.run([COMPILER, "-O1", "-w", "-std=c++17", "-shared", "-fPIC", "-o",
                    str(folder / f"{stem}.so"), str(folder / f"{stem}.cpp")], check=True)
    library = ctypes.CDLL(str(folder / f"{stem}.so"))
    header = files[f"{name}.h"]
    header = header.decode() if isinstance(header, bytes) else header
    arena_bytes = int(re.search(r"_ARENA_BYTES (\d+)LL", header).group(1))
    blob = np.frombuffer(files[f"{name}.weights.bin"], np.uint8)
    weights_f = np.ascontiguousarray(blob[256:]).view(np.float32)
    x = np.ascontiguousarray(x, np.float32)
    arena, arena_block = _guarded(max(1, arena_bytes // 4))
    outs, out_blocks = zip(*(_guarded(x.shape[0] * result.fused[o].type.numel)
                             for o in result.fused.outputs))
    outs = [o.reshape((x.shape[0],) + tuple(result.fused[name].type.shape))
            for o, name in zip(outs, result.fused.outputs)]
    fields = re.search(r"struct sg_buffers \{(.*?)\};", cu, re.S).group(1)
    n_fields = len(re.findall(r"float\* \w+;", fields))
    assert n_fields == 3 + len(outs) <= 64, fields

    class Buffers(ctypes.Structure):
        _fields_ = [(f"p{i}", ctypes.c_void_p) for i in range(n_fields)]
    arrays = [x, arena, weights_f] + outs
    buffers = Buffers(*[a.ctypes.data for a in arrays])
    lo = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    hi = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data + a.nbytes for a in arrays])
    library.sg_run.restype = ctypes.c_longlong
    stray = library.sg_run(ctypes.byref(buffers), lo, hi, len(arrays))
    for block in (arena_block,) + out_blocks:
        margins = np.concatenate([block[:GUARD], block[-GUARD:]])
        assert (margins.view(np.uint32) == _SENTINEL).all(), "a store outside its buffer"
    return outs, int(stray), result


GUARD = 4096                          # floats of margin on each side of a written buffer
_SENTINEL = np.uint32(0x7FC0DEAD)     # a NaN no kernel computes


def _guarded(size: int):
    """(a NaN-filled float32 array of `size`, the block it sits in between two margins of
    sentinels)."""
    block = np.full(size + 2 * GUARD, np.nan, np.float32)
    block.view(np.uint32)[:GUARD] = _SENTINEL
    block.view(np.uint32)[-GUARD:] = _SENTINEL
    return block[GUARD:GUARD + size], block
