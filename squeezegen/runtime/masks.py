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
from .buffers import GrowingBuffers
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


def tables(samplings: list):
    """The kernel's inputs for one batch, from each image's `resample.sampling` ((rows,
    row weights), (columns, column weights)): per image (mask offset, height, width, first row
    entry, first column entry) int64, the index pairs (int32) and weights (float32) of every
    image's rows then columns, and the masks' total size in bytes."""
    meta = np.zeros((len(samplings), 5), np.int64)
    offset = entries = 0
    for i, ((rows, _), (cols, _)) in enumerate(samplings):
        h, w = len(rows), len(cols)
        meta[i] = (offset, h, w, entries, entries + h)
        offset += h * w
        entries += h + w
    idx = np.concatenate([a for (rows, _), (cols, _) in samplings for a in (rows, cols)])
    frac = np.concatenate([a for (_, fy), (_, fx) in samplings for a in (fy, fx)])
    return (meta, np.ascontiguousarray(idx, np.int32), np.ascontiguousarray(frac, np.float32),
            offset)


def views(host: np.ndarray, meta: np.ndarray) -> list:
    """Each image's (height, width) mask in `host`, the masks one after the other."""
    return [host[o:o + h * w].reshape(h, w) for o, h, w, _, _ in meta.tolist()]


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
        self._buffers = GrowingBuffers(net, "the masks'")

    def sampling(self, size: tuple, box: tuple | None = None):
        """What the kernel needs to know of one image of `size` (height, width) that covered
        `box` (top, left, height, width) of the input (default: all of it, stretched). Worker
        threads can prepare it ahead of `__call__`."""
        box = tuple(box) if box is not None else (0, 0) + self.input_hw
        return sampling(self.shape, (int(size[0]), int(size[1])), box, self.input_hw)

    def __call__(self, x: np.ndarray, sizes: list | None = None, boxes: list | None = None,
                 samplings: list | None = None, out: np.ndarray | None = None,
                 check_values: bool = True, make_input=None) -> list:
        """x: float32 (n, *input shape) -> a (height, width) uint8 mask per image. Give each
        image's `sizes` (height, width) and `boxes` (top, left, height, width; default: all of
        the input), or their `samplings`. The masks come back one after the other, image i's
        h x w at the sum of the earlier images' h x w, in a new array or, where it has room, in
        `out` (uint8, 1-D; page-locked memory copies fastest). `check_values`: as in
        `Network.forward`. `make_input` (what `ImageInputs.queue` returns) makes the input on
        the GPU instead of copying x (then None) in."""
        if samplings is None:
            if sizes is None:
                raise InputError("ClassMasks needs the images' sizes (or their samplings)")
            boxes = boxes if boxes is not None else [None] * len(sizes)
            if len(boxes) != len(sizes):
                raise InputError(f"{len(sizes)} sizes and {len(boxes)} boxes")
            samplings = [self.sampling(size, box) for size, box in zip(sizes, boxes)]
        n = len(samplings)
        if make_input is None and len(x) != n:
            raise InputError(f"{len(x)} images and {n} sizes")
        if n == 0:
            return []
        meta, idx, frac, total = tables(samplings)
        largest = int((meta[:, 1] * meta[:, 2]).max())
        if out is not None and (out.dtype != np.uint8 or out.ndim != 1
                                or not out.flags.c_contiguous):
            raise InputError(f"the masks' `out` must be a contiguous 1-D uint8 array, got "
                             f"{out.dtype} of shape {out.shape}")
        host = out[:total] if out is not None and total <= len(out) else \
            np.empty(max(1, total), np.uint8)
        drv = self._drv
        with (self.net.forward(x, check_values) if make_input is None
              else self.net.forward_from(make_input)) as net:
            d_meta = self._buffers.get("meta", meta.nbytes)
            d_idx = self._buffers.get("indices", idx.nbytes)
            d_frac = self._buffers.get("weights", frac.nbytes)
            d_masks = self._buffers.get("masks", host.nbytes)
            for dst, src in ((d_meta, meta), (d_idx, idx), (d_frac, frac)):
                drv.memcpy_htod_async(dst, src, net.stream)
            self.launch(net.stream, d_meta, d_idx, d_frac, d_masks, n, largest)
            drv.memcpy_dtoh_async(host, d_masks, net.stream)
        return views(host, meta)

    def launch(self, stream, d_meta, d_idx, d_frac, d_masks, n: int, largest: int) -> None:
        """Queue the kernel on `stream`: the masks of n images from the network's scores, with
        `tables` on the device; `largest`: the most pixels of one mask."""
        if largest:
            grid = ((largest + THREADS - 1) // THREADS, n)
            self._kernel.prepared_async_call(grid, (THREADS, 1, 1), stream,
                                             int(self.net.outputs[0]), int(d_meta), int(d_idx),
                                             int(d_frac), int(d_masks))

    def close(self) -> None:
        """Unload the kernel and free the buffers, in this thread (with the GPU's context
        current: PyCUDA cannot free them from another thread); before the network's close."""
        module, self._module, self._kernel = self._module, None, None
        if module is None:
            return
        with self.net.active():
            self._buffers.free()
            del module
