"""Segmentation masks made on the GPU: a network's class scores resized back to each image's
original size and reduced to the argmax class (templates/segment_masks.cu.j2), right after the
forward pass on the network's stream. Only the uint8 masks come back to the host: for
squeezeseg at batch 32 about 10 MB of masks instead of 138 MB of scores, and no resizing on the
CPU.

    with squeezegen.compile(model, weights, batch=32) as net:
        masks = ClassMasks(net)
        classes = masks(x, sizes, boxes)      # a (height, width) uint8 array per image
"""
from __future__ import annotations

import numpy as np

from ..codegen.emit import environment
from ..errors import InputError
from ..segmentation.resample import sampling
from .compile import compile_cubin
from .device import device_arch

THREADS = 256                 # per block; the template's __launch_bounds__
SOURCE = "segment_masks.cu"


def render(network: str, scores_shape: tuple) -> str:
    """The CUDA source of the mask kernel for scores of shape (classes, height, width)."""
    classes, height, width = (int(v) for v in scores_shape)
    if not 1 <= classes <= 256:
        raise InputError(f"masks hold classes 0 to 255; the scores have {classes} classes")
    return environment().get_template("segment_masks.cu.j2").render(
        network=network, classes=classes, height=height, width=width)


def tables(scores_shape: tuple, sizes: list, boxes: list, input_hw: tuple):
    """The kernel's inputs for one batch: per image (mask offset, height, width, first row
    entry, first column entry) int64, the sampled index pairs (int32) and weights (float32) of
    every image's rows then columns, and the masks' total size in bytes."""
    meta = np.zeros((len(sizes), 5), np.int64)
    idx, frac = [], []
    offset = entries = 0
    for i, (size, box) in enumerate(zip(sizes, boxes)):
        h, w = int(size[0]), int(size[1])
        (rows, fy), (cols, fx) = sampling(scores_shape, (h, w), tuple(box), tuple(input_hw))
        meta[i] = (offset, h, w, entries, entries + h)
        idx += [rows, cols]
        frac += [fy, fx]
        offset += h * w
        entries += h + w
    return (meta, np.ascontiguousarray(np.concatenate(idx), np.int32),
            np.ascontiguousarray(np.concatenate(frac), np.float32), offset)


class ClassMasks:
    """The argmax class masks of `net`'s one output, (classes, h, w) scores per image, at each
    image's original size. Call it from any thread; it holds the network while it runs."""

    def __init__(self, net):
        outputs = net.graph.outputs
        if len(outputs) != 1 or len(net.graph[outputs[0]].type.shape) != 3:
            raise InputError(f"masks need one (classes, height, width) output; "
                             f"'{net.graph.name}' has {len(outputs)} output(s)")
        self.net = net
        self.shape = tuple(net.graph[outputs[0]].type.shape)
        self.input_hw = tuple(net.graph.input.type.shape[1:])
        cubin = compile_cubin({SOURCE: render(net.graph.name, self.shape).encode()}, SOURCE,
                              device_arch(net.device))
        with net.active() as drv:
            self._drv = drv
            self._module = drv.module_from_buffer(cubin)
            self._kernel = self._module.get_function("segment_masks")
            self._kernel.prepare("PPPPP")
        self._buffers: dict = {}

    def _buffer(self, what: str, nbytes: int):
        """A device buffer of at least nbytes, kept and grown as batches need."""
        have = self._buffers.get(what)
        if have is None or have[1] < nbytes:
            if have is not None:                      # the network frees the rest at close
                self.net._allocations.remove(have[0])
                have[0].free()
            size = max(nbytes, 2 * have[1] if have else nbytes, 256)
            self._buffers[what] = (self.net._alloc_bytes(size, f"the masks' {what}"), size)
        return self._buffers[what][0]

    def __call__(self, x: np.ndarray, sizes: list, boxes: list | None = None) -> list:
        """x: float32 (n, *input shape); sizes: each image's (height, width); boxes: where each
        went in the input, (top, left, height, width) (default: stretched over all of it)."""
        n = len(sizes)
        boxes = boxes if boxes is not None else [(0, 0) + self.input_hw] * n
        if len(x) != n or len(boxes) != n:
            raise InputError(f"{len(x)} images, {n} sizes and {len(boxes)} boxes")
        if n == 0:
            return []
        meta, idx, frac, total = tables(self.shape, sizes, boxes, self.input_hw)
        largest = int((meta[:, 1] * meta[:, 2]).max())
        host = np.empty(max(1, total), np.uint8)
        drv = self._drv
        with self.net.forward(x) as net:
            d_meta = self._buffer("meta", meta.nbytes)
            d_idx = self._buffer("indices", idx.nbytes)
            d_frac = self._buffer("weights", frac.nbytes)
            d_masks = self._buffer("masks", host.nbytes)
            for dst, src in ((d_meta, meta), (d_idx, idx), (d_frac, frac)):
                drv.memcpy_htod_async(dst, src, net.stream)
            if largest:
                grid = ((largest + THREADS - 1) // THREADS, n)
                self._kernel.prepared_async_call(grid, (THREADS, 1, 1), net.stream,
                                                 int(net.outputs[0]), int(d_meta), int(d_idx),
                                                 int(d_frac), int(d_masks))
            drv.memcpy_dtoh_async(host, d_masks, net.stream)
        return [host[o:o + h * w].reshape(h, w) for o, h, w, _, _ in meta.tolist()]
