"""Pillow's bilinear resize of 8-bit images (`Image.resize(size, BILINEAR)`, libImaging's
Resample.c), as integer tables that a GPU kernel (templates/image_inputs.cu.j2) or NumPy can
apply with the same results to the bit.

Pillow resizes in two 1-D passes. For each output pixel of an axis it takes the source pixels
within the filter's support (1 pixel, widened by the scale when shrinking: an antialiased
triangle), weighs them in double precision, normalises the weights, and rounds them to 22-bit
fixed point. A pass sums `pixel * weight` in 32-bit integers from a rounding offset of 2**21 and
clips the sum's top bits to 0..255, so the intermediate image is 8-bit too. Which pass runs
first matters (by one level, in some pixels): `vertical_first` says what the installed Pillow
does.
"""
from __future__ import annotations

import functools

import numpy as np

PRECISION_BITS = 32 - 8 - 2          # Resample.c's fixed point for 8-bit images
ROUNDING = 1 << (PRECISION_BITS - 1)


@functools.lru_cache(maxsize=4096)
def axis_table(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of n_out outputs from n_in inputs: its first input (int32), how many inputs it
    weighs (int32), and their fixed-point weights (int32, n_out x the most taps, zero-padded).
    Read-only (cached)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"cannot resize {n_in} pixels to {n_out}")
    scale = float(np.float32(n_in)) / n_out      # Pillow's box edge is a C float
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale                                  # the triangle's support
    center = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    first = np.maximum((center - support + 0.5).astype(np.int64), 0)      # C's (int): trunc
    last = np.minimum((center + support + 0.5).astype(np.int64), n_in)
    count = last - first
    taps = int(count.max())
    j = np.arange(taps, dtype=np.float64)
    x = np.abs((j[None, :] + first[:, None] - center[:, None] + 0.5) * (1.0 / filterscale))
    w = np.where(x < 1.0, 1.0 - x, 0.0)
    w[j[None, :] >= count[:, None]] = 0.0
    total = np.zeros(n_out)
    for i in range(taps):                     # summed in the order Resample.c sums them
        total += w[:, i]
    w = np.divide(w, total[:, None], out=w.copy(), where=total[:, None] != 0.0)
    fixed = np.trunc(0.5 + w * (1 << PRECISION_BITS)).astype(np.int32)   # the weights are >= 0
    tables = (first.astype(np.int32), count.astype(np.int32), fixed)
    for a in tables:
        a.setflags(write=False)
    return tables


@functools.lru_cache(maxsize=1)
def _pillow_version() -> tuple[int, int]:
    try:
        import PIL
        return tuple(int(v) for v in PIL.__version__.split(".")[:2])
    except (ImportError, ValueError):
        return (13, 0)


def vertical_first(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """Whether Pillow resizes an image of src_hw (height, width) to out_hw vertical pass
    first. Pillow 13 does when the height shrinks by more than twice what the width shrinks
    (Resample.c); Pillow 12.2 only for images over 100 times as tall as wide that shrink in
    height (Image.resize); older ones never."""
    (src_h, src_w), (h, w) = src_hw, out_hw
    version = _pillow_version()
    if version >= (13, 0):
        return src_h - h > 0 and src_h - h > 2 * (src_w - w)
    if version >= (12, 2):
        return src_h > 100 * src_w and h < src_h
    return False


def _clip8(total: np.ndarray) -> np.ndarray:
    return np.clip(total >> PRECISION_BITS, 0, 255).astype(np.uint8)


def _pass(pixels: np.ndarray, n_out: int) -> np.ndarray:
    """One horizontal pass: (H, W, C) uint8 -> (H, n_out, C) uint8."""
    first, count, weights = axis_table(pixels.shape[1], n_out)
    total = np.full((pixels.shape[0], n_out, pixels.shape[2]), ROUNDING, np.int64)
    for i in range(weights.shape[1]):
        cols = np.minimum(first + i, pixels.shape[1] - 1)     # past `count` the weight is 0
        total += pixels[:, cols, :].astype(np.int64) * weights[None, :, i, None]
    return _clip8(total)


def _horizontal(pixels: np.ndarray, width: int) -> np.ndarray:
    return _pass(pixels, width) if width != pixels.shape[1] else pixels


def _vertical(pixels: np.ndarray, height: int) -> np.ndarray:
    if height == pixels.shape[0]:
        return pixels
    return _pass(pixels.transpose(1, 0, 2), height).transpose(1, 0, 2)


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8 -> (height, width, C) uint8: the tables' result, the passes in Pillow's
    order (`vertical_first`): what the GPU computes; the tests hold it against Pillow."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError(f"an (H, W, C) uint8 image, got {pixels.dtype} {pixels.shape}")
    if vertical_first(pixels.shape[:2], (height, width)):
        out = _horizontal(_vertical(pixels, height), width)
    else:
        out = _vertical(_horizontal(pixels, width), height)
    return np.ascontiguousarray(out)
