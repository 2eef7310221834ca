"""The streaming pipeline of `segment`: every stage runs at once, joined by bounded queues.

    feeder --items--> decoders --batches--> networks (a thread each) --masks--> encoders (threads)
    (skips done       (decode, resize,       (one per GPU: forward, then       (PNG, written
     outputs)          normalise into a       the masks at each image's         atomically)
                       batch slot)            original size, on the GPU)
With the NumPy reference (or --scores), the networks pass the scores on and the encoders resize
them back to the original size.

With a GPU and 4 CPUs or more, the decoders and the encoders are worker processes instead
(`worker_pool`: shared input batches; tasks of a few images): threads share one interpreter
lock, and on the H200's 16 cores, 16 decoder and 16 encoder threads starved the network's
thread (README, "Throughput on the H200"). Memory stays flat however many images there are:
each queue holds a few batches at most. A bad image costs one line and an entry in failed.txt;
a failing network stops the run; a worker process that dies costs the image that killed it
(`worker_pool`: the other images of the failed tasks are done again). Ctrl-C (or `stop()`)
stops the stages after the image each is on; a second Ctrl-C stops waiting for the networks,
but not for the outputs being written (at most WRITERS_GRACE_S); worker processes get
WORKERS_GRACE_S to finish their task, and are then terminated (a hung decoder does not hold up
the end). Every output is written atomically, so nothing half-written is left (a killed
worker's temp file is swept) and a rerun resumes where this one stopped.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import GPUError, InputError, printable
from ..images import fit_box, read_pixels, save_classes, too_many_pixels
from .worker_pool import WorkerPool, fill_slot, reason
from .inputs import Item, output_path
from .outputs import PNG_LEVEL, is_done, write_outputs
from .summary import SegmentSummary

_END = object()
# The shared slots for the masks the GPU makes (worker processes): room for a batch of images
# this size on average, at most MAX_MASK_SLOT bytes a slot; a batch of larger ones goes to the
# workers pickled instead.
MASK_PIXELS_PER_IMAGE = 1024 * 768
MAX_MASK_SLOT = 64 << 20
# How long a thread may hold the interpreter lock while another waits for it (Python's default
# is 5 ms). The network thread gives the lock up at every call into the GPU driver, and waited
# up to that long each time to get it back from busy decoder and encoder threads.
SWITCH_S = 0.0005
# After a second Ctrl-C, how long the threads that write outputs are still waited for (each
# stops after the file it is on), so that no temp file is left behind.
WRITERS_GRACE_S = 10.0
# When the run ends (stopped or not), how long the worker processes may take to finish their
# task before they are terminated, then killed: a worker hung on an image must not hold up the
# end of a run that Ctrl-C or SIGTERM stopped.
WORKERS_GRACE_S = 5.0


class _Stop(Exception):
    """The run is stopping (Ctrl-C or a fatal error): leave the stage loop."""


@dataclass(frozen=True)
class Settings:
    shape: tuple                    # the model's input (C, H, W)
    mean: np.ndarray                # (C, 1, 1)
    std: np.ndarray                 # (C, 1, 1)
    batch: int = 32
    resize: str = "stretch"
    scores: bool = False
    overwrite: bool = False
    workers: int = 4
    processes: bool = False         # decode in worker processes (many cores) rather than threads
    gpu_resize: bool = False        # (worker processes, GPU masks) resize and normalise on the GPU
    gpu_jpeg: bool = False          # (gpu_resize) JPEGs decoded by nvJPEG on the GPU
    overlap: bool = False           # (GPU masks) two batches in flight per network


@dataclass
class _Job:
    item: Item
    size: tuple                     # the image's original (height, width)
    box: tuple                      # where it went in the model's input: top, left, height, width
    decoded: tuple | None = None    # (gpu_resize) the decoded pixels' (height, width) in its slot,
                                    # or None: the slot holds the input the CPU made
    jpeg: tuple | None = None       # (gpu_jpeg) the slot holds the JPEG's bytes: (length, scale)


class _Batch:
    def __init__(self, size: int, shape: tuple, x: np.ndarray | None = None,
                 index: int | None = None):
        self.x = np.empty((size,) + tuple(shape), np.float32) if x is None else x
        self.index = index              # its buffer in the decode pool's shared memory
        self.jobs: list = [None] * size  # None: a slot whose image could not be read
        self.claimed = 0
        self.filled = 0
        self.closed = False
        self.pending = 0                # chunks still being decoded (worker processes)


class Pipeline:
    def __init__(self, items: list[Item], specs: list, out_dir, settings: Settings,
                 backend: str, progress=None, log=None):
        self.items = items
        self.specs = specs
        self.out_dir = str(out_dir)
        self.s = settings
        self.progress = progress
        self.log = log or (lambda m: None)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.summary = SegmentSummary(out_dir=self.out_dir, backend=backend,
                                      networks=[s.label for s in specs], images=len(items),
                                      per_network=[0] * len(specs),
                                      resized_on="gpu" if settings.gpu_resize else "cpu",
                                      jpegs_on="gpu" if settings.gpu_jpeg else "cpu")
        workers = max(1, settings.workers)
        self.n_decoders = self.n_encoders = workers
        self.q_items: queue.Queue = queue.Queue(maxsize=2 * workers)
        self.q_batches: queue.Queue = queue.Queue(maxsize=2 * len(specs))
        self.q_scores: queue.Queue = queue.Queue(maxsize=2 * settings.batch * len(specs))
        self._current: _Batch | None = None
        self._live_decoders = self.n_decoders
        self._live_networks = len(specs)
        self._fatal: BaseException | None = None
        # On a GPU the networks make the masks (unless the scores are wanted too)
        self.gpu_masks = backend == "cuda" and not settings.scores
        if settings.gpu_resize and not (self.gpu_masks and settings.processes):
            raise InputError("resizing on the GPU needs the cuda backend, decoding in worker "
                             "processes and no scores")
        self._first_ready: float | None = None
        self._pins: list | None = None          # the page-locked shared memory (`_pin`)
        self._pin_lock = threading.Lock()
        self.restarts = 0                       # (worker processes) executors a death broke

    # ------------------------------------------------------------------ plumbing
    def stop(self) -> None:
        self.stop_event.set()

    def _put(self, q: queue.Queue, value) -> None:
        while True:
            if self.stop_event.is_set():
                raise _Stop
            try:
                q.put(value, timeout=0.1)
                return
            except queue.Full:
                pass

    def _get(self, q: queue.Queue):
        while True:
            if self.stop_event.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                pass

    def _thread(self, target, *args) -> threading.Thread:
        def body():
            try:
                target(*args)
            except _Stop:
                pass
            except BaseException as exc:          # a bug or a failing network: stop the run
                with self.lock:
                    self._fatal = self._fatal or exc
                self.stop_event.set()
        return threading.Thread(target=body, daemon=True, name=f"segment-{target.__name__}")

    def _say(self, line: str) -> None:
        """One line on stderr, above the progress bar."""
        if self.progress is not None:
            self.progress.write(line)
        else:
            self.log(line)

    def _fail(self, item: Item, why: str) -> None:
        with self.lock:
            self.summary.failed += 1
            self.summary.failures.append((item.path, why))
        self._say(f"squeezegen: skipped {printable(item.path)}: {printable(why)}")

    def _check_size(self, item: Item, size: tuple) -> None:
        """Pillow's decompression-bomb warning, in one line naming the image."""
        warning = too_many_pixels(item.path, size)
        if warning is not None:
            self._say(f"squeezegen: warning: {printable(warning)}")

    # ------------------------------------------------------------------ stages
    def _feed(self) -> None:
        for item in self.items:
            if not self.s.overwrite and is_done(self.out_dir, item.name, self.s.scores):
                with self.lock:
                    self.summary.skipped += 1
                continue
            self._put(self.q_items, item)
        for _ in range(1 if self.s.processes else self.n_decoders):
            self._put(self.q_items, _END)

    def _decode(self) -> None:
        c, h, w = self.s.shape
        try:
            while (item := self._get(self.q_items)) is not _END:
                start = time.perf_counter()
                try:
                    pixels, size = read_pixels(item.path, c, (h, w), self.s.resize, draft=True)
                except Exception as exc:             # unreadable, truncated, not an image
                    self._fail(item, f"cannot read the image: {reason(exc)}")
                    continue
                self._check_size(item, size)
                self._add(pixels, _Job(item, size, fit_box(size, (h, w), self.s.resize)))
                with self.lock:
                    self.summary.decode_s += time.perf_counter() - start
        finally:
            with self.lock:
                self._live_decoders -= 1
                last = self._live_decoders == 0
            if last and not self.stop_event.is_set():
                self._flush()
                for _ in self.specs:
                    self._put(self.q_batches, _END)

    def _add(self, pixels: np.ndarray, job: _Job) -> None:
        """Normalise a decoded image straight into the next free slot of the batch being filled;
        a batch goes to the networks when its last slot is filled."""
        with self.lock:
            if self._current is None:
                self._current = _Batch(self.s.batch, self.s.shape)
            b, slot = self._current, self._current.claimed
            b.claimed += 1
            if b.claimed == self.s.batch:
                b.closed, self._current = True, None
        fill_slot(b.x[slot], pixels, job.box, self.s.mean, self.s.std)
        b.jobs[slot] = job
        with self.lock:
            b.filled += 1
            ready = b.closed and b.filled == b.claimed
        if ready:
            self._put(self.q_batches, b)

    def _flush(self) -> None:
        with self.lock:
            b, self._current = self._current, None
        if b is not None and b.claimed:
            b.closed = True
            self._put(self.q_batches, b)

    def _dispatch(self) -> None:
        """(Worker processes.) Fill a free shared batch with the next items, in chunks of a
        few images a worker each; `_collect` hands the batch on when every chunk is back."""
        more = True
        while more:
            index = self._get(self.q_free)
            items = []
            while len(items) < self.s.batch:
                item = self._get(self.q_items)
                if item is _END:
                    more = False
                    break
                items.append(item)
            if not items:
                self.q_free.put(index)
                break
            b = _Batch(self.s.batch, self.s.shape, self._pool.batches[index], index)
            b.claimed = len(items)
            chunks = [(first, items[first:first + self._chunk])
                      for first in range(0, len(items), self._chunk)]
            b.pending = len(chunks)
            for first, chunk in chunks:
                future = self._pool.decode(index, first, [i.path for i in chunk])
                future.add_done_callback(lambda f, b=b, first=first, chunk=chunk:
                                         self.q_decoded.put((b, first, chunk, f)))
            with self.lock:
                self._dispatched += 1
        self.q_decoded.put(_END)

    def _collect(self) -> None:
        """(Worker processes.) Each decoded chunk's sizes into its batch; a batch whose chunks
        are all back goes to the networks."""
        delivered, ended = 0, False
        while not ended or delivered < self._dispatched:
            task = self._get(self.q_decoded)
            if task is _END:
                ended = True
                continue
            b, first, chunk, future = task
            results = self._results(future)
            for slot, (item, result) in enumerate(zip(chunk, results, strict=True),
                                                  start=first):
                if result[0] == "error":
                    self._fail(item, result[1])
                    continue
                _, size, box, seconds, decoded, jpeg = result
                self._check_size(item, size)
                b.jobs[slot] = _Job(item, tuple(size), tuple(box), decoded, jpeg)
                with self.lock:
                    self.summary.decode_s += seconds
            b.pending -= 1
            if b.pending == 0:
                delivered += 1
                self._put(self.q_batches, b)
        for _ in self.specs:
            self._put(self.q_batches, _END)

    def _network(self, index: int) -> None:
        backend = self.specs[index].make()
        try:
            self._pin(backend)
            with self.lock:
                if self._first_ready is None:
                    self._first_ready = time.perf_counter()
            masks = self.gpu_masks
            overlap = masks and self.s.overlap and hasattr(backend, "submit")
            if overlap:
                self.summary.overlapped = True
            pending = None          # (overlap) the batch in flight, collected after the next
            while (b := self._get(self.q_batches)) is not _END:
                n = b.claimed
                jobs = b.jobs[:n]
                slot = None
                if masks:
                    sizes = [j.size if j else (1, 1) for j in jobs]   # (1, 1): unreadable
                    slot = self._mask_slot(sum(h * w for h, w in sizes))
                start = time.perf_counter()
                if masks:                                    # the classes, made on the GPU
                    whole = (0, 0) + tuple(self.s.shape[1:])     # for unreadable slots
                    boxes = [j.box if j else whole for j in jobs]
                    decoded = None
                    if self.s.gpu_resize:                    # slot i: decoded pixels or None
                        decoded = [None if not (j and j.decoded) else
                                   j.decoded + (j.box,) + ((j.jpeg,) if j.jpeg else ())
                                   for j in jobs]
                    args = (b.x[:n], sizes, boxes)
                    options = dict(out=None if slot is None else self._pool.masks[slot],
                                   decoded=decoded, normalisation=(self.s.mean, self.s.std))
                    if overlap:              # queue this batch, then collect the one before
                        ticket = backend.submit(*args, **options)
                        took = time.perf_counter() - start
                        self._unreadable_on_gpu(backend, jobs)
                        if pending is not None:
                            self._collect_batch(index, backend, *pending)
                        pending = (b, jobs, slot, ticket, took)
                        continue
                    y = backend.classes(*args, **options)
                    self._unreadable_on_gpu(backend, jobs)
                else:
                    y = backend(b.x[:n])
                    y = y[0] if isinstance(y, tuple) else y
                self._batch_done(index, b, jobs, slot, y, time.perf_counter() - start)
            if pending is not None:
                self._collect_batch(index, backend, *pending)
        finally:
            backend.close()
            with self.lock:
                self._live_networks -= 1
                last = self._live_networks == 0
            if last and not self.stop_event.is_set():
                for _ in range(self.n_encoders):
                    self._put(self.q_scores, _END)
                if self.s.processes and self.gpu_masks:
                    self.q_encoded.put(_END)

    def _unreadable_on_gpu(self, backend, jobs: list) -> None:
        """(JPEGs decoded on the GPU) Fail the images of the batch just queued that the GPU
        could not decode (nor Pillow after it): their masks are not written."""
        if not self.s.gpu_jpeg:
            return
        for slot, why in backend.failures():
            if jobs[slot] is not None:
                self._fail(jobs[slot].item, f"cannot read the image: {why}")
                jobs[slot] = None

    def _collect_batch(self, index: int, backend, b: _Batch, jobs: list, slot, ticket,
                       took: float) -> None:
        start = time.perf_counter()
        y = backend.collect(ticket)
        self._batch_done(index, b, jobs, slot, y, took + time.perf_counter() - start)

    def _batch_done(self, index: int, b: _Batch, jobs: list, slot, y: list,
                    took: float) -> None:
        """A batch's results (masks, or scores) are on the host: free its input, count it,
        and send the results to the encoders."""
        masks = self.gpu_masks
        if slot is not None and not np.may_share_memory(y[0], self._pool.masks[slot]):
            self.q_mask_free.put(slot)             # a backend that ignored `out`: pickled
            slot = None
        b.x = None                                       # the input is no longer needed
        if b.index is not None:
            self.q_free.put(b.index)
        with self.lock:
            self.summary.network_s += took
            self.summary.per_network[index] += sum(j is not None for j in jobs)
        if self.s.processes and masks:
            self._encode_in_workers(jobs, y, slot)
        else:
            for job, out in zip(jobs, y, strict=True):
                if job is not None:
                    self._put(self.q_scores, (job, out, masks))

    def _pin(self, backend) -> None:
        """(Worker processes, on a GPU.) Page-lock the shared batches and mask slots (when they
        are in memory, not a disk file), once for every GPU, so that the copies to and from
        them run at full speed; where the driver refuses, say so and go on with pageable
        copies."""
        if not self.s.processes or not hasattr(backend, "pin") or not self._pool.in_memory:
            return
        with self._pin_lock:
            if self._pins is not None:
                return
            self._pins = []
            try:
                for array in (self._pool.batches, self._pool.masks):
                    if array is not None:
                        self._pins.append(backend.pin(array))
            except GPUError as exc:
                self.log(f"squeezegen: {exc}; the copies to and from the GPU will be slower")

    def _unpin(self) -> None:
        with self._pin_lock:
            for pin in self._pins or []:
                try:
                    pin.close()
                except GPUError as exc:      # the memory is unmapped with the pool all the same
                    self.log(f"squeezegen: {exc}")
            self._pins = []                  # (not None: a late network does not pin again)

    def _mask_slot(self, total: int) -> int | None:
        """(Worker processes.) A free shared slot for `total` bytes of masks (waiting for one),
        or None: the masks go pickled (threads, or a batch too large for a slot)."""
        if not self.s.processes or self._pool.masks is None or total > self._pool.masks.shape[1]:
            return None
        return self._get(self.q_mask_free)

    def _release_slot(self, slot: int | None) -> None:
        """One encode task that read masks from `slot` is done; the last one frees it."""
        if slot is None:
            return
        with self.lock:
            self._slot_chunks[slot] -= 1
            free = self._slot_chunks[slot] == 0
        if free:
            self.q_mask_free.put(slot)

    def _encode_in_workers(self, jobs: list, masks: list, slot: int | None) -> None:
        """(Worker processes.) The masks' PNGs written by the workers, a few images a task; at
        most 2 tasks a worker in flight (memory stays flat if the disk is slow). Masks in a
        shared slot go as where they lie in it; the slot is free again when its tasks are done."""
        done, offset = [], 0
        for job, mask in zip(jobs, masks, strict=True):
            h, w = mask.shape
            if job is not None:
                done.append((job, mask if slot is None else (slot, offset, h, w)))
            offset += h * w
        chunks = [done[first:first + self._chunk] for first in range(0, len(done), self._chunk)]
        if slot is not None:
            with self.lock:
                self._slot_chunks[slot] = len(chunks) + 1      # + 1: until all are submitted
        try:
            for chunk in chunks:
                while not self._encode_slots.acquire(timeout=0.1):
                    if self.stop_event.is_set():
                        raise _Stop
                future = self._pool.encode(self.out_dir, [(j.item.name, m) for j, m in chunk],
                                           PNG_LEVEL)
                with self.lock:
                    self._encodes += 1
                future.add_done_callback(lambda f, chunk=chunk:
                                         self.q_encoded.put((chunk, f, slot)))
        finally:
            self._release_slot(slot)

    def _finish(self) -> None:
        """(Worker processes.) Count what the workers wrote, and what they could not."""
        finished, ended = 0, False
        while True:
            with self.lock:
                if ended and finished == self._encodes:
                    return
            task = self._get(self.q_encoded)
            if task is _END:
                ended = True
                continue
            chunk, future, slot = task
            try:
                results = self._results(future)
            finally:
                self._encode_slots.release()
                self._release_slot(slot)
            finished += 1
            for (job, _), result in zip(chunk, results, strict=True):
                if result[0] == "error":
                    self._fail(job.item, result[1])
                    continue
                with self.lock:
                    self.summary.written += 1
                    self.summary.encode_s += result[1]

    def _restarted(self) -> None:
        """(WorkerPool.on_restart) A dead worker broke the pool, which was restarted."""
        with self.lock:
            self.restarts += 1
        self._say("squeezegen: a worker process died: the workers were restarted, and the "
                  "images they held are done again (each one a worker was on, in a process of "
                  "its own)")

    def _results(self, future) -> list:
        """A worker task's results, one an image (`WorkerPool.run`: an image that kills a
        worker process is an error in them)."""
        try:
            return future.result()
        except Exception:
            if self.stop_event.is_set():         # (worker_pool.Stopped, or a pool closing)
                raise _Stop from None
            raise

    def _encode(self) -> None:
        while (task := self._get(self.q_scores)) is not _END:
            job, out, is_mask = task
            start = time.perf_counter()
            try:
                if is_mask:
                    save_classes(output_path(self.out_dir, job.item.name), out,
                                 compress_level=PNG_LEVEL)
                else:
                    self.write(job, out)
            except Exception as exc:                 # disk full, permissions: this image only
                self._fail(job.item, f"cannot write the output: {reason(exc)}")
                continue
            with self.lock:
                self.summary.written += 1
                self.summary.encode_s += time.perf_counter() - start

    def write(self, job: _Job, scores: np.ndarray) -> None:
        write_outputs(self.out_dir, job.item.name, scores, job.size, job.box, self.s.shape[1:],
                      self.s.scores)

    # ------------------------------------------------------------------ the run
    def run(self) -> SegmentSummary:
        if self.s.processes:
            return self._run_with_processes()
        return self._run([self._thread(self._decode) for _ in range(self.n_decoders)])

    def _run_with_processes(self) -> SegmentSummary:
        """Decoding in worker processes, into shared batches: enough batches for every worker
        to have a chunk, plus those the networks hold (two each: one in flight while the next
        is queued) and queue."""
        self._chunk = max(1, min(8, -(-self.s.batch // 2)))
        in_flight = -(-self.n_decoders * self._chunk // self.s.batch)
        count = in_flight + 1 + 4 * len(self.specs)      # a network holds two (overlap)
        mask_slots = in_flight + 1 + 2 * len(self.specs) if self.gpu_masks else 0
        encoding = 2 * self.n_decoders                   # encode tasks in flight at most
        self._pool = WorkerPool(count, self.s.batch, self.s.shape, self.s.resize, self.s.mean,
                                self.s.std, self.n_decoders, mask_slots,
                                min(MAX_MASK_SLOT, self.s.batch * MASK_PIXELS_PER_IMAGE),
                                self.s.gpu_resize, self.s.gpu_jpeg,
                                images=count * self.s.batch + encoding * self._chunk)
        self._pool.stop_event = self.stop_event
        self._pool.on_restart = self._restarted
        self.q_free = queue.Queue()
        for i in range(count):
            self.q_free.put(i)
        self.q_mask_free = queue.Queue()
        for i in range(mask_slots):
            self.q_mask_free.put(i)
        self._slot_chunks = [0] * mask_slots
        self.q_decoded = queue.Queue()
        self.q_encoded = queue.Queue()
        self._encode_slots = threading.Semaphore(encoding)
        self._dispatched = self._encodes = 0
        stages = [self._thread(self._dispatch), self._thread(self._collect)]
        if self.gpu_masks:                               # masks: PNGs in the workers too
            self.n_encoders = 0
            stages.append(self._thread(self._finish))
        try:
            return self._run(stages)
        finally:
            try:
                self._unpin()
            finally:
                self._close_pool()

    def _close_pool(self) -> None:
        """The workers stopped, each after its task (or after WORKERS_GRACE_S, terminated), and
        the shared memory freed. A Ctrl-C or SIGTERM meanwhile makes the run an interrupted
        one, if it was not complete, and does not cut the grace short."""
        late = False
        while True:
            try:
                late = self._pool.close(WORKERS_GRACE_S) or late
                break
            except KeyboardInterrupt:             # outside close's waits: close again
                late = True
        if late:
            s = self.summary
            s.interrupted = s.written + s.failed + s.skipped < s.images

    def _run(self, stages: list) -> SegmentSummary:
        threads = ([self._thread(self._feed)] + stages
                   + [self._thread(self._network, i) for i in range(len(self.specs))]
                   + [self._thread(self._encode) for _ in range(self.n_encoders)])
        start = time.perf_counter()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_S)
        try:
            with warnings.catch_warnings():          # `_check_size` says it, naming the file
                from PIL import Image
                warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
                for t in threads:
                    t.start()
                self._wait(threads)
        finally:
            sys.setswitchinterval(switch)
        end = time.perf_counter()
        s = self.summary
        s.wall_s = end - (self._first_ready or start)
        if s.interrupted and s.written + s.failed + s.skipped == s.images:
            s.interrupted = False                    # a Ctrl-C after the last image: done
        if self.progress is not None:
            self.progress.close(s.written, s.failed, s.skipped)
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    def _wait(self, threads: list) -> None:
        try:
            while any(t.is_alive() for t in threads) and not self.stop_event.is_set():
                time.sleep(0.1)
                self._show()
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self.stop_event.set()
        try:
            for t in threads:
                t.join()
        except KeyboardInterrupt:            # a second Ctrl-C: stop waiting (daemon threads),
            self.summary.interrupted = True  # but for those writing outputs (no temp file left)
            self.stop_event.set()
            self._say("squeezegen: stopping: waiting for the outputs being written")
            writers = [t for t in threads if t.name == "segment-_encode"]
            deadline = time.monotonic() + WRITERS_GRACE_S
            while any(t.is_alive() for t in writers) and time.monotonic() < deadline:
                try:
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    pass

    def _show(self) -> None:
        if self.progress is not None:
            s = self.summary
            self.progress.update(s.written, s.failed, s.skipped)
