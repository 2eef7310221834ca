"""Which GPU, and its CUDA context current in whatever thread uses it (PyCUDA's driver API).

A CUDA context is current per thread: a network built in one thread and called in another (a
thread pool, a web server, a Ray actor) needs its context made current there first. Each GPU's
*primary* context is retained once per process, and `current(device)` makes it current in the
calling thread for the length of a `with` block (and restores what was current before), so a
network on GPU 1 and one on GPU 0 can be called one after the other from any thread.

When the GPU cannot be used, `GPUError` says what is missing (no NVIDIA driver, no PyCUDA, no
GPU, a GPU index that does not exist) and what works without one.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import threading
from contextlib import contextmanager

from ..errors import GPUError

WITHOUT_GPU = ("`squeezegen build` still writes the CUDA code, and `squeezegen run --backend "
               "numpy` runs the NumPy reference")


_LOCK = threading.Lock()
_DRIVER: list = []                      # PyCUDA's driver module, once it has initialised
_PRIMARY: dict[int, object] = {}        # device index -> its retained primary context
_MAIN_PUSHED: list = []                 # what `cuda()` left current on the main thread


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def driver():
    """PyCUDA's driver module, initialised; a GPUError that names what is missing otherwise."""
    if _DRIVER:                          # every call of a network passes here: checked once
        return _DRIVER[0]
    if not _has_driver():
        raise GPUError(f"no NVIDIA driver on this machine (libcuda.so.1 is not installed), so the "
                       f"cuda backend cannot run here; {WITHOUT_GPU}")
    try:
        import pycuda.driver as drv
    except ImportError:
        raise GPUError("the cuda backend needs PyCUDA, which is not installed: pip install "
                       f"'squeezegen[cuda]' (until then, {WITHOUT_GPU})") from None
    try:
        drv.init()
        count = drv.Device.count()
    except drv.Error as exc:
        raise GPUError(f"the NVIDIA driver cannot start ({exc}); {WITHOUT_GPU}") from None
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise GPUError(f"no CUDA GPU is visible{hint}; {WITHOUT_GPU}")
    _DRIVER.append(drv)
    return drv


def check_device(device) -> int:
    """`device` as a GPU index that exists on this machine."""
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise GPUError(f"device must be a GPU index (0, 1, ...), got {device!r}")
    count = driver().Device.count()
    if device >= count:
        raise GPUError(f"there is no GPU {device}: this machine has {count} "
                       f"(indices 0..{count - 1})")
    return device


def primary_context(device: int = 0):
    """GPU `device`'s primary context, retained once for the life of the process."""
    drv = driver()
    with _LOCK:
        ctx = _PRIMARY.get(device)
        if ctx is None:
            check_device(device)
            try:
                ctx = drv.Device(device).retain_primary_context()
            except drv.Error as exc:
                raise GPUError(f"cannot open GPU {device}: {exc}") from None
            _PRIMARY[device] = ctx
    return ctx


@contextmanager
def current(device: int = 0):
    """`with current(i) as drv:` GPU i's context is current in this thread inside the block."""
    drv = driver()
    ctx = primary_context(device)
    now = drv.Context.get_current()
    if now is not None and now.handle == ctx.handle:
        yield drv
        return
    ctx.push()
    try:
        yield drv
    finally:
        drv.Context.pop()


def cuda(device: int = 0):
    """PyCUDA's driver with GPU `device`'s context current in the calling thread from now on
    (left current: for scripts and tests that call PyCUDA directly). Networks do not rely on
    it: they make their own GPU's context current around every call."""
    drv = driver()
    ctx = primary_context(device)
    now = drv.Context.get_current()
    if now is None or now.handle != ctx.handle:
        ctx.push()
        if threading.current_thread() is threading.main_thread():
            _MAIN_PUSHED.append(ctx)
    return drv


def device_arch(device: int = 0) -> str:
    """The GPU's architecture as nvcc names it (sm_90)."""
    major, minor = driver().Device(check_device(device)).compute_capability()
    return f"sm_{major}{minor}"


def device_name(device: int = 0) -> str:
    return driver().Device(check_device(device)).name()


def device_target(device: int = 0):
    """The build target of GPU `device`: its name, architecture and SM count."""
    from ..codegen.target import Target
    drv = driver()
    gpu = drv.Device(check_device(device))
    sms = gpu.get_attribute(drv.device_attribute.MULTIPROCESSOR_COUNT)
    return Target(gpu.name(), device_arch(device), int(sms))


def gpu_available() -> bool:
    try:
        cuda()
        return True
    except GPUError:
        return False


def page_aligned(shape: tuple, dtype):
    """A zeroed NumPy array on pages of its own (anonymous memory), as `PinnedHost` wants."""
    import mmap
    import numpy as np
    count = int(np.prod(shape))
    nbytes = count * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, max(1, nbytes)), dtype, count).reshape(shape)


class PinnedHost:
    """A NumPy array's host memory page-locked for CUDA (cuMemHostRegister, portable to every
    GPU's context in this process): copies to and from it run at the link's full speed and do
    not stall the calling thread, where pageable memory is staged by the driver at a fraction
    of it. For buffers reused for a whole run (segment's shared batches); `close()` makes the
    memory pageable again and must come before the array's memory goes away. (Through the
    driver's C API: PyCUDA's register_host_memory fails with NumPy 2.)"""

    def __init__(self, array, device: int = 0):
        self.device = check_device(device)
        if not array.flags.c_contiguous or array.nbytes == 0:
            raise GPUError("only a contiguous, non-empty array can be page-locked")
        self._array = array                     # kept alive while registered
        self._address = ctypes.c_void_p(array.ctypes.data)
        lib = _libcuda()
        with current(self.device):
            code = lib.cuMemHostRegister_v2(self._address, ctypes.c_size_t(array.nbytes),
                                            ctypes.c_uint(_HOST_REGISTER_PORTABLE))
        if code != 0:
            self._array = None
            raise GPUError(f"cannot page-lock {array.nbytes:,} bytes of host memory: CUDA "
                           f"driver error {code}")

    def close(self) -> None:
        array, self._array = self._array, None
        if array is not None:
            with current(self.device):
                code = _libcuda().cuMemHostUnregister(self._address)
            if code != 0:
                raise GPUError(f"cannot unlock {array.nbytes:,} bytes of host memory: CUDA "
                               f"driver error {code}")


_HOST_REGISTER_PORTABLE = 1            # CU_MEMHOSTREGISTER_PORTABLE


def _libcuda():
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise GPUError(f"cannot load the CUDA driver: {exc}") from None


def _pop_main_thread_contexts() -> None:
    try:
        import pycuda.driver as drv
        while _MAIN_PUSHED:
            _MAIN_PUSHED.pop()
            drv.Context.pop()
    except Exception:
        pass


atexit.register(_pop_main_thread_contexts)
