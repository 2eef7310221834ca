"""Capture a stream's kernel launches into a CUDA graph and replay it (driver API via ctypes).

PyCUDA's wheel here has no graph bindings, so the few driver calls are made directly; the
kernels are still launched by PyCUDA, on a stream that is being captured.
"""
from __future__ import annotations

import ctypes

_CAPTURE_MODE_THREAD_LOCAL = 1


class CudaGraph:
    """Capture, then replay:

        lib = CudaGraph.available()              # libcuda with the graph calls, or None
        g = CudaGraph(lib, stream.handle)
        with g:                                  # every launch on that stream is captured
            ...launches...
        g.launch(stream.handle)                  # replay them all at once; g.close() frees it
    """

    def __init__(self, lib, stream_handle: int):
        self._lib = lib
        self._stream = ctypes.c_void_p(stream_handle)
        self._graph = ctypes.c_void_p()
        self._exec = ctypes.c_void_p()

    @classmethod
    def available(cls):
        """The CUDA driver library when it has the graph calls, else None."""
        try:
            lib = ctypes.CDLL("libcuda.so.1")
            for name in ("cuStreamBeginCapture_v2", "cuStreamEndCapture",
                         "cuGraphInstantiateWithFlags", "cuGraphLaunch", "cuGraphExecDestroy",
                         "cuGraphDestroy"):
                getattr(lib, name)
            return lib
        except (OSError, AttributeError):
            return None

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"{what} failed with CUDA driver error {code}")

    def __enter__(self):
        self._check(self._lib.cuStreamBeginCapture_v2(self._stream, _CAPTURE_MODE_THREAD_LOCAL),
                    "cuStreamBeginCapture")
        return self

    def __exit__(self, exc_type, exc, tb):
        code = self._lib.cuStreamEndCapture(self._stream, ctypes.byref(self._graph))
        if exc_type is not None:
            self.close()
            return False
        self._check(code, "cuStreamEndCapture")
        self._check(self._lib.cuGraphInstantiateWithFlags(ctypes.byref(self._exec), self._graph,
                                                          ctypes.c_ulonglong(0)),
                    "cuGraphInstantiate")
        return False

    def launch(self, stream_handle: int) -> None:
        self._check(self._lib.cuGraphLaunch(self._exec, ctypes.c_void_p(stream_handle)),
                    "cuGraphLaunch")

    def close(self) -> None:
        if self._exec:
            self._lib.cuGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph:
            self._lib.cuGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()
