"""NumPy helpers the ops' reference functions share: padding and sliding windows."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

CHUNK_ELEMENTS = 1 << 24        # im2col chunks of at most 64 MiB


def windows(x: np.ndarray, kernel, stride, out_hw) -> np.ndarray:
    """(N, C, Ho, Wo, kh, kw) view of the windows of an already padded x."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    view = sliding_window_view(x, (kh, kw), axis=(2, 3))
    return view[:, :, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw]


def pad(x: np.ndarray, top, left, bottom, right, value=0.0) -> np.ndarray:
    if not (top or left or bottom or right):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def reduce_windows(xp, kernel, stride, out_hw, ufunc, dtype, dilation=(1, 1)):
    """ufunc-reduce every pooling window (its taps `dilation` apart): one strided slice per tap
    for small or dilated windows (fast), a window view for large ones (few Python steps)."""
    (kh, kw), (sh, sw), (ho, wo), (dh, dw) = kernel, stride, out_hw, dilation
    if kh * kw > 64 and (dh, dw) == (1, 1):
        return ufunc.reduce(windows(xp, kernel, stride, out_hw).astype(dtype), axis=(4, 5))
    out = None
    for i in range(0, kh * dh, dh):
        for j in range(0, kw * dw, dw):
            tap = xp[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
            if out is None:
                out = tap.astype(dtype, copy=True)
            else:
                ufunc(out, tap, out=out)
    return out
