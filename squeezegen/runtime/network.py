"""A compiled network on the GPU: weights uploaded once, one arena, launches replayed as a graph.

    with squeezegen.compile("models/squeezeseg.yaml", "w.npz", batch=8) as net:
        y = net(x)                              # NumPy in, NumPy out
        net.run(d_in, d_out, stream)            # device pointers, caller's stream
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from ..build import Build, build
from ..codegen.emit import pack_weights
from ..errors import InputError
from ..frontend import load_model
from ..reference.executor import check_input
from ..weights import check_weights, load_weights
from .compile import compile_cubin
from .cuda_graph import CudaGraph
from .device import (GPUError, check_device, cuda, current, device_arch, device_target,
                     gpu_available)

__all__ = ["Network", "compile", "GPUError", "cuda", "gpu_available", "device_arch"]


def _device_ptr(value) -> int:
    """An integer device address from an int, a PyCUDA allocation/GPUArray or a CUDA tensor."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InputError(f"expected a device pointer, got {type(value).__name__} {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if hasattr(value, "gpudata"):
        return int(value.gpudata)
    if hasattr(value, "data_ptr"):
        if not getattr(value, "is_cuda", False):
            raise InputError("expected a tensor on the GPU, got one on the CPU "
                             "(call net(x) for host arrays)")
        return int(value.data_ptr())
    if hasattr(value, "__cuda_array_interface__"):
        return int(value.__cuda_array_interface__["data"][0])
    try:
        return int(value)               # a PyCUDA DeviceAllocation converts to its address
    except (TypeError, ValueError):
        raise InputError(f"expected a device pointer, got {type(value).__name__}") from None


class Network:
    """The generated network of one build, resident on GPU `device`. Usable from any thread: each
    call makes the GPU's context current in the calling thread, and calls of `net(x)` from several
    threads at once take turns (they share the network's own buffers)."""

    def __init__(self, result: Build, weights: dict, use_graph: bool = True, device: int = 0):
        self.device = check_device(device)
        self.build = result
        self.graph = result.fused
        self.batch = result.plan.batch
        self.weights = weights
        self._allocations: list = []
        self._cuda_graph = None
        self._closed = False
        self._kernels: list = []
        self._module = None
        self._host_lock = threading.Lock()
        manifest = result.output.manifest
        with current(self.device) as drv:
            self._drv = drv
            try:
                files = {k: v for k, v in result.output.files.items() if k.endswith((".cu", ".h"))}
                cubin = compile_cubin(files, f"{self.graph.name}.cu", device_arch(self.device))
                self._load_kernels(drv, cubin, manifest["kernels"])
                self._weights = self._alloc(self._weights_array(weights), "weights")
                self._arena = self._alloc_bytes(max(1, result.plan.arena_bytes), "the arena")
                self._input = self._alloc_bytes(4 * self.batch * self.graph.input.type.numel, "input")
                self._outputs = [self._alloc_bytes(4 * self.batch * self.graph[o].type.numel,
                                                   f"output {o}") for o in self.graph.outputs]
                self.stream = drv.Stream()
                self._graph_lib = CudaGraph.available() if use_graph else None
            except BaseException:
                self.close()
                raise

    def _load_kernels(self, drv, cubin: bytes, kernels: list[dict]):
        """The kernels, launched through PyCUDA in manifest order."""
        self._launches = [(k["name"], tuple(k["grid"]), tuple(k["block"])) for k in kernels]
        self._module = drv.module_from_buffer(cubin)
        self._kernels = [self._module.get_function(k["symbol"]) for k in kernels]
        for fn in self._kernels:
            fn.prepare("P" * (3 + len(self.graph.outputs)))

    def active(self):
        """This network's GPU context, current in the calling thread for a `with` block."""
        self._check_open()
        return current(self.device)

    # ------------------------------------------------------------------ memory
    def _alloc_bytes(self, nbytes: int, what: str):
        try:
            mem = self._drv.mem_alloc(nbytes)
        except self._drv.MemoryError:
            free, total = self._drv.mem_get_info()
            raise GPUError(f"GPU {self.device} out of memory: {what} needs {nbytes:,} bytes, "
                           f"{free:,} of {total:,} are free") from None
        self._allocations.append(mem)
        return mem

    def _alloc(self, array: np.ndarray, what: str):
        mem = self._alloc_bytes(max(4, array.nbytes), what)
        self._drv.memcpy_htod(mem, array)
        return mem

    def _weights_array(self, weights: dict) -> np.ndarray:
        return pack_weights(self.graph, weights, self.batch)

    # ------------------------------------------------------------------ running
    def _args(self, input_ptr: int, output_ptrs: list[int]):
        return (input_ptr, int(self._arena), int(self._weights), *output_ptrs)

    def launch_kernels(self, stream, input_ptr: int, output_ptrs: list[int], only: int | None = None):
        """Launch the kernels in order (or just kernel number `only`) on `stream`. A whole run
        starts by zeroing the split-K tile counters (every kernel leaves them zero, but a run
        cut short, or two at once, would not)."""
        plan = self.build.plan
        args = self._args(input_ptr, output_ptrs)
        with self.active():
            if plan.counters_bytes and only is None:
                self._drv.memset_d32_async(int(self._arena) + plan.counters_offset, 0,
                                           plan.counters_bytes // 4, stream)
            for i, (name, grid, block) in enumerate(self._launches):
                if only is not None and i != only:
                    continue
                try:
                    self._kernels[i].prepared_async_call(grid, block, stream, *args)
                except (self._drv.Error, RuntimeError) as exc:
                    raise GPUError(f"launching kernel {name} failed: {exc}") from None

    def run(self, input_ptr, output_ptrs, stream=None) -> None:
        """Run the forward pass on device buffers (full batch, float32 NCHW), asynchronously.
        Do not run one network on two streams at once (they share its arena)."""
        self._check_open()
        outs = output_ptrs if isinstance(output_ptrs, (list, tuple)) else [output_ptrs]
        if len(outs) != len(self.graph.outputs):
            raise InputError(f"expected {len(self.graph.outputs)} output buffer(s), got {len(outs)}")
        stream = stream or self.stream
        self.launch_kernels(stream, _device_ptr(input_ptr), [_device_ptr(o) for o in outs])

    def forward_async(self) -> None:
        """Run on the network's own input/output buffers; replayed as a CUDA graph when possible."""
        with self.active():
            handle = self.stream.handle
            if self._graph_lib is not None and self._cuda_graph is None:
                g = CudaGraph(self._graph_lib, handle)
                try:
                    with g:
                        self.launch_kernels(self.stream, int(self._input),
                                            [int(o) for o in self._outputs])
                    self._cuda_graph = g
                except (RuntimeError, GPUError):
                    self._graph_lib = None            # fall back to plain launches from now on
            if self._cuda_graph is not None:
                try:
                    self._cuda_graph.launch(handle)
                except RuntimeError as exc:
                    raise GPUError(f"running {self.graph.name} failed: {exc}") from None
            else:
                self.launch_kernels(self.stream, int(self._input), [int(o) for o in self._outputs])

    def __call__(self, x: np.ndarray):
        """float32 (n, *input shape) with n <= the build's batch -> the output(s) for those n."""
        outs = []
        with self.forward(x):
            for name, mem in zip(self.graph.outputs, self._outputs):
                host = np.empty((self.batch,) + self.graph[name].type.shape, np.float32)
                self._drv.memcpy_dtoh_async(host, mem, self.stream)
                outs.append(host)
        outs = [o[:len(x)] for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    @contextmanager
    def forward(self, x: np.ndarray, check_values: bool = True):
        """Copy x (float32 (n, *input shape), n <= the batch) in and queue the forward pass on
        `self.stream`; the `with` block may queue more work on the outputs (`self.outputs`, device
        buffers of the full batch) before the stream is synchronised at its end. The block holds
        the network (other threads wait) and has its GPU's context current. `check_values=False`
        skips the warning scan for NaN/Inf (a few ms a batch on the calling thread) for inputs
        that cannot hold them (segment's decoded images). The copy is at full speed from
        page-locked memory (`device.PinnedHost`)."""
        self._check_open()
        x = check_input(self.graph, x, check_values=check_values)
        if x.shape[0] > self.batch:
            raise InputError(f"input batch {x.shape[0]} is larger than this network's batch "
                             f"{self.batch} (compile with batch={x.shape[0]})")
        with self.forward_from(lambda drv, stream, d_input:
                               drv.memcpy_htod_async(d_input, x, stream)) as net:
            yield net

    @contextmanager
    def forward_from(self, queue_input):
        """`forward`, the input made on the GPU instead of copied from an array:
        queue_input(driver, stream, input device buffer) queues the work that writes it (the
        full batch, NCHW float32) on the network's stream."""
        self._check_open()
        drv = self._drv
        with self._host_lock, self.active():
            try:
                queue_input(drv, self.stream, self._input)
                self.forward_async()
                yield self
                self.stream.synchronize()
            except BaseException as exc:
                # the queued copies may still read or write the caller's (page-locked) host
                # memory: wait for them before the caller frees or unlocks it
                try:
                    self.stream.synchronize()
                except drv.Error:
                    pass
                if isinstance(exc, drv.Error):
                    raise self.failure(exc) from None
                raise

    def failure(self, exc) -> GPUError:
        """The GPUError to raise for a CUDA error while running this network."""
        return GPUError(f"running {self.graph.name} failed: {exc}")

    @property
    def input_shape(self) -> tuple:
        """One image's input shape (C, H, W)."""
        return tuple(self.graph.input.type.shape)

    @property
    def outputs(self) -> list:
        """The device buffers of the outputs (float32, the full batch, NCHW), in graph order."""
        self._check_open()
        return list(self._outputs)

    def tensor(self, name: str) -> np.ndarray:
        """Read a tensor back from wherever the plan put it (after a run; for `check`)."""
        place = self.build.plan[name]
        shape = self.graph[name].type.shape
        numel = int(np.prod(shape))
        storage = {"input": self._input, "arena": self._arena}.get(place.storage)
        if storage is None:
            storage = self._outputs[int(place.storage.replace("output", ""))]
        span = (self.batch - 1) * place.image_stride + numel
        flat = np.empty(span, np.float32)
        with self.active():
            self._drv.memcpy_dtoh(flat, int(storage) + 4 * place.offset)
        rows = np.lib.stride_tricks.as_strided(flat, (self.batch, numel),
                                               (4 * place.image_stride, 4))
        return rows.reshape((self.batch,) + shape).copy()

    # ------------------------------------------------------------------ lifetime
    def _check_open(self):
        if self._closed:
            raise GPUError("this network has been closed")

    def close(self) -> None:
        """Free the GPU memory (from any thread); the network cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        try:
            with current(self.device):
                if self._cuda_graph is not None:
                    self._cuda_graph.close()
                    self._cuda_graph = None
                for mem in self._allocations:
                    try:
                        mem.free()
                    except Exception:
                        pass
                self.stream = None          # destroyed here, where its context is current
                self._kernels = []          # and the module unloaded (its functions hold it)
                self._module = None
        except GPUError:
            pass
        self._allocations.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def compile(model, weights, batch: int = 1, use_graph: bool = True, tune: bool = False,
            precision: str = "fp32", device: int = 0) -> Network:
    """Build (or take from the cache), compile and load a model onto GPU `device`. With `tune`,
    every tunable layer gets the tile the autotuner found fastest on this GPU (timing the
    candidates of layers not yet in the tuning cache first: seconds to a minute, once per GPU).
    `precision` "tf32" or "fp16" runs the conv and GEMM-sized linear GEMMs on tensor cores (fp32
    accumulation; see `codegen.schedule.uses_tensor_cores` for the exceptions). The network can
    be called from any thread; networks on several GPUs can live in one process."""
    check_device(device)
    file = None if isinstance(weights, dict) else str(weights)
    graph = load_model(model)
    checked = check_weights(graph, load_weights(weights), file)
    tiles = None
    if tune:
        from .autotune import autotune
        tiles = autotune(graph, batch, checked, precision=precision, device=device)
    result = build(graph, batch, precision=precision, tiles=tiles, target=device_target(device))
    return Network(result, checked, use_graph=use_graph, device=device)
