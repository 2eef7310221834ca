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
(`restart`) and retries the failed tasks' images itself (`run`), so that only the image that
kills a worker fails: each image a task holds has a ticket, a byte of a shared board that the
worker sets while it works on that image. The images a worker was on when the executor broke
(at most one a worker) are each retried in a process of its own (`alone`), which fails the
killer with the signal that killed it; the others go back to the restarted executor all at
once, as one-image tasks. (When no worker was on an image, as when the OOM killer strikes
between two, every image of the failed tasks goes alone.) For the tests, the environment
variable SQUEEZEGEN_TEST_WORKER_DIES=decode:NAME (or encode:NAME; several with commas), read
when a pool is made, makes a worker kill itself (SIGKILL) on decoding (writing the PNG of) the
image whose file name is NAME; SQUEEZEGEN_TEST_WORKER_HANGS, the same way, makes it hang there
(ignoring SIGTERM, so that only SIGKILL ends it).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import warnings
from collections import deque
from concurrent.futures import (CancelledError, Future, InvalidStateError, ProcessPoolExecutor,
                                ThreadPoolExecutor)
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
HANGS = "SQUEEZEGEN_TEST_WORKER_HANGS"  # (tests) the same, to hang there


class WorkerDied(Exception):
    """A worker process running one task alone died; str() says how ("signal 9")."""


class Stopped(Exception):
    """The pool was told to stop (`WorkerPool.stop_event`) before a task's images were done."""


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
    _WORKER["hangs"] = set((options.get("hangs") or "").split(","))
    if options.get("board"):
        board, size = options["board"]
        _WORKER["board"] = np.memmap(board, np.uint8, "r+", shape=(size,))
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


def decode_chunk(index: int, first: int, paths: list, tickets: list | None = None) -> list:
    """Decode `paths` into batch `index`, slots first, first + 1, ...; per image
    ("ok", size, box, seconds, decoded, jpeg) or ("error", why). With `gpu_resize`, an 8-bit
    image whose decoded pixels fit its slot goes there as they are, for the GPU to resize and
    normalise (`runtime.image_inputs`), and `decoded` is their (height, width); otherwise it
    is None and the slot holds the normalised input. With `gpu_jpeg` too, a JPEG that the
    GPU's decoder takes (`images.gpu_jpeg`) goes as the file's bytes, undecoded: `jpeg` is
    (their length, the draft scale) and `decoded` the size they decode to; else jpeg is None.
    `tickets`: each image's byte of the board, set while the image is decoded
    (`WorkerPool.run`)."""
    hw, gpu_resize = _WORKER["settings"][1], _WORKER["settings"][5]
    x = _WORKER["batches"][index]
    limit = SLOT_PIXELS * hw[0] * hw[1] if gpu_resize else 0   # decoded pixels a slot holds
    out = []
    for slot, path, ticket in zip(range(first, first + len(paths)), paths,
                                  tickets or [None] * len(paths)):
        with _working_on(ticket):
            out.append(_decode_one(x, slot, path, limit))
    return out


def _decode_one(x: np.ndarray, slot: int, path: str, limit: int) -> tuple:
    """`decode_chunk` for one image: into slot `slot` of batch `x`."""
    channels, hw, resize, mean, std, _, gpu_jpeg = _WORKER["settings"]
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
        return ("error", f"cannot read the image: {reason(exc)}")
    return ("ok", size, box, time.perf_counter() - start, decoded, jpeg)


@contextlib.contextmanager
def _working_on(ticket: int | None):
    """The image of `ticket` is in this worker's hands: its byte of the shared board is 1 until
    it is done, and stays 1 if the worker dies on it (`WorkerPool.restart` reads it)."""
    board = _WORKER.get("board") if ticket is not None else None
    if board is not None:
        board[ticket] = 1
    yield
    if board is not None:
        board[ticket] = 0


def _test_death(stage: str, name: str) -> None:
    """(Tests) SQUEEZEGEN_TEST_WORKER_DIES: die as a segfaulting codec would;
    SQUEEZEGEN_TEST_WORKER_HANGS: hang, deaf to SIGTERM."""
    if f"{stage}:{name}" in _WORKER.get("dies", ()):
        os.kill(os.getpid(), signal.SIGKILL)
    if f"{stage}:{name}" in _WORKER.get("hangs", ()):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)


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


def encode_chunk(out_dir: str, masks: list, level: int, tickets: list | None = None) -> list:
    """Write each (name, mask) as OUT_DIR/<name>.png, the mask an array or where it lies in
    the shared masks (`_mask`); per image ("ok", seconds) or ("error", why). `tickets`: as
    for `decode_chunk`."""
    out = []
    for (name, mask), ticket in zip(masks, tickets or [None] * len(masks)):
        with _working_on(ticket):
            out.append(_encode_one(out_dir, name, mask, level))
    return out


def _encode_one(out_dir: str, name: str, mask, level: int) -> tuple:
    _test_death("encode", os.path.basename(name))
    start = time.perf_counter()
    try:
        save_classes(output_path(out_dir, name), _mask(mask), compress_level=level)
    except Exception as exc:                            # disk full, permissions: this image
        return ("error", f"cannot write the output: {reason(exc)}")
    return ("ok", time.perf_counter() - start)


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


class _Tickets:
    """The bytes of the shared board (`_working_on`), one for each image in a task: taken when
    the task is submitted, given back (zeroed) when its results are in or its images retried."""

    def __init__(self, board: np.ndarray):
        self.board = board
        self.free = deque(range(len(board)))
        self.lock = threading.Lock()

    def take(self, n: int) -> list:
        with self.lock:
            if n > len(self.free):
                raise SqueezegenError(f"segment's worker pool has more images in its tasks than "
                                      f"its board holds ({len(self.board):,}): a bug, please "
                                      f"report it")
            return [self.free.popleft() for _ in range(n)]

    def give(self, tickets: list) -> None:
        with self.lock:
            self.board[tickets] = 0
            self.free.extend(tickets)


def _gather(parts: list, outer: Future) -> None:
    """`outer` gets the result lists of the futures `parts` joined in order once all are done,
    or the first one's exception (Stopped for one cancelled)."""
    left = [len(parts)]
    lock = threading.Lock()

    def done(_):
        with lock:
            left[0] -= 1
            if left[0]:
                return
        try:
            outer.set_result([r for part in parts for r in part.result()])
        except CancelledError:
            outer.set_exception(Stopped())
        except Exception as exc:
            outer.set_exception(exc)

    for part in parts:
        part.add_done_callback(done)


def _end_processes(processes: list, deadline: float) -> bool:
    """Wait until `deadline` (time.monotonic()) for `processes` to end; then terminate those
    still running, and kill them a second later. True when a KeyboardInterrupt (a second Ctrl-C,
    SIGTERM) came meanwhile: it does not cut the wait short."""
    interrupted = False
    for stop in (None, "terminate", "kill"):
        for process in processes:
            if stop is not None and process.is_alive():
                getattr(process, stop)()
            while True:
                try:
                    process.join(max(0.0, deadline - time.monotonic()))
                    break
                except KeyboardInterrupt:
                    interrupted = True
        if not any(p.is_alive() for p in processes):
            break
        deadline = time.monotonic() + 1.0
    return interrupted


class WorkerPool:
    """`count` input batches of (batch, C, H, W) float32 in shared memory (gpu_resize: of
    (batch, `slots.slot_bytes`) uint8, for decoded pixels or an input), `mask_slots`
    slots of `mask_bytes` bytes for masks, and `workers` processes that decode into the
    batches and write the PNGs of masks. `images`: the most images its tasks hold at once."""

    def __init__(self, count: int, batch: int, shape: tuple, resize: str, mean: np.ndarray,
                 std: np.ndarray, workers: int, mask_slots: int = 0, mask_bytes: int = 0,
                 gpu_resize: bool = False, gpu_jpeg: bool = False, images: int = 0):
        # the batches: float32 inputs, or (gpu_resize) byte slots that hold decoded pixels
        self.shape = (count, batch) + (tuple(shape) if not gpu_resize else (slot_bytes(shape),))
        dtype = np.uint8 if gpu_resize else np.float32
        masks_shape = (mask_slots, mask_bytes) if mask_slots and mask_bytes else None
        board = 2 * max(images, count * batch)          # a byte for each image in a task
        files = {"batches": np.dtype(dtype).itemsize * int(np.prod(self.shape)), "board": board}
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
        board_path = str(Path(self._dir.name) / "board")
        self._tickets = _Tickets(np.memmap(board_path, np.uint8, "r+", shape=(board,)))
        settings = (shape[0], tuple(shape[1:]), resize, mean, std, gpu_resize,
                    gpu_resize and gpu_jpeg and shape[0] == 3)
        from PIL import Image
        options = {"max_pixels": Image.MAX_IMAGE_PIXELS, "dies": os.environ.get(DIES),
                   "hangs": os.environ.get(HANGS), "board": (board_path, board)}
        self._initargs = (path, self.shape, settings, masks_path, masks_shape, options)
        self._workers = workers
        self._lock = threading.Lock()
        self.generation = 0                 # executors made before this one (`restart`)
        self.executor = self._executor()
        self._live: dict[int, dict] = {}    # generation: {future: tickets} not done, or broken
        self._verdicts: dict[int, Future] = {}   # generation: the tickets it broke on
        self._broken: list = []             # executors replaced, their processes killed
        self._closing: list | None = None   # (close) the last executor's processes, its thread
        self._helpers = ThreadPoolExecutor(max(2, workers), thread_name_prefix="segment-retry")
        self.stop_event = threading.Event()   # set: retries end (Stopped), `alone` too
        self.on_restart = None              # called after each restart (the pipeline says so)

    def _executor(self) -> ProcessPoolExecutor:
        """A fresh executor with all its worker processes started now. Python 3.11's executor
        (forkserver) otherwise starts them one at a time inside `submit`, and a submit to a
        young executor whose worker just died raced its manager thread's teardown: OSError
        from submit, a dead fork server, or a traceback from that thread (seen with every
        image a killer). Started at once, a later submit never starts one."""
        executor = ProcessPoolExecutor(max_workers=self._workers, mp_context=context(),
                                       initializer=_init, initargs=self._initargs)
        launch = getattr(executor, "_launch_processes", None)   # CPython 3.9 to 3.13
        if launch is not None:
            with executor._shutdown_lock:
                launch()
        return executor

    def restart(self, generation: int) -> frozenset:
        """A fresh executor in place of executor `generation`, which a dead worker broke (every
        task in it failed); returns the tickets of the images its workers were on when it broke
        (the same for every call about one generation). The broken executor's processes are
        killed and reaped here, so that the board holds their last word, and any of its futures
        still pending once its manager thread has failed those it knew of are failed here:
        Python 3.11's executor can start a worker, or queue a task, while it tears itself down
        (a submit racing its manager thread), and that worker would be waited for at exit
        forever."""
        with self._lock:
            mine = generation == self.generation      # this call restarts it
            if not mine:
                verdict = self._verdicts[generation]
            else:
                verdict = self._verdicts[generation] = Future()
                broken, self.executor = self.executor, self._executor()
                self.generation += 1
                live = self._live.pop(generation, {})
                self._broken.append(broken)
        if not mine:
            return verdict.result()
        on = frozenset()
        try:
            _kill_processes(broken, join=True)
            tickets = [t for ts in live.values() for t in ts]
            on = frozenset(t for t in tickets if self._tickets.board[t])
        finally:
            verdict.set_result(on)
        manager = getattr(broken, "_executor_manager_thread", None)
        broken.shutdown(wait=False, cancel_futures=True)
        if manager is not None and manager is not threading.current_thread():
            manager.join(timeout=5)           # it fails the futures it knows of (no race)
        for future in live:
            try:
                future.set_exception(BrokenProcessPool("a worker process died"))
            except InvalidStateError:         # it failed, or finished, meanwhile
                pass
        if self.on_restart is not None:
            self.on_restart()
        return on

    def _submit(self, fn, args: tuple, tickets: list):
        """fn(*args, tickets=tickets) in a worker; the future knows its executor's `generation`
        and its `tickets`. An executor that broke is replaced first. Submits hold the lock, so
        that `restart` finds every process a submit to the old executor started."""
        for _ in range(3):
            with self._lock:
                generation, executor = self.generation, self.executor
                try:
                    future = executor.submit(fn, *args, tickets=tickets)
                except (BrokenProcessPool, OSError):  # OSError: a worker died as it started
                    future = None
                else:
                    future.generation, future.tickets = generation, tickets
                    self._live.setdefault(generation, {})[future] = tickets
            if future is None:
                self.restart(generation)
                continue
            return future
        raise SqueezegenError("segment's worker processes die as soon as they start")

    def run(self, fn, args: tuple, singles: list, what: str) -> Future:
        """fn(*args) in a worker: a future of its list of per-image results, whoever dies.
        `singles`: each image's own task, (fn, args) giving a one-image list; `what` names the
        worker in the error of an image that kills it ("decoder"). The future fails with
        Stopped once `stop_event` is set while the images are retried."""
        outer = Future()
        tickets = []
        try:
            tickets = self._tickets.take(len(singles))
            inner = self._submit(fn, args, tickets)
        except BaseException as exc:
            self._tickets.give(tickets)
            outer.set_exception(exc)
            return outer
        inner.add_done_callback(lambda f: self._settle(f, outer, singles, what))
        return outer

    def _settle(self, inner, outer: Future, singles: list, what: str) -> None:
        """(The done callback of a task's future.) Its results, or, when its executor broke,
        its images retried (`_recover`, in a thread of its own: not in the executor's)."""
        if not inner.cancelled() and not isinstance(inner.exception(), BrokenProcessPool):
            with self._lock:
                self._live.get(inner.generation, {}).pop(inner, None)
            self._tickets.give(inner.tickets)
            try:
                outer.set_result(inner.result())
            except Exception as exc:
                outer.set_exception(exc)
            return
        try:
            if self.stop_event.is_set():
                raise RuntimeError("stopping")
            self._helpers.submit(self._recover, inner, outer, singles, what)
        except RuntimeError:                   # the pool is closing
            self._tickets.give(inner.tickets)
            outer.set_exception(Stopped())

    def _recover(self, inner, outer: Future, singles: list, what: str) -> None:
        """The images of a task that a dead worker failed: those a worker was on when it died
        each alone (so that the killer fails, saying how); the others back to the restarted
        executor, one image a task, at once. When no worker was on an image, every one goes
        alone."""
        try:
            if self.stop_event.is_set():
                raise Stopped
            on = self.restart(inner.generation)
            self._tickets.give(inner.tickets)
            parts = [self._helpers.submit(self._alone_result, fn, args, what)
                     if not on or ticket in on else self.run(fn, args, [(fn, args)], what)
                     for (fn, args), ticket in zip(singles, inner.tickets, strict=True)]
        except BaseException as exc:
            outer.set_exception(Stopped() if self.stop_event.is_set() else exc)
            return
        _gather(parts, outer)

    def _alone_result(self, fn, args: tuple, what: str) -> list:
        """fn(*args) alone (`alone`): its results, or the error of the image that killed it."""
        try:
            result = self.alone(fn, *args, stop=self.stop_event)
        except WorkerDied as died:
            return [("error", f"the {what} process died ({died}) on this image")]
        if result is None:
            raise Stopped
        return result

    def decode(self, index: int, first: int, paths: list) -> Future:
        singles = [(decode_chunk, (index, slot, [path]))
                   for slot, path in enumerate(paths, start=first)]
        return self.run(decode_chunk, (index, first, paths), singles, "decoder")

    def encode(self, out_dir: str, masks: list, level: int) -> Future:
        singles = [(encode_chunk, (out_dir, [mask], level)) for mask in masks]
        return self.run(encode_chunk, (out_dir, masks, level), singles, "PNG writer")

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
            started = False
            while True:
                while not reader.poll(0.1):      # a message, or the end of the pipe
                    if stop is not None and stop.is_set():
                        return None
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

    def close(self, grace: float) -> bool:
        """Stop the workers and free the shared files: each worker finishes its task, for at
        most `grace` seconds, after which those still running (a hung decoder) are terminated,
        then killed. True when a KeyboardInterrupt (a second Ctrl-C, SIGTERM) came while
        waiting (the workers are stopped all the same). Safe to call again, after a signal
        interrupted a call."""
        self.stop_event.set()
        self._helpers.shutdown(wait=False, cancel_futures=True)
        for broken in self._broken:                 # killed at the restart; reaped here
            _kill_processes(broken, join=True)
        if self._closing is None:
            processes = list((getattr(self.executor, "_processes", None) or {}).values())
            self._closing = [processes, getattr(self.executor, "_executor_manager_thread", None)]
            self.executor.shutdown(wait=False, cancel_futures=True)
        processes, manager = self._closing
        interrupted = _end_processes(processes, time.monotonic() + grace)
        if manager is not None:
            manager.join(timeout=5)       # it ends once its processes have
        self._closing = [[], None]        # its queues' semaphores go with it (/dev/shm)
        self._helpers.shutdown(wait=True)
        self.batches = self.masks = None
        self._dir.cleanup()
        return interrupted
