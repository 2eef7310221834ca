"""The NumPy reference of every IR op: plain, vectorised, and PyTorch's semantics exactly.

Each function takes the node's attrs, its input arrays (batch first) and its parameters
({"weight": ..., "bias": ...}) and returns the output array, float32. Convolutions are im2col +
matmul in batch chunks (bounded memory); transposed convolutions are matmul + col2im.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir.ops import pool_out_size

_CHUNK_ELEMENTS = 1 << 24        # im2col chunks of at most 64 MiB


def _windows(x: np.ndarray, kernel, stride, out_hw) -> np.ndarray:
    """(N, C, Ho, Wo, kh, kw) view of the windows of an already padded x."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    view = sliding_window_view(x, (kh, kw), axis=(2, 3))
    return view[:, :, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw]


def _pad(x: np.ndarray, top, left, bottom, right, value=0.0) -> np.ndarray:
    if not (top or left or bottom or right):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv(attrs, inputs, params):
    x = inputs[0]
    w = params["weight"]
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out_ch = w.shape[0]
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        y = np.matmul(w.reshape(out_ch, c), x.reshape(n, c, h * wd)).reshape(n, out_ch, h, wd)
    else:
        xp = _pad(x, ph, pw, ph, pw)
        wmat = w.reshape(out_ch, c * kh * kw).T
        per_image = c * kh * kw * ho * wo
        step = max(1, _CHUNK_ELEMENTS // max(1, per_image))
        y = np.empty((n, out_ch, ho, wo), np.float32)
        for start in range(0, n, step):
            win = _windows(xp[start:start + step], (kh, kw), (sh, sw), (ho, wo))
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
            y[start:start + step] = (cols @ wmat).reshape(-1, ho, wo, out_ch).transpose(0, 3, 1, 2)
    if "bias" in params:
        y = y + params["bias"].reshape(1, -1, 1, 1)
    if "pool" in attrs:             # fused max pool (fuse_pool pass): whole windows, no padding
        y = maxpool({"kernel": attrs["pool"], "stride": attrs["pool"], "pad": (0, 0),
                     "ceil_mode": False}, [y], {})
    return y.astype(np.float32, copy=False)


def deconv(attrs, inputs, params):
    x = inputs[0]
    w = params["weight"]                                    # (in, out, kh, kw)
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    out_ch = w.shape[1]
    cols = np.matmul(w.reshape(c, -1).T, x.reshape(n, c, h * wd))
    cols = cols.reshape(n, out_ch, kh, kw, h, wd)
    full = np.zeros((n, out_ch, (h - 1) * sh + kh, (wd - 1) * sw + kw), np.float32)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i: i + (h - 1) * sh + 1: sh, j: j + (wd - 1) * sw + 1: sw] += cols[:, :, i, j]
    ho, wo = (h - 1) * sh - 2 * ph + kh, (wd - 1) * sw - 2 * pw + kw
    y = full[:, :, ph: ph + ho, pw: pw + wo]
    if "bias" in params:
        y = y + params["bias"].reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=np.float32)


def _pool_geometry(attrs, x):
    _, _, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    ho = pool_out_size(h, kh, sh, ph, attrs["ceil_mode"])
    wo = pool_out_size(wd, kw, sw, pw, attrs["ceil_mode"])
    # padding on the far side so that every (ceil-mode) window lies inside the array
    bottom = max(ph, (ho - 1) * sh + kh - h - ph)
    right = max(pw, (wo - 1) * sw + kw - wd - pw)
    return (kh, kw), (sh, sw), (ph, pw), (ho, wo), (bottom, right)


def _reduce_windows(xp, kernel, stride, out_hw, ufunc, dtype):
    """ufunc-reduce every pooling window: one strided slice per tap for small windows (fast),
    a window view for large ones (few Python steps)."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    if kh * kw > 64:
        return ufunc.reduce(_windows(xp, kernel, stride, out_hw).astype(dtype), axis=(4, 5))
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]
            if out is None:
                out = tap.astype(dtype, copy=True)
            else:
                ufunc(out, tap, out=out)
    return out


def maxpool(attrs, inputs, params):
    x = inputs[0]
    k, s, (ph, pw), out_hw, (bottom, right) = _pool_geometry(attrs, x)
    xp = _pad(x, ph, pw, bottom, right, value=-np.inf)
    return _reduce_windows(xp, k, s, out_hw, np.maximum, np.float32)


def avgpool(attrs, inputs, params):
    """AvgPool2d with count_include_pad=True: the divisor counts padding but not the part of a
    ceil-mode window that hangs past the padded input."""
    x = inputs[0]
    _, _, h, wd = x.shape
    k, s, (ph, pw), (ho, wo), (bottom, right) = _pool_geometry(attrs, x)
    xp = _pad(x, ph, pw, bottom, right)
    sums = _reduce_windows(xp, k, s, (ho, wo), np.add, np.float64)

    def counts(out, stride, pad, kernel, size):
        start = np.arange(out) * stride - pad
        return np.minimum(start + kernel, size + pad) - start
    div = np.outer(counts(ho, s[0], ph, k[0], h), counts(wo, s[1], pw, k[1], wd))
    return (sums / div).astype(np.float32)


def add(attrs, inputs, params):
    out = inputs[0].copy()
    for other in inputs[1:]:
        out += other
    return out


def concat(attrs, inputs, params):
    return np.concatenate(inputs, axis=1)


def relu(attrs, inputs, params):
    return np.maximum(inputs[0], np.float32(0))


def linear(attrs, inputs, params):
    x = inputs[0].reshape(inputs[0].shape[0], -1)
    y = x @ params["weight"].T
    if "bias" in params:
        y = y + params["bias"]
    return y.astype(np.float32, copy=False)


def softmax(attrs, inputs, params):
    x = inputs[0]
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


OP_IMPLS = {"conv": conv, "deconv": deconv, "maxpool": maxpool, "avgpool": avgpool, "add": add,
            "concat": concat, "relu": relu, "linear": linear, "softmax": softmax}
