"""The streaming pipeline of `segment`: every stage runs at once, joined by bounded queues.

    feeder --items--> decoders (threads) --batches--> networks (a thread each) --masks--> encoders
    (skips done       (decode, resize, normalise       (one per GPU: forward,   (PNG)
     outputs)          straight into a batch slot)      masks at the original
                                                        size on the GPU)
With the NumPy reference (or --scores), the networks pass the scores on and the encoders resize
them back to the original size.

Memory stays flat however many images there are: each queue holds a few batches at most.
Decoding, resizing and PNG encoding happen in Pillow and NumPy, which release the GIL for their
large steps; the Python around them does not, and on the H200's 16 cores with noisy outputs the
threads spent most of their time waiting for it (README, "Throughput on the H200"). Worker
processes measured 2x slower on a 2-core machine with smooth outputs (the scores are pickled);
which wins on many cores is still to be measured. A bad image costs one line and an entry in failed.txt; a failing network
stops the run. Ctrl-C (or `stop()`) stops the threads after the image each is on; every output is
written atomically, so nothing half-written is left and a rerun resumes where this one stopped.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..images import fit_box, read_pixels, save_classes
from .inputs import Item, output_path
from .outputs import PNG_LEVEL, is_done, write_outputs
from .summary import SegmentSummary

_END = object()


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


@dataclass
class _Job:
    item: Item
    size: tuple                     # the image's original (height, width)
    box: tuple                      # where it went in the model's input: top, left, height, width


class _Batch:
    def __init__(self, size: int, shape: tuple):
        self.x = np.empty((size,) + tuple(shape), np.float32)
        self.jobs: list = [None] * size
        self.claimed = 0
        self.filled = 0
        self.closed = False


def reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not found"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


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
                                      per_network=[0] * len(specs))
        workers = max(1, settings.workers)
        self.n_decoders = self.n_encoders = workers
        self.q_items: queue.Queue = queue.Queue(maxsize=2 * workers)
        self.q_batches: queue.Queue = queue.Queue(maxsize=2 * len(specs))
        self.q_scores: queue.Queue = queue.Queue(maxsize=2 * settings.batch * len(specs))
        self._current: _Batch | None = None
        self._live_decoders = self.n_decoders
        self._live_networks = len(specs)
        self._fatal: BaseException | None = None
        self._first_ready: float | None = None

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

    def _fail(self, item: Item, why: str) -> None:
        with self.lock:
            self.summary.failed += 1
            self.summary.failures.append((item.path, why))
        if self.progress is not None:
            self.progress.write(f"squeezegen: skipped {item.path}: {why}")
        else:
            self.log(f"squeezegen: skipped {item.path}: {why}")

    # ------------------------------------------------------------------ stages
    def _feed(self) -> None:
        for item in self.items:
            if not self.s.overwrite and is_done(self.out_dir, item.name, self.s.scores):
                with self.lock:
                    self.summary.skipped += 1
                continue
            self._put(self.q_items, item)
        for _ in range(self.n_decoders):
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
        top, left, bh, bw = job.box
        x = b.x[slot]
        if (bh, bw) != x.shape[1:]:
            x[...] = 0.0                                 # letterbox padding: the mean pixel
        region = x[:, top:top + bh, left:left + bw]
        np.subtract(pixels.transpose(2, 0, 1), self.s.mean, out=region)
        region /= self.s.std
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

    def _network(self, index: int) -> None:
        backend = self.specs[index].make()
        try:
            with self.lock:
                if self._first_ready is None:
                    self._first_ready = time.perf_counter()
            masks = hasattr(backend, "classes") and not self.s.scores
            while (b := self._get(self.q_batches)) is not _END:
                n = b.claimed
                jobs = b.jobs[:n]
                start = time.perf_counter()
                if masks:                                    # the classes, made on the GPU
                    y = backend.classes(b.x[:n], [j.size for j in jobs], [j.box for j in jobs])
                else:
                    y = backend(b.x[:n])
                    y = y[0] if isinstance(y, tuple) else y
                took = time.perf_counter() - start
                b.x = None                                   # the input is no longer needed
                with self.lock:
                    self.summary.network_s += took
                    self.summary.per_network[index] += n
                for job, out in zip(jobs, y, strict=True):
                    self._put(self.q_scores, (job, out, masks))
        finally:
            backend.close()
            with self.lock:
                self._live_networks -= 1
                last = self._live_networks == 0
            if last and not self.stop_event.is_set():
                for _ in range(self.n_encoders):
                    self._put(self.q_scores, _END)

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
        threads = ([self._thread(self._feed)]
                   + [self._thread(self._decode) for _ in range(self.n_decoders)]
                   + [self._thread(self._network, i) for i in range(len(self.specs))]
                   + [self._thread(self._encode) for _ in range(self.n_encoders)])
        start = time.perf_counter()
        for t in threads:
            t.start()
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
        except KeyboardInterrupt:            # a second Ctrl-C: stop waiting (daemon threads)
            self.summary.interrupted = True
        end = time.perf_counter()
        self.summary.wall_s = end - (self._first_ready or start)
        if self.progress is not None:
            s = self.summary
            self.progress.close(s.written, s.failed, s.skipped)
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    def _show(self) -> None:
        if self.progress is not None:
            s = self.summary
            self.progress.update(s.written, s.failed, s.skipped)
