"""Kernel launches through the CUDA driver's `cuLaunchKernelEx` (ctypes), so that a network's
kernels can be programmatic dependent launches (Hopper and later): a kernel's launch overlaps
the end of the one before it, which waits for that one in its first instruction
(`griddepcontrol.wait`, in every template). At batch 1, where a network is some 30 short
kernels, the launch gaps are a large part of its time.

PyCUDA's wheel here has no `cuLaunchKernelEx` and no handles of the functions it loads, so this
module loads the cubin itself, in the context current when it is made. Without the call (a driver
older than CUDA 12), `DriverKernels.available()` is None and the network launches through PyCUDA.
"""
from __future__ import annotations

import ctypes

# CUlaunchAttributeID: CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (cuda.h)
_PROGRAMMATIC_STREAM_SERIALIZATION = 6
_COMPUTE_CAPABILITY_MAJOR = 75                 # CUdevice_attribute


class _LaunchAttribute(ctypes.Structure):      # CUlaunchAttribute: id, pad to 8, 64-byte union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int),
                ("value_pad", ctypes.c_char * 60)]


class _LaunchConfig(ctypes.Structure):         # CUlaunchConfig
    _fields_ = [("grid_x", ctypes.c_uint), ("grid_y", ctypes.c_uint), ("grid_z", ctypes.c_uint),
                ("block_x", ctypes.c_uint), ("block_y", ctypes.c_uint), ("block_z", ctypes.c_uint),
                ("shared_bytes", ctypes.c_uint), ("stream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttribute)), ("num_attrs", ctypes.c_uint)]


assert ctypes.sizeof(_LaunchAttribute) == 72, "CUlaunchAttribute is 72 bytes"


class DriverKernels:
    """The kernels of one cubin, loaded into the current context:

        lib = DriverKernels.available()          # libcuda with cuLaunchKernelEx, or None
        kernels = DriverKernels(lib, cubin, ["sg_conv1", ...])
        kernels.launch(0, grid, block, stream.handle, (ptr, ...), dependent=False)
        kernels.close()                          # with the same context current

    `dependent`: a programmatic dependent launch, where `dependent_launch_supported` says the
    GPU has them (compute capability 9.0 and later); the kernel must wait for its predecessor
    before it touches memory (the templates' `dependent_launch` macro)."""

    def __init__(self, lib, cubin: bytes, symbols: list[str], device: int):
        self._lib = lib
        self._module = ctypes.c_void_p()
        self._check(lib.cuModuleLoadData(ctypes.byref(self._module), ctypes.c_char_p(cubin)),
                    "cuModuleLoadData")
        self._functions = []
        try:
            for symbol in symbols:
                fn = ctypes.c_void_p()
                self._check(lib.cuModuleGetFunction(ctypes.byref(fn), self._module,
                                                    symbol.encode()), f"cuModuleGetFunction {symbol}")
                self._functions.append(fn)
            major = ctypes.c_int()
            self._check(lib.cuDeviceGetAttribute(ctypes.byref(major), _COMPUTE_CAPABILITY_MAJOR,
                                                 ctypes.c_int(device)), "cuDeviceGetAttribute")
        except BaseException:
            self.close()
            raise
        self.dependent_launch_supported = major.value >= 9
        self._attribute = _LaunchAttribute(id=_PROGRAMMATIC_STREAM_SERIALIZATION, value=1)

    @classmethod
    def available(cls):
        """The CUDA driver library when it has the calls, else None."""
        try:
            lib = ctypes.CDLL("libcuda.so.1")
            for name in ("cuLaunchKernelEx", "cuModuleLoadData", "cuModuleGetFunction",
                         "cuModuleUnload", "cuDeviceGetAttribute"):
                getattr(lib, name)
            return lib
        except (OSError, AttributeError):
            return None

    @staticmethod
    def _check(code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"{what} failed with CUDA driver error {code}")

    def launch(self, i: int, grid: tuple, block: tuple, stream_handle: int, args: tuple,
               dependent: bool) -> None:
        """Kernel number `i` with pointer arguments `args` (device addresses) on the stream."""
        values = (ctypes.c_uint64 * len(args))(*args)
        params = (ctypes.c_void_p * len(args))(
            *[ctypes.addressof(values) + 8 * j for j in range(len(args))])
        dependent = dependent and self.dependent_launch_supported
        config = _LaunchConfig(*grid, *block, 0, ctypes.c_void_p(stream_handle),
                               ctypes.pointer(self._attribute), 1 if dependent else 0)
        self._check(self._lib.cuLaunchKernelEx(ctypes.byref(config), self._functions[i],
                                               params, None), "cuLaunchKernelEx")

    def close(self) -> None:
        """Unload the module (with the context it was loaded in current)."""
        self._functions = []
        if self._module:
            self._lib.cuModuleUnload(self._module)
            self._module = ctypes.c_void_p()
