"""The network's class scores back at an image's original size: bilinear, half-pixel centres
(PyTorch's `interpolate(mode="bilinear", align_corners=False)`), from the part of the output the
image covers (all of it when stretched, the box without the padding when letterboxed).

`classes_at` gives the argmax of the resized scores without resizing them all. Where the four
source pixels around an output pixel share one argmax class, every convex combination of their
score vectors has that class as its argmax too, so only pixels between source pixels of different
classes (the class boundaries: a few percent of an image) need their scores interpolated. When
most of the image is boundaries (a noisy output, few classes), resizing everything is cheaper.
"""
from __future__ import annotations

import functools

import numpy as np


# Above this fraction of boundary cells per class, resizing every class's scores costs less than
# interpolating the boundary pixels one by one. Measured at about 740x560 from 227x227 with
# Pillow (2 to 3 ms a class): 5 classes cross over at about 11% of the cells, 21 at 30%; with
# NumPy (about 5.5 ms a class, at 800x600 from 64x64): 3 at 30%, 5 at 40%, 10 at 80%.
DENSE_PER_CLASS = {"pillow": 0.018, "numpy": 0.08}


def _axis(n_dst: int, start: float, length: float, limit: int):
    """Source rows (or columns) for n_dst outputs from [start, start + length) of `limit`:
    the crop (a, b) that holds them, and per output i0, i1 (in the crop) and the weight of i1."""
    lo = min(max(0.0, start), limit - 1.0)
    hi = min(max(lo, start + length - 1.0), limit - 1.0)
    a, b = int(np.floor(lo)), int(np.floor(hi)) + 1
    s = np.clip(start + (np.arange(n_dst) + 0.5) * (length / n_dst) - 0.5, lo, hi) - a
    i0 = np.floor(s).astype(np.intp)
    i1 = np.minimum(i0 + 1, b - a - 1)
    return a, b, i0, i1, (s - i0).astype(np.float32)


def _grid(shape: tuple, size: tuple, box: tuple, input_hw: tuple):
    """The crop of scores (K, h, w) and the per-axis sampling for an image of `size` that
    covered `box` (top, left, height, width) of the model's `input_hw`."""
    _, h, w = shape
    sy, sx = h / input_hw[0], w / input_hw[1]
    ya, yb, y0, y1, fy = _axis(size[0], box[0] * sy, box[2] * sy, h)
    xa, xb, x0, x1, fx = _axis(size[1], box[1] * sx, box[3] * sx, w)
    return (slice(ya, yb), slice(xa, xb)), (y0, y1, fy), (x0, x1, fx)


def _pillow_can(scores: np.ndarray, size: tuple, box: tuple, input_hw: tuple) -> bool:
    """Whether Pillow's bilinear resampler computes what `_grid` does: scores at the model's
    input resolution, scaled up (Pillow filters when it scales down)."""
    return (tuple(scores.shape[1:]) == tuple(input_hw) and size[0] >= box[2]
            and size[1] >= box[3])


def _planes(scores: np.ndarray, size: tuple, box: tuple, input_hw: tuple):
    """The resized scores one class at a time through Pillow (C, without the GIL), where
    `_pillow_can`; None otherwise."""
    if not _pillow_can(scores, size, box, input_hw):
        return None
    from PIL import Image
    top, left, bh, bw = box
    crop = scores[:, top:top + bh, left:left + bw]
    return (np.asarray(Image.fromarray(np.ascontiguousarray(plane, np.float32), "F")
                       .resize((size[1], size[0]), Image.BILINEAR)) for plane in crop)


def resize_scores(scores: np.ndarray, size: tuple, box: tuple, input_hw: tuple) -> np.ndarray:
    """(K, h, w) scores -> (K, *size) float32, bilinear."""
    planes = _planes(scores, size, box, input_hw)
    if planes is not None:
        out = np.empty((scores.shape[0],) + tuple(size), np.float32)
        for k, plane in enumerate(planes):
            out[k] = plane
        return out
    return bilinear(scores, size, box, input_hw)


def bilinear(scores: np.ndarray, size: tuple, box: tuple, input_hw: tuple) -> np.ndarray:
    """`resize_scores` in NumPy alone: columns first, then rows, in float32. The GPU's masks
    (templates/segment_masks.cu.j2) do this arithmetic step for step."""
    (ys, xs), (y0, y1, fy), (x0, x1, fx) = _grid(scores.shape, size, box, input_hw)
    crop = scores[:, ys, xs].astype(np.float32, copy=False)
    cols = crop[:, :, x0] * (1 - fx) + crop[:, :, x1] * fx           # separable: columns, rows
    return cols[:, y0, :] * (1 - fy)[:, None] + cols[:, y1, :] * fy[:, None]


def sampling(shape: tuple, size: tuple, box: tuple, input_hw: tuple):
    """For scores of `shape` (K, h, w): the rows and then the columns `bilinear` samples, as
    (index pairs (n, 2) int32 into the whole score plane, weights of the second (n,) float32),
    read-only. Each axis is remembered: photos share a few heights and widths, and segment's
    network thread asks for 32 images' samplings a batch."""
    _, h, w = shape
    sy, sx = h / input_hw[0], w / input_hw[1]
    return (_axis_sampling(int(size[0]), box[0] * sy, box[2] * sy, h),
            _axis_sampling(int(size[1]), box[1] * sx, box[3] * sx, w))


@functools.lru_cache(maxsize=1024)
def _axis_sampling(n_dst: int, start: float, length: float, limit: int):
    """`_axis` as (index pairs (n_dst, 2) int32 into the whole axis, weights of the second)."""
    a, _, i0, i1, f = _axis(n_dst, start, length, limit)
    pairs = (np.stack([i0, i1], axis=1) + a).astype(np.int32)
    pairs.flags.writeable = f.flags.writeable = False
    return pairs, f


def _dense_classes(scores: np.ndarray, size: tuple, box: tuple, input_hw: tuple) -> np.ndarray:
    """The argmax of every class resized, a class at a time where Pillow can resize it."""
    planes = _planes(scores, size, box, input_hw)
    if planes is None:
        return argmax_classes(resize_scores(scores, size, box, input_hw)).astype(np.uint8)
    best = next(planes).copy()
    index = np.zeros(best.shape, np.uint8)
    for k, plane in enumerate(planes, start=1):
        greater = plane > best
        np.maximum(best, plane, out=best)
        index[greater] = k
    return index


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """argmax over axis 0 as int16 (first maximum wins), a plane at a time: about twice as fast
    as np.argmax(axis=0), which walks the class axis with a large stride."""
    best = scores[0].copy()
    index = np.zeros(best.shape, np.int16)
    for k in range(1, scores.shape[0]):
        greater = scores[k] > best
        np.maximum(best, scores[k], out=best)
        index[greater] = k
    return index


def classes_at(scores: np.ndarray, size: tuple, box: tuple, input_hw: tuple) -> np.ndarray:
    """The argmax class (uint8) of the scores resized to `size`, as (height, width)."""
    (ys, xs), (y0, y1, fy), (x0, x1, fx) = _grid(scores.shape, size, box, input_hw)
    crop = scores[:, ys, xs]
    mask = argmax_classes(crop)
    pad = np.pad(mask, ((0, 1), (0, 1)), mode="edge")
    corner = pad[:-1, :-1]
    same = (corner == pad[1:, :-1]) & (corner == pad[:-1, 1:]) & (corner == pad[1:, 1:])
    dense = DENSE_PER_CLASS["pillow" if _pillow_can(scores, size, box, input_hw) else "numpy"]
    if (~same).mean() > dense * scores.shape[0]:                 # mostly boundaries (noise)
        return _dense_classes(scores, size, box, input_hw)
    out = mask.astype(np.uint8).take(y0, axis=0).take(x0, axis=1)
    ci, cj = np.nonzero(~same)
    if ci.size:
        _boundaries(out, crop, ci, cj, (y0, y1, fy), (x0, x1, fx))
    return out


def _boundaries(out, crop, ci, cj, rows, cols) -> None:
    """Interpolate the scores of the output pixels in the cells (ci, cj) whose corners disagree,
    and write their argmax into `out`. Only classes that can win are interpolated: a class whose
    score is below, at all four corners, the best score any class keeps at all four corners
    (a lower bound of the winner's interpolated score) cannot win anywhere in the cell. That
    leaves 2 or 3 classes in most cells; cells are taken in groups of equal candidate counts."""
    (y0, _, fy), (x0, _, fx) = rows, cols
    h, w = crop.shape[1:]
    ni, nj = np.minimum(ci + 1, h - 1), np.minimum(cj + 1, w - 1)
    corners = np.stack([crop[:, ci, cj], crop[:, ci, nj], crop[:, ni, cj], crop[:, ni, nj]])
    floor = corners.min(axis=0).max(axis=0)                       # per cell
    best = corners.max(axis=0)                                     # K, cells
    counts = (best >= floor).sum(axis=0)
    order = np.argsort(-best, axis=0, kind="stable")
    for m in np.unique(counts):
        group = np.nonzero(counts == m)[0]
        candidates = np.sort(order[:m, group], axis=0)         # m, cells: ascending classes
        a, b, c, d = (np.take_along_axis(k[:, group], candidates, axis=0) for k in corners)
        yy, xx, cell = _pixels_of(ci[group], cj[group], y0, x0)
        wy, wx = fy[yy], fx[xx]
        top = a[:, cell]
        top += (b[:, cell] - top) * wx
        bottom = c[:, cell]
        bottom += (d[:, cell] - bottom) * wx
        top += (bottom - top) * wy
        out[yy, xx] = candidates[top.argmax(axis=0), cell]


def _pixels_of(ci: np.ndarray, cj: np.ndarray, y0: np.ndarray, x0: np.ndarray):
    """The output pixels (rows, columns, cell number) whose source cell (y0, x0) is one of
    (ci, cj): a cell covers a rectangle of outputs, as y0 and x0 are sorted."""
    row_start = np.searchsorted(y0, np.arange(int(ci.max()) + 2))
    col_start = np.searchsorted(x0, np.arange(int(cj.max()) + 2))
    rows = row_start[ci + 1] - row_start[ci]
    cols = col_start[cj + 1] - col_start[cj]
    per_cell = rows * cols
    cell = np.repeat(np.arange(len(ci)), per_cell)
    offset = np.arange(cell.size) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    yy = row_start[ci][cell] + offset // cols[cell]
    xx = col_start[cj][cell] + offset % cols[cell]
    return yy, xx, cell
