"""JPEG decoding on the GPU with NVIDIA's nvJPEG library (libnvjpeg, part of the CUDA toolkit),
through ctypes: no build step, and nothing is needed where it is absent (`available()` says
why). Its hardware backend uses the JPEG engines of the A100, H100 and H200 (NVJPG), so the
CPU only reads the files' bytes.

    decoder = JpegDecoder(max_batch=32)   # in a thread where the GPU's context is current
    decoder.decode(files, [(d_ptr, pitch), ...], stream_handle, 3, scales=[1, 2, ...])

Images decode into caller-owned device memory as interleaved RGB (or grey) bytes, each at a
scale of 1, 1/2, 1/4 or 1/8 (`images.scaled_size`: ceil of the size over the scale, as libjpeg's
DCT scaling and Pillow's `draft` give). What the hardware backend does not take (progressive
or arithmetic-coded JPEGs, 4:1:1 chroma, CMYK) the caller keeps for the CPU: `segment`'s
workers choose on the CPU (`images.gpu_jpeg`); `info` asks nvJPEG itself (the probe and the
tests). Like Pillow, it leaves an EXIF orientation alone: pixels come as stored.
"""
from __future__ import annotations

import ctypes
import glob
import os
from dataclasses import dataclass

from ..errors import GPUError

BACKEND_HARDWARE = 3
OUTPUT_Y, OUTPUT_RGBI = 2, 5
CSS_GRAY = 6
# nvjpegCreateEx's flag for chroma upsampling by interpolation, as libjpeg's "fancy upsampling"
# that Pillow uses (nvJPEG 12.1 and later): nearer Pillow's pixels than replicating samples
UPSAMPLING_WITH_INTERPOLATION = 32
CSS_UNSUPPORTED = (4, 5, 7, -1)         # 4:1:1, 4:1:0, 4:1:0V, unknown
SCALE_CODES = {1: 0, 2: 1, 4: 2, 8: 3}  # nvjpegScaleFactor_t of a scale
LIBRARY_NAMES = ("libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so.11", "libnvjpeg.so")
STATUS = {1: "not initialized", 2: "invalid parameter", 3: "bad JPEG", 4: "JPEG not supported",
          5: "allocator failure", 6: "execution failed", 7: "architecture mismatch (no JPEG "
          "hardware on this GPU)", 8: "internal error", 9: "implementation not supported",
          10: "incomplete bitstream"}


class Image(ctypes.Structure):
    """nvjpegImage_t: a pointer and a pitch per plane (interleaved output uses plane 0)."""
    _fields_ = [("channel", ctypes.c_void_p * 4), ("pitch", ctypes.c_size_t * 4)]


@dataclass(frozen=True)
class JpegInfo:
    height: int
    width: int
    channels: int          # 1 (grey) or 3


def _library_paths() -> list[str]:
    """Where libnvjpeg may be: the loader's path first, then the CUDA toolkits' lib folders."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_ROOT"), "/usr/local/cuda"]
    roots += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    paths = list(LIBRARY_NAMES)
    for root in filter(None, roots):
        for sub in ("lib64", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            paths += [os.path.join(root, sub, name) for name in LIBRARY_NAMES]
    return paths


_LIB: list = []


def library():
    """libnvjpeg, loaded once, with the signatures used here: the first one found that has
    every function used here; GPUError if none is."""
    if _LIB:
        return _LIB[0]
    missing = None
    for path in _library_paths():
        try:
            lib = ctypes.CDLL(path)
            _declare(lib)
        except OSError:
            continue
        except AttributeError as exc:          # an older nvJPEG without a function used here
            missing = missing or f"{path} lacks {exc}"
            continue
        _LIB.append(lib)
        return lib
    raise GPUError(f"nvJPEG is too old here ({missing})" if missing else
                   "nvJPEG (libnvjpeg.so, part of the CUDA toolkit) is not installed")


def _declare(lib) -> None:
    """Set the argument and result types of the functions used here (AttributeError: one is
    missing)."""
    vp, ip, i, u, sz = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                        ctypes.c_uint, ctypes.c_size_t)
    signatures = {
        "nvjpegCreateEx": (i, vp, vp, u, ctypes.POINTER(vp)),
        "nvjpegDestroy": (vp,),
        "nvjpegJpegStateCreate": (vp, ctypes.POINTER(vp)),
        "nvjpegJpegStateDestroy": (vp,),
        "nvjpegJpegStreamCreate": (vp, ctypes.POINTER(vp)),
        "nvjpegJpegStreamDestroy": (vp,),
        "nvjpegJpegStreamParseHeader": (vp, ctypes.c_char_p, sz, vp),
        "nvjpegJpegStreamGetChromaSubsampling": (vp, ip),
        "nvjpegJpegStreamGetComponentsNum": (vp, ctypes.POINTER(u)),
        "nvjpegJpegStreamGetFrameDimensions": (vp, ctypes.POINTER(u), ctypes.POINTER(u)),
        "nvjpegDecodeBatchedSupportedEx": (vp, vp, vp, ip),
        "nvjpegDecodeParamsCreate": (vp, ctypes.POINTER(vp)),
        "nvjpegDecodeParamsDestroy": (vp,),
        "nvjpegDecodeParamsSetOutputFormat": (vp, i),
        "nvjpegDecodeParamsSetScaleFactor": (vp, i),
        "nvjpegDecodeParamsSetROI": (vp, i, i, i, i),
        "nvjpegDecodeBatchedInitialize": (vp, vp, i, i, i),
        "nvjpegDecodeBatchedEx": (vp, vp, ctypes.POINTER(vp), ctypes.POINTER(sz),
                                  ctypes.POINTER(Image), ctypes.POINTER(vp), vp),
        "nvjpegGetHardwareDecoderInfo": (vp, ctypes.POINTER(u), ctypes.POINTER(u)),
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = list(args), ctypes.c_int


class NvJpegError(GPUError):
    """An nvJPEG call failed; `status` is its nvjpegStatus_t."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


# what a JPEG itself can make a decode fail with (bad, not supported, incomplete): another
# decoder may still read it; any other status is the GPU's or the library's failure
JPEG_STATUSES = (3, 4, 10)


def check(status: int, what: str) -> None:
    if status != 0:
        raise NvJpegError(f"nvJPEG: {what} failed: {STATUS.get(status, f'status {status}')}",
                          status)


class JpegDecoder:
    """nvJPEG's hardware backend on the GPU whose context is current in the calling thread
    (create, use and close it in one thread, as the networks' worker threads do). GPUError
    when the library or the JPEG hardware is missing."""

    def __init__(self, max_batch: int, flags: int = UPSAMPLING_WITH_INTERPOLATION):
        """flags: nvjpegCreateEx's (NVJPEG_FLAGS_*); an nvJPEG that refuses the upsampling
        flag starts without it."""
        self.lib = library()
        self.max_batch = max_batch
        self.handle = ctypes.c_void_p()
        status = self.lib.nvjpegCreateEx(BACKEND_HARDWARE, None, None, flags,
                                         ctypes.byref(self.handle))
        if status == 2 and flags & UPSAMPLING_WITH_INTERPOLATION:      # invalid parameter
            flags &= ~UPSAMPLING_WITH_INTERPOLATION
            status = self.lib.nvjpegCreateEx(BACKEND_HARDWARE, None, None, flags,
                                             ctypes.byref(self.handle))
        check(status, "starting the hardware decoder")
        self.flags = flags
        self.state = ctypes.c_void_p()
        self.stream = ctypes.c_void_p()
        self.params = [ctypes.c_void_p() for _ in range(max_batch)]
        try:
            check(self.lib.nvjpegJpegStateCreate(self.handle, ctypes.byref(self.state)),
                  "creating a decode state")
            check(self.lib.nvjpegJpegStreamCreate(self.handle, ctypes.byref(self.stream)),
                  "creating a stream parser")
            for p in self.params:
                check(self.lib.nvjpegDecodeParamsCreate(self.handle, ctypes.byref(p)),
                      "creating decode parameters")
                check(self.lib.nvjpegDecodeParamsSetROI(p, 0, 0, -1, -1), "clearing the ROI")
        except GPUError:
            self.close()
            raise
        self._initialized = None             # (batch, output format) of the last initialise
        self._params_set = [None] * max_batch   # (output format, scale) each params holds

    def engines(self) -> tuple[int, int]:
        """(JPEG engines, cores per engine) of this GPU."""
        engines, cores = ctypes.c_uint(), ctypes.c_uint()
        check(self.lib.nvjpegGetHardwareDecoderInfo(self.handle, ctypes.byref(engines),
                                                    ctypes.byref(cores)), "asking for the engines")
        return engines.value, cores.value

    def info(self, data: bytes) -> JpegInfo | None:
        """The image's size and channels if the hardware decodes it (a baseline, Huffman-coded
        JPEG of 1 or 3 components, 4:4:4 / 4:2:2 / 4:2:0 / 4:4:0 / grey); None otherwise (a
        CPU decoder's job; so are files that are not JPEG or that the parser refuses)."""
        lib = self.lib
        if lib.nvjpegJpegStreamParseHeader(self.handle, data, len(data), self.stream) != 0:
            return None
        css = ctypes.c_int()
        components, width, height = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
        supported = ctypes.c_int(1)
        if (lib.nvjpegJpegStreamGetChromaSubsampling(self.stream, ctypes.byref(css))
                or lib.nvjpegJpegStreamGetComponentsNum(self.stream, ctypes.byref(components))
                or lib.nvjpegJpegStreamGetFrameDimensions(self.stream, ctypes.byref(width),
                                                          ctypes.byref(height))
                or lib.nvjpegDecodeBatchedSupportedEx(self.handle, self.stream, self.params[0],
                                                      ctypes.byref(supported))):
            return None
        if (supported.value != 0 or css.value in CSS_UNSUPPORTED
                or components.value not in (1, 3)
                or min(width.value, height.value) < 1):
            return None
        return JpegInfo(height.value, width.value, 1 if css.value == CSS_GRAY else 3)

    def decode(self, datas: list, destinations: list, stream_handle: int, channels: int,
               scales: list | None = None) -> None:
        """Queue the decoding of the JPEGs `datas` on the CUDA stream `stream_handle`: each
        bytes, or (host address, length) of memory that stays untouched until the stream
        is done; image k to device memory destinations[k] = (pointer, row pitch in bytes) as
        `channels` (3: RGB interleaved, 1: grey) bytes a pixel, at 1/scales[k] of its size
        (`images.scaled_size`). NvJpegError if nvJPEG refuses the batch (its status among
        JPEG_STATUSES: a JPEG among them it cannot read); the state must then not be used
        again until the stream is done with whatever the failed call queued."""
        n = len(datas)
        if not 1 <= n <= self.max_batch or len(destinations) != n:
            raise GPUError(f"nvJPEG: {n} images for a decoder of batch {self.max_batch}")
        scales = scales or [1] * n
        fmt = OUTPUT_RGBI if channels == 3 else OUTPUT_Y
        for k, scale in enumerate(scales):          # each image's parameters, where they change
            if self._params_set[k] != (fmt, scale):
                p = self.params[k]
                check(self.lib.nvjpegDecodeParamsSetOutputFormat(p, fmt), "setting the format")
                check(self.lib.nvjpegDecodeParamsSetScaleFactor(p, SCALE_CODES[scale]),
                      "setting the scale")
                self._params_set[k] = (fmt, scale)
        if self._initialized != (n, fmt):
            check(self.lib.nvjpegDecodeBatchedInitialize(self.handle, self.state, n, 1, fmt),
                  "initialising a batch")
            self._initialized = (n, fmt)
        images = (Image * n)()
        for image, (pointer, pitch) in zip(images, destinations):
            image.channel[0], image.pitch[0] = int(pointer), int(pitch)
        where = [(ctypes.cast(ctypes.c_char_p(d), ctypes.c_void_p).value, len(d))
                 if isinstance(d, bytes) else (int(d[0]), int(d[1])) for d in datas]
        status = self.lib.nvjpegDecodeBatchedEx(
            self.handle, self.state, (ctypes.c_void_p * n)(*(a for a, _ in where)),
            (ctypes.c_size_t * n)(*(length for _, length in where)), images,
            (ctypes.c_void_p * n)(*(p.value for p in self.params[:n])),
            ctypes.c_void_p(int(stream_handle)))
        if status != 0:
            self._initialized = None       # a failed batch needs initialising again
        check(status, "decoding a batch")

    def close(self) -> None:
        lib = self.lib
        for p in self.params:
            if p.value:
                lib.nvjpegDecodeParamsDestroy(p)
                p.value = None
        for obj, destroy in ((self.stream, lib.nvjpegJpegStreamDestroy),
                             (self.state, lib.nvjpegJpegStateDestroy),
                             (self.handle, lib.nvjpegDestroy)):
            if obj.value:
                destroy(obj)
                obj.value = None


def available(device: int = 0) -> str | None:
    """None where the hardware decoder starts on GPU `device`; otherwise why not."""
    from .device import current
    try:
        with current(device):
            JpegDecoder(1).close()
    except GPUError as exc:
        return str(exc)
    return None
