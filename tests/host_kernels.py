"""Run a build's generated kernels on the host, without a GPU: the CUDA text of each kernel and
its launch, compiled as C++ with g++ behind a small shim for CUDA's built-ins. Every block runs
in order; a block's threads run as fibers (ucontext) in rounds, each until it reaches a barrier
(`__syncthreads`; a warp shuffle counts as two block-wide ones) or ends, in an order shuffled
afresh each round, so shared memory, block reductions, warp shuffles and split-K's last-block
sums work as on the GPU, and a missing barrier shows. Shared memory is poisoned at the start of
every block (NaN; flags false), as on a GPU it would hold garbage. Tensor-core kernels (WMMA,
mma.sync, fp16) cannot run this way; a build with one is refused. Limits: a shuffle reached by
some warps of a block but not others, or a `__syncthreads` some threads skip, is not modelled
(no template does either).

The arena and the outputs start as NaN, so an element no thread writes shows; every `__ldg` is
checked against the buffers the network owns (input, arena, weights, outputs, split-K scratch
included), and a load outside them counts as stray; the arena and the outputs sit between guard
margins whose contents are checked afterwards, so a store out of bounds (up to the margin)
shows too (plain loads, like a fused add's, read NaN there). The CPU suite uses this to check
the indexing of kernels on odd shapes against the NumPy reference, including kernels that have
not run on a GPU since they changed. Running threads in turn hides races between them: this
checks indexing and barriers' placement in sequence, not concurrency.
"""
from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from squeezegen.build import build

COMPILER = shutil.which("g++") or shutil.which("c++")
_CALLS = itertools.count()

_SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <ucontext.h>
#include <sys/mman.h>
struct sg_dim { unsigned x, y, z; };
static sg_dim blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __launch_bounds__(...)
#define __device__
#define __forceinline__ inline
#define __align__(n) __attribute__((aligned(n)))
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
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
    T out;
    memset((void*)&out, 0xff, sizeof(T));           // NaN for floats
    return out;
}
template <class T> static inline T __ldcg(const T* p) { return __ldg(p); }
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
static inline void __threadfence() {}
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned old = *p; *p += v; return old; }

// ---- a block's threads as fibers: each runs until a barrier (it yields) or its end
static ucontext_t sg_main;
static ucontext_t* sg_fiber = nullptr;
static char* sg_stacks = nullptr;
static int* sg_done = nullptr;
static unsigned sg_capacity = 0, sg_current = 0;
static const size_t SG_STACK = 1 << 17, SG_PAGE = 4096;
static void (*sg_body)() = nullptr;
static void sg_yield() { swapcontext(&sg_fiber[sg_current], &sg_main); }
static void __syncthreads() { sg_yield(); }

// shared memory: each `__shared__` declaration registers its static storage the first time a
// thread passes it, and every block starts with all of it poisoned (0xff bytes: NaN for
// floats; a flag false), so a read of shared memory the block did not write shows, as on a
// GPU it would be garbage
static void* sg_shared_at[1024];
static size_t sg_shared_bytes[1024];
static int sg_shared_poison[1024];
static int sg_shared_count = 0;
static void sg_shared(void* p, size_t bytes, int poison) {
    for (int i = 0; i < sg_shared_count; ++i) if (sg_shared_at[i] == p) return;
    if (sg_shared_count == 1024) abort();
    sg_shared_at[sg_shared_count] = p;
    sg_shared_poison[sg_shared_count] = poison;
    sg_shared_bytes[sg_shared_count++] = bytes;
    memset(p, poison, bytes);
}
static void sg_poison_shared() {
    for (int i = 0; i < sg_shared_count; ++i)
        memset(sg_shared_at[i], sg_shared_poison[i], sg_shared_bytes[i]);
}

// a warp shuffle: every live thread of the block stores, then reads its partner (two
// block-wide barriers: every template's shuffles are reached by all live threads alike);
// an ended thread's slot reads NaN
static float sg_exchange[1024];
static float __shfl_down_sync(unsigned, float v, unsigned delta) {
    sg_exchange[threadIdx.x] = v;
    sg_yield();
    const unsigned lane = threadIdx.x % 32;
    const float r = lane + delta < 32 ? sg_exchange[threadIdx.x + delta] : v;
    sg_yield();
    return r;
}
static void sg_trampoline() {
    sg_body();
    sg_done[sg_current] = 1;
    sg_exchange[sg_current] = NAN;
}
static void sg_release() {                   // the stacks' mappings go back after each run
    if (sg_stacks) munmap(sg_stacks, sg_capacity * (SG_STACK + SG_PAGE));
    free(sg_fiber); free(sg_done);
    sg_stacks = nullptr; sg_fiber = nullptr; sg_done = nullptr; sg_capacity = 0;
}
static void sg_run_block(unsigned threads) {
    if (threads > sg_capacity) {             // stacks with a guard page below each
        free(sg_fiber); free(sg_done);
        if (sg_stacks) munmap(sg_stacks, sg_capacity * (SG_STACK + SG_PAGE));
        sg_fiber = (ucontext_t*)calloc(threads, sizeof(ucontext_t));
        sg_stacks = (char*)mmap(nullptr, threads * (SG_STACK + SG_PAGE), PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (unsigned t = 0; t < threads; ++t)
            mprotect(sg_stacks + t * (SG_STACK + SG_PAGE), SG_PAGE, PROT_NONE);
        sg_done = (int*)calloc(threads, sizeof(int));
        sg_capacity = threads;
    }
    sg_poison_shared();
    for (unsigned t = 0; t < 1024; ++t) sg_exchange[t] = NAN;
    for (unsigned t = 0; t < threads; ++t) {
        getcontext(&sg_fiber[t]);
        sg_fiber[t].uc_stack.ss_sp = sg_stacks + t * (SG_STACK + SG_PAGE) + SG_PAGE;
        sg_fiber[t].uc_stack.ss_size = SG_STACK;
        sg_fiber[t].uc_link = &sg_main;
        makecontext(&sg_fiber[t], sg_trampoline, 0);
        sg_done[t] = 0;
    }
    // rounds: every live thread once, until the next barrier or its end, in an order shuffled
    // afresh each round (a fixed seed), so that no thread sees another's stores between two
    // barriers in a way that only the order made right
    static unsigned order[1024];
    static unsigned long long seed = 0x9E3779B97F4A7C15ull;
    for (unsigned round = 0; ; ++round) {
        for (unsigned i = 0; i < threads; ++i) order[i] = i;
        for (unsigned i = threads - 1; i > 0; --i) {            // Fisher-Yates, xorshift
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            const unsigned j = (unsigned)(seed % (i + 1));
            const unsigned tmp = order[i]; order[i] = order[j]; order[j] = tmp;
        }
        bool live = false;
        for (unsigned i = 0; i < threads; ++i) {
            const unsigned t = order[i];
            if (sg_done[t]) continue;
            sg_current = t;
            threadIdx = {t, 0u, 0u};
            swapcontext(&sg_main, &sg_fiber[t]);
            live = live || !sg_done[t];
        }
        if (!live) break;
    }
}
"""

_SHARED = re.compile(r"__shared__ ([^;=]*?)(\w+)((?:\[[^\]]*\])*);")
_KERNEL = re.compile(r'(extern "C" __global__.*?\n\}\n)', re.S)
_LAUNCH = re.compile(r"(\w+)<<<dim3\((\d+), (\d+), (\d+)\), (\d+), (\w+), sg_stream>>>\((.*?)\);")


class NotEmulable(Exception):
    """The build has a kernel whose threads depend on each other."""


def host_source(cu: str) -> str:
    """C++ for the host: the shim, the buffers' struct, each kernel, and each launch as loops
    over blocks and threads, then `sg_run(buffers, ranges...)` calling them in order."""
    if "mma" in cu or "__half" in cu or "wmma" in cu:
        raise NotEmulable("a kernel uses tensor cores or fp16")
    cu = _SHARED.sub(lambda m: f"static {m.group(1)}{m.group(2)}{m.group(3)}; "
                              f"sg_shared(&{m.group(2)}, sizeof({m.group(2)}), "
                              f"{'0' if 'bool' in m.group(1) else '0xff'});", cu)
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
static const sg_buffers* {name}_b;
static void {name}_thread() {{ const sg_buffers& sg_b = *{name}_b; {fn}({args}); }}
static void {name}(const sg_buffers& sg_b) {{
    gridDim = {{{gx}u, {gy}u, {gz}u}};
    blockDim = {{{block}u, 1u, 1u}};
    {name}_b = &sg_b;
    sg_body = {name}_thread;
    for (unsigned z = 0; z < {gz}u; ++z) for (unsigned y = 0; y < {gy}u; ++y)
        for (unsigned x = 0; x < {gx}u; ++x) {{
            blockIdx = {{x, y, z}};
            sg_run_block({block}u);
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
    sg_release();
    return sg_stray;
}}
""")
    return "\n".join(body)


def run_on_host(graph, weights, x: np.ndarray, folder: Path, **build_options):
    """(outputs, stray loads, the Build) of `graph` run on the host at batch len(x)."""
    if COMPILER is None:
        raise NotEmulable("no C++ compiler")
    return run_build(build(graph, x.shape[0], weights=weights, **build_options), x, folder)


def run_build(result, x: np.ndarray, folder: Path):
    """(outputs, stray loads, the Build) of the Build `result` run on the host on `x`."""
    files = result.output.files
    name = result.fused.name
    cu = files[f"{name}.cu"]
    cu = cu.decode() if isinstance(cu, bytes) else cu
    source = host_source(cu)
    stem = (f"k_{hashlib.sha256(source.encode()).hexdigest()[:16]}_{os.getpid()}_"
            f"{next(_CALLS)}")          # a library of its own per call: dlopen caches by path
    (folder / f"{stem}.cpp").write_text(source)
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
    for offset, size in re.findall(r"cudaMemsetAsync\(\(char\*\)net->arena \+ (\d+), 0, "
                                   r"(\d+), stream\)", cu):      # split-K's tile counters
        arena.view(np.uint8)[int(offset):int(offset) + int(size)] = 0
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
    _ctypes.dlclose(library._handle)            # its mappings too: a fuzz run loads thousands
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
