"""Decoding and PNG encoding in worker processes, for `segment` on a GPU with many cores.

Threads share one interpreter lock, and Pillow runs a good deal of Python per image: on the
H200's 16 cores, 16 decode threads took 27 ms of thread time per image for 2.8 ms of work, and
starved the thread that feeds the GPU. Processes do not share the lock. The input batches live
in one file in shared memory (/dev/shm where there is one), mapped by the parent and by every
worker: a worker decodes a chunk of a batch's images into their slots and returns only each
image's size (or why it could not be read), never the pixels. The masks the GPU made go the
same way: the GPU copies a batch's masks into a slot of a second shared file, and a worker is
told where each image's mask lies in it (a batch whose masks do not fit a slot goes pickled).
Both files are page-locked for the GPU's copies (`PinnedHost`) where the driver allows it.
They are created at full size with their space reserved, in /dev/shm where it has room (a
container's is often 64 MB) and in the temp folder otherwise: a file that outgrew a full tmpfs
would kill the process (SIGBUS) at the first write past its end.

A worker process that dies (a codec's segfault, the kernel's OOM killer) breaks the whole
executor: every task in it fails with BrokenProcessPool. The pool then starts a fresh executor
(`restart`), and the pipeline reruns each image of the failed tasks in a process of its own
(`alone`), so only the image that kills one fails, with the signal that killed it. For the
tests, the environment variable SQUEEZEGEN_TEST_WORKER_DIES=decode:NAME (or encode:NAME; several
with commas), read when a pool is made, makes a worker kill itself (SIGKILL) on decoding
(writing the PNG of) the image whose file name is NAME.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import threading
import time
import warnings
from concurrent.futures import InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ..errors import InputError, SqueezegenError
from ..images import fit_box, read_decoded, read_pixels, save_classes, scaled_size
from ..images import gpu_jpeg as jpeg_bytes
from .inputs import output_path
from .slots import SLOT_PIXELS, input_view, slot_bytes

_WORKER: dict = {}                   # in each worker: the mapped batches and the settings
DIES = "SQUEEZEGEN_TEST_WORKER_DIES"   # (tests) "decode:NAME" or "encode:NAME": see above


class WorkerDied(Exception):
    """A worker process running one task alone died; str() says how ("signal 9")."""


def fill_slot(slot: np.ndarray, pixels: np.ndarray, box: tuple, mean: np.ndarray,
              std: np.ndarray) -> None:
    """Normalise decoded (h, w, C) pixels into a (C, H, W) input slot at `box`; the letterbox
    padding is 0 (the mean pixel)."""
    top, left, bh, bw = box
    if (bh, bw) != slot.shape[1:]:
        slot[...] = 0.0
    region = slot[:, top:top + bh, left:left + bw]
    np.subtract(pixels.transpose(2, 0, 1), mean, out=region)
    region /= std


def reason(exc: BaseException) -> str:
    """Why an image failed, in one line."""
    if isinstance(exc, FileNotFoundError):
        return "not found"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _init(path: str, shape: tuple, settings: tuple, masks_path: str | None = None,
          masks_shape: tuple | None = None, options: dict | None = None) -> None:
    """A worker's start: the shared files mapped, and Pillow's limit against decompression
    bombs the parent's (its warning, which does not name the file, is the parent's to give:
    `images.too_many_pixels`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # the parent decides when to stop
    options = options or {}
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = options.get("max_pixels", Image.MAX_IMAGE_PIXELS)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    _WORKER["dies"] = set((options.get("dies") or "").split(","))
    dtype = np.uint8 if len(shape) == 3 else np.float32   # byte slots (gpu_resize) or inputs
    _WORKER["batches"] = np.memmap(path, dtype, "r+", shape=shape)
    _WORKER["settings"] = settings
    if masks_path is not None:
        _WORKER["masks"] = np.memmap(masks_path, np.uint8, "r", shape=masks_shape)


def _mask(where) -> np.ndarray:
    """A mask given as an array, or as (slot, offset, height, width) in the shared masks."""
    if isinstance(where, np.ndarray):
        return where
    slot, offset, h, w = where
    return _WORKER["masks"][slot, offset:offset + h * w].reshape(h, w)


def _input_slot(batch: np.ndarray, slot: int, channels: int, hw: tuple) -> np.ndarray:
    """Slot `slot` of a batch as a float32 (C, H, W) input: the batch's own layout, or the
    first bytes of a byte slot (gpu_resize)."""
    if batch.dtype == np.float32:
        return batch[slot]
    return input_view(batch[slot], (channels,) + tuple(hw))


def decode_chunk(index: int, first: int, paths: list) -> list:
    """Decode `paths` into batch `index`, slots first, first + 1, ...; per image
    ("ok", size, box, seconds, decoded, jpeg) or ("error", why). With `gpu_resize`, an 8-bit
    image whose decoded pixels fit its slot goes there as they are, for the GPU to resize and
    normalise (`runtime.image_inputs`), and `decoded` is their (height, width); otherwise it
    is None and the slot holds the normalised input. With `gpu_jpeg` too, a JPEG that the
    GPU's decoder takes (`images.gpu_jpeg`) goes as the file's bytes, undecoded: `jpeg` is
    (their length, the draft scale) and `decoded` the size they decode to; else jpeg is None."""
    channels, hw, resize, mean, std, gpu_resize, gpu_jpeg = _WORKER["settings"]
    x = _WORKER["batches"][index]
    limit = SLOT_PIXELS * hw[0] * hw[1] if gpu_resize else 0   # decoded pixels a slot holds
    out = []
    for slot, path in enumerate(paths, start=first):
        _test_death("decode", os.path.basename(path))
        start = time.perf_counter()
        decoded = jpeg = None
        try:
            found = gpu_jpeg and jpeg_bytes(path, hw, resize, limit * channels)
            if found:
                data, size, scale = found
                x[slot, :len(data)] = np.frombuffer(data, np.uint8)
                decoded, jpeg = scaled_size(*size, scale), (len(data), scale)
            elif limit:
                pixels, size, is_decoded = read_decoded(path, channels, hw, resize, limit)
                if is_decoded:
                    decoded = pixels.shape[:2]
                    x[slot, :pixels.size] = pixels.reshape(-1)
            else:
                pixels, size = read_pixels(path, channels, hw, resize, draft=True)
            box = fit_box(size, hw, resize)
            if decoded is None:
                fill_slot(_input_slot(x, slot, channels, hw), pixels, box, mean, std)
        except Exception as exc:                        # unreadable, truncated, not an image
            _input_slot(x, slot, channels, hw)[...] = 0.0
            out.append(("error", f"cannot read the image: {reason(exc)}"))
            continue
        out.append(("ok", size, box, time.perf_counter() - start, decoded, jpeg))
    return out


def _test_death(stage: str, name: str) -> None:
    """(Tests) SQUEEZEGEN_TEST_WORKER_DIES: die as a segfaulting codec would."""
    if f"{stage}:{name}" in _WORKER.get("dies", ()):
        os.kill(os.getpid(), signal.SIGKILL)


def _alone(initargs: tuple, fn, args: tuple, conn) -> None:
    """A one-task worker (`WorkerPool.alone`): set up as the pool's workers are, run
    fn(*args), send ("ok", result), or ("init", why) when the set-up failed."""
    try:
        _init(*initargs)
    except Exception as exc:
        conn.send(("init", reason(exc)))
        return
    conn.send(("started", None))            # from here on, a death is the task's doing
    conn.send(("ok", fn(*args)))


def _kill_processes(executor: ProcessPoolExecutor, join: bool = False) -> None:
    """Kill the worker processes of a broken executor (and, with `join`, reap them)."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        try:
            process.kill()
            if join:
                process.join(timeout=5)
        except (OSError, ValueError, AttributeError):    # gone already, or closed
            pass


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def context():
    """Workers forked from a fork server that has imported this module and nothing of the
    caller's: not plain fork (this process has threads and a CUDA context), and not spawn
    (which re-runs the caller's main script in every worker, so a script without an
    `if __name__ == "__main__":` guard would start the job again in each)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def encode_chunk(out_dir: str, masks: list, level: int) -> list:
    """Write each (name, mask) as OUT_DIR/<name>.png, the mask an array or where it lies in
    the shared masks (`_mask`); per image ("ok", seconds) or ("error", why)."""
    out = []
    for name, mask in masks:
        _test_death("encode", os.path.basename(name))
        start = time.perf_counter()
        try:
            save_classes(output_path(out_dir, name), _mask(mask), compress_level=level)
        except Exception as exc:                        # disk full, permissions: this image
            out.append(("error", f"cannot write the output: {reason(exc)}"))
            continue
        out.append(("ok", time.perf_counter() - start))
    return out


def shared_folders() -> list:
    """Where the shared files may go, best first: /dev/shm (memory), then the temp folder."""
    shm = "/dev/shm"
    return ([shm] if os.path.isdir(shm) and os.access(shm, os.W_OK) else []) + [None]


def shared_files(sizes: dict):
    """A temporary folder holding a file of each {name: bytes}, every byte reserved
    (posix_fallocate; zero-filled). Tries each of `shared_folders` in turn; InputError when
    none has room."""
    why = []
    for folder in shared_folders():
        tmp = None
        try:
            tmp = tempfile.TemporaryDirectory(prefix="squeezegen-segment-", dir=folder)
            for name, nbytes in sizes.items():
                _reserve(Path(tmp.name) / name, nbytes)
            return tmp
        except OSError as exc:
            if tmp is not None:
                tmp.cleanup()
            why.append(f"{folder or tempfile.gettempdir()}: {exc.strerror or exc}")
    raise InputError(f"no room for segment's shared batches ({sum(sizes.values()):,} bytes): "
                     + "; ".join(why) + " (a smaller --batch or --workers needs less)")


def _reserve(path: Path, nbytes: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, max(1, nbytes))
        else:                                          # macOS: no reservation, just the size
            os.ftruncate(fd, max(1, nbytes))
    finally:
        os.close(fd)


class WorkerPool:
    """`count` input batches of (batch, C, H, W) float32 in shared memory (gpu_resize: of
    (batch, `slots.slot_bytes`) uint8, for decoded pixels or an input), `mask_slots`
    slots of `mask_bytes` bytes for masks, and `workers` processes that decode into the
    batches and write the PNGs of masks."""

    def __init__(self, count: int, batch: int, shape: tuple, resize: str, mean: np.ndarray,
                 std: np.ndarray, workers: int, mask_slots: int = 0, mask_bytes: int = 0,
                 gpu_resize: bool = False, gpu_jpeg: bool = False):
        # the batches: float32 inputs, or (gpu_resize) byte slots that hold decoded pixels
        self.shape = (count, batch) + (tuple(shape) if not gpu_resize else (slot_bytes(shape),))
        dtype = np.uint8 if gpu_resize else np.float32
        masks_shape = (mask_slots, mask_bytes) if mask_slots and mask_bytes else None
        files = {"batches": np.dtype(dtype).itemsize * int(np.prod(self.shape))}
        if masks_shape:
            files["masks.u8"] = mask_slots * mask_bytes
        self._dir = shared_files(files)
        # page-locking is for memory (tmpfs): the GPU writing into a disk file's pages by DMA
        # is what kernels warn about or refuse
        self.in_memory = Path(self._dir.name).parent == Path("/dev/shm")
        path = str(Path(self._dir.name) / "batches")
        self.batches = np.memmap(path, dtype, "r+", shape=self.shape)
        self.masks = None
        masks_path = None
        if masks_shape:
            masks_path = str(Path(self._dir.name) / "masks.u8")
            self.masks = np.memmap(masks_path, np.uint8, "r+", shape=masks_shape)
        settings = (shape[0], tuple(shape[1:]), resize, mean, std, gpu_resize,
                    gpu_resize and gpu_jpeg and shape[0] == 3)
        from PIL import Image
        options = {"max_pixels": Image.MAX_IMAGE_PIXELS, "dies": os.environ.get(DIES)}
        self._initargs = (path, self.shape, settings, masks_path, masks_shape, options)
        self._workers = workers
        self._lock = threading.Lock()
        self.generation = 0                 # executors made before this one (`restart`)
        self.executor = self._executor()
        self._pending: dict[int, set] = {}  # generation: its futures not done yet
        self._broken: list = []             # executors replaced, their processes killed
        self.on_restart = None              # called after each restart (the pipeline says so)

    def _executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self._workers, mp_context=context(),
                                   initializer=_init, initargs=self._initargs)

    def restart(self, generation: int) -> bool:
        """A fresh executor in place of executor `generation`, which a dead worker broke (every
        task in it failed); False when that one was already replaced. The broken executor's
        processes are killed here, and any of its futures still pending failed: Python 3.11's
        executor can start a worker, or queue a task, while it tears itself down (a submit
        racing its manager thread), and that worker would be waited for at exit forever."""
        with self._lock:
            if generation != self.generation:
                return False
            broken, self.executor = self.executor, self._executor()
            self.generation += 1
            stuck = self._pending.pop(generation, set())
            self._broken.append(broken)
        _kill_processes(broken)
        broken.shutdown(wait=False, cancel_futures=True)
        for future in stuck:
            try:
                future.set_exception(BrokenProcessPool("a worker process died"))
            except InvalidStateError:         # it finished meanwhile
                pass
        if self.on_restart is not None:
            self.on_restart()
        return True

    def _submit(self, fn, *args):
        """fn(*args) in a worker; the future knows its executor's `generation`. An executor
        that broke is replaced first. Submits hold the lock, so that `restart` finds every
        process a submit to the old executor started."""
        for _ in range(3):
            with self._lock:
                generation, executor = self.generation, self.executor
                try:
                    future = executor.submit(fn, *args)
                except BrokenProcessPool:
                    future = None
                else:
                    future.generation = generation
                    self._pending.setdefault(generation, set()).add(future)
            if future is None:
                self.restart(generation)
                continue
            future.add_done_callback(self._forget)
            return future
        raise SqueezegenError("segment's worker processes die as soon as they start")

    def _forget(self, future) -> None:
        with self._lock:
            self._pending.get(future.generation, set()).discard(future)

    def decode(self, index: int, first: int, paths: list):
        return self._submit(decode_chunk, index, first, paths)

    def encode(self, out_dir: str, masks: list, level: int):
        return self._submit(encode_chunk, out_dir, masks, level)

    def alone(self, fn, *args, stop: threading.Event | None = None):
        """fn(*args) in a worker process of its own, made for it (so that when it dies, the
        task is what killed it): its result; WorkerDied (saying which signal) when it dies;
        None when `stop` is set first (the process is killed)."""
        ctx = context()
        reader, writer = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_alone, args=(self._initargs, fn, args, writer),
                              daemon=True, name="segment-alone")
        process.start()
        writer.close()
        try:
            while not reader.poll(0.1):
                if stop is not None and stop.is_set():
                    return None
            started = False
            while True:
                try:
                    kind, value = reader.recv()
                except EOFError:          # it died: its end of the pipe closed, nothing sent
                    process.join()
                    code = process.exitcode
                    how = (f"signal {-code}" if code is not None and code < 0
                           else f"exit status {code}")
                    if not started:       # not the task's doing: no worker can run
                        raise SqueezegenError(f"segment's worker processes die as they start "
                                              f"({how}); a script calling squeezegen.segment "
                                              f"needs an `if __name__ == \"__main__\":` "
                                              f"guard") from None
                    raise WorkerDied(how) from None
                if kind == "init":
                    raise SqueezegenError(f"segment's worker processes cannot start: {value}")
                if kind == "started":
                    started = True
                    continue
                return value
        finally:
            reader.close()
            if process.is_alive():
                process.kill()
            process.join()

    def close(self) -> None:
        """Stop the workers (each after its task) and free the shared files; safe to call
        again, after a second Ctrl-C interrupted the first call."""
        for broken in self._broken:                 # killed at the restart; reaped here
            _kill_processes(broken, join=True)
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.batches = self.masks = None
        self._dir.cleanup()
