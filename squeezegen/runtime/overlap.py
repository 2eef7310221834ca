"""segment's work on one network with two batches in flight, so that the copies overlap the
kernels: batch k+1's input goes to the GPU on a copy stream while batch k runs, and batch k's
masks come back on another while batch k+1 runs. Called one batch at a time, the network waits
for every copy (`ClassMasks`): for squeezeseg at batch 32 on an H100, 4.8 ms of copies, input
and masks around 3.7 ms of kernels.

    overlap = OverlappedMasks(net, ClassMasks(net), ImageInputs(net, mean, std))
    ticket = overlap.submit(samplings, out, slots=slots, images=images)   # or x=x
    ...                                           # submit the next batch, then
    masks = overlap.result(ticket)                # batch k's masks, in `out` where it has room

Each of the two in-flight batches has its own device buffers (a set, by the batch's parity):
    copy-in stream:  [wait until the set's last batch is out] input and tables -> set  (event in)
    network stream:  wait `in`; make the input; the graph; the masks kernel -> set     (event done)
    copy-out stream: wait `done`; the masks -> host                                    (event out)
The network's own input and output buffers are used in stream order, one batch after another.
The caller keeps a batch's host memory (its input, `out`) untouched until `result` returns.
Copies overlap kernels only to and from page-locked memory (a copy out to pageable memory
returns when it is done): give page-locked input and `out` (`device.PinnedHost`); where `out`
is missing or too small, the masks land in a page-locked staging buffer of the set first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .buffers import GrowingBuffers
from .masks import tables as mask_tables, views


_BLOCKING_SYNC = 0x1          # CU_EVENT_BLOCKING_SYNC
_DISABLE_TIMING = 0x2         # CU_EVENT_DISABLE_TIMING


@dataclass
class Ticket:
    set: int                    # which set of buffers and events (the batch's parity)
    host: np.ndarray            # where the masks land
    meta: np.ndarray            # the mask tables' per-image rows (for the views)
    staged: bool                # host is the set's staging buffer: copied out by `result`
    keep: tuple                 # the caller's input, alive while the copy in may read it


class _Staging:
    """A page-locked host buffer, grown as needed (mmap'd pages, `PinnedHost`)."""

    def __init__(self, device: int):
        self.device, self.array, self._pin = device, None, None

    def get(self, nbytes: int) -> np.ndarray:
        if self.array is None or len(self.array) < nbytes:
            from .device import PinnedHost, page_aligned
            size = max(nbytes, 2 * len(self.array) if self.array is not None else 0, 1 << 16)
            self.close()
            array = page_aligned((size,), np.uint8)
            self._pin = PinnedHost(array, self.device)
            self.array = array
        return self.array[:nbytes]

    def close(self) -> None:
        pin, self._pin, self.array = self._pin, None, None
        if pin is not None:
            pin.close()


class OverlappedMasks:
    """Masks of batches submitted one after the other, two in flight (see the module). One
    thread uses it (segment's network thread); `close` before the network's close."""

    def __init__(self, net, masks, inputs=None):
        self.net, self.masks, self.inputs = net, masks, inputs
        with net.active() as drv:
            self._drv = drv
            self._copy_in, self._copy_out = drv.Stream(), drv.Stream()
            self._in = [drv.Event(_DISABLE_TIMING) for _ in (0, 1)]
            self._done = [drv.Event(_DISABLE_TIMING) for _ in (0, 1)]
            # result() sleeps on these rather than spin a core the decoders need
            self._out = [drv.Event(_DISABLE_TIMING | _BLOCKING_SYNC) for _ in (0, 1)]
        self._sets = [GrowingBuffers(net, f"the overlapped batches' (set {i})") for i in (0, 1)]
        self._staging = [_Staging(net.device), _Staging(net.device)]
        self._pending = [False, False]
        self._count = 0

    def submit(self, samplings: list, out: np.ndarray | None = None, x: np.ndarray | None = None,
               slots: np.ndarray | None = None, images: list | None = None) -> Ticket:
        """Queue one batch: its input `x` (float32, n x the input shape) or, with `inputs`,
        its `slots` and `images` (as `ImageInputs.queue`); each image's mask sampling
        (`ClassMasks.sampling`); `out` as in `ClassMasks`. At most two batches are
        outstanding: collect the one before last with `result` first."""
        n = len(samplings)
        q = self._count % 2
        if self._pending[q]:
            raise InputError("two batches are in flight already: take the older one's result "
                             "before submitting another")
        if (x is None) == (slots is None) or (slots is not None and
                                              (self.inputs is None or images is None)):
            raise InputError("give x, or slots and images (with the image inputs)")
        if out is not None and (out.dtype != np.uint8 or out.ndim != 1
                                or not out.flags.c_contiguous):
            raise InputError(f"the masks' `out` must be a contiguous 1-D uint8 array, got "
                             f"{out.dtype} of shape {out.shape}")
        if x is not None and (x.dtype != np.float32 or x.shape[1:] != self.net.input_shape
                              or not x.flags.c_contiguous or not 1 <= len(x) <= self.net.batch):
            raise InputError(f"x must be contiguous float32 of shape (1 to {self.net.batch}, "
                             f"*{self.net.input_shape}), got {x.dtype} {x.shape}")
        if n != (len(x) if x is not None else len(images)):
            raise InputError(f"{n} samplings for a batch of "
                             f"{len(x) if x is not None else len(images)} images")
        prepared = self.inputs.prepare(slots, images) if slots is not None else None
        meta, idx, frac, total = mask_tables(samplings)
        largest = int((meta[:, 1] * meta[:, 2]).max())
        staged = out is None or total > len(out)
        drv, net, buffers = self._drv, self.net, self._sets[q]
        with net._host_lock, net.active():
            try:
                self._out[q].synchronize()    # the set's last batch is out: its buffers are free
                host = self._staging[q].get(max(1, total)) if staged else out[:total]
                if prepared is not None:
                    d_inputs = self.inputs.copy_in(drv, self._copy_in, buffers, slots, prepared)
                else:
                    d_x = buffers.get("x", x.nbytes)
                    drv.memcpy_htod_async(d_x, x, self._copy_in)
                d_tables = [buffers.get(what, a.nbytes) for what, a in
                            (("mask meta", meta), ("mask indices", idx), ("mask weights", frac))]
                for dst, src in zip(d_tables, (meta, idx, frac)):
                    drv.memcpy_htod_async(dst, src, self._copy_in)
                d_masks = buffers.get("masks", host.nbytes)
                self._in[q].record(self._copy_in)
                stream = net.stream
                stream.wait_for_event(self._in[q])
                if prepared is not None:
                    self.inputs.launch(stream, d_inputs, len(images), net._input)
                else:
                    drv.memcpy_dtod_async(net._input, d_x, x.nbytes, stream)
                net.forward_async()
                self.masks.launch(stream, *d_tables, d_masks, n, largest)
                self._done[q].record(stream)
                self._copy_out.wait_for_event(self._done[q])
                drv.memcpy_dtoh_async(host, d_masks, self._copy_out)
                self._out[q].record(self._copy_out)
            except drv.Error as exc:
                self._synchronize()
                raise net.failure(exc) from None
            except BaseException:
                self._synchronize()
                raise
        self._pending[q] = True
        self._count += 1
        return Ticket(q, host, meta, staged, (x, slots))

    def result(self, ticket: Ticket) -> list:
        """The masks of a submitted batch (waiting for them), each image's (height, width)."""
        with self.net.active():
            try:
                self._out[ticket.set].synchronize()
            except self._drv.Error as exc:
                raise self.net.failure(exc) from None
            finally:
                self._pending[ticket.set] = False
        host = ticket.host.copy() if ticket.staged else ticket.host
        return views(host, ticket.meta)

    def _synchronize(self) -> None:
        """After a failure: wait for whatever was queued (it may still use the caller's host
        memory)."""
        for stream in (self._copy_in, self.net.stream, self._copy_out):
            try:
                stream.synchronize()
            except self._drv.Error:
                pass

    def close(self) -> None:
        """Wait for the queued work, free the buffers and unlock the staging memory, and
        release the streams and events, in this thread (PyCUDA cannot clean them up from
        another); before the network's close."""
        if self._copy_in is None:
            return
        with self.net.active():
            self._synchronize()
            for buffers in self._sets:
                buffers.free()
            for staging in self._staging:
                staging.close()
            self._copy_in = self._copy_out = None
            self._in = self._done = self._out = None
        self._pending = [False, False]
