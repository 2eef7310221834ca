"""`squeezegen segment`: segment many images, every stage overlapping, on every GPU of a host.

    summary = squeezegen.segment("models/squeezeseg.yaml", "w.npz", ["photos/"], "masks/",
                                 batch=32)
    print(summary.text())

For each image, `masks/<path relative to its input>.png` holds the argmax classes in the Pascal
VOC palette at the image's original size (the class scores resized back, then the argmax), and
with `scores=True` a `.npy` beside it holds those scores (classes, height, width). See
`pipeline.py` for how the stages overlap, and `squeezegen.ray` for the same job on Ray Data.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from ..errors import GPUError, InputError
from ..fsutil import atomic_write
from ..images import MAX_PNG_CLASSES, check_image_model, check_normalisation
from .backends import backend_specs, check_gpus, choose_backend
from .inputs import Item, collect
from .outputs import LOCK, out_dir_lock, sweep_plan, sweep_temp_files
from .pipeline import Pipeline, Settings
from .progress import Progress
from .summary import SegmentSummary

__all__ = ["segment", "SegmentSummary", "Item", "collect", "check_segmentation_model"]


def check_segmentation_model(graph) -> tuple[int, int, int]:
    """The model's output (classes, h, w); InputError if it cannot segment images."""
    check_image_model(graph.input.type.shape, graph.source)
    if len(graph.outputs) != 1:
        raise InputError(f"segment needs a model with one output, '{graph.name}' has "
                         f"{len(graph.outputs)}", file=graph.source)
    shape = graph[graph.outputs[0]].type.shape
    if len(shape) != 3:
        raise InputError(f"segment needs a model whose output is (classes, height, width); "
                         f"'{graph.name}' gives {tuple(shape)}", file=graph.source)
    if shape[0] > MAX_PNG_CLASSES:
        raise InputError(f"a palette PNG holds at most {MAX_PNG_CLASSES} classes, "
                         f"'{graph.name}' has {shape[0]}", file=graph.source)
    return tuple(shape)


def _one_line(text: str) -> str:
    """A path or reason on one line of failed.txt: only a line break, carriage return or tab
    (which the list format cannot hold) is written escaped, as \\n, \\r or \\t; every other
    character, a file name's undecodable bytes included, is written as it is, so the path reads
    back as an input list."""
    return "".join(repr(c)[1:-1] if c in "\n\r\t" else c for c in str(text))


FAILED = "failed.txt"


def write_failed(out_dir, failures: list[tuple[str, str]]) -> None:
    """OUT_DIR/failed.txt: `absolute path<TAB>reason` per line (a valid input list: `segment`
    reads the path before the tab). Removed when a run has no failures, so it always tells the
    last run. (`_check_reserved_names` made sure, before the run, that it is not a folder.)"""
    path = Path(out_dir) / FAILED
    if failures:
        lines = "".join(f"{_one_line(os.path.abspath(p))}\t{_one_line(why)}\n"
                        for p, why in sorted(failures))
        atomic_write(path, lambda f: f.write(lines.encode("utf-8", "surrogateescape")), InputError)
    elif path.is_file() or path.is_symlink():
        path.unlink()


def _check_reserved_names(out_dir, items: list[Item]) -> None:
    """OUT_DIR/failed.txt must be free for the list of failures: not a folder; and neither it
    nor the lock file (`outputs.LOCK`) where the outputs of an input folder of that name
    would go."""
    for name, what in ((FAILED, "its list of failures"), (LOCK, "its lock file")):
        inside = [i for i in items if i.name.startswith(name + "/")]
        if inside:
            raise InputError(f"the outputs of the input folder '{name}' would go into "
                             f"{Path(out_dir) / name}/, where segment writes {what}: rename "
                             "that folder or segment it on its own", file=inside[0].path)
    path = Path(out_dir) / FAILED
    if path.exists() and not path.is_file():
        raise InputError(f"segment writes its list of failures there, and it is not a file: "
                         "move it away or choose another output folder", file=str(path))


def _check_out_dir(out_dir) -> None:
    """OUT_DIR is created (or found) writable before any image is decoded: not a million
    'cannot write' lines after the work is done."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder: {exc.strerror or exc}",
                         file=str(path)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError("the output folder is not writable", file=str(path))


def _stop(signum, frame):
    raise KeyboardInterrupt


def _stop_on_sigterm():
    """SIGTERM (`timeout`, `kill`, a batch scheduler) stops the run as the first Ctrl-C does:
    it raises KeyboardInterrupt in the main thread, so the stages stop after the image each is
    on, the summary is printed, and the CLI exits with status 130. Installed only in the main
    thread (the only one that may); returns the handler it replaced (None elsewhere). Called
    again after anything that installs its own (ray.init: `ray_data.run_ray`)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _stop)


@contextlib.contextmanager
def _sigterm_stops():
    """`_stop_on_sigterm` for the run; the handler before it restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _stop_on_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _positive(name: str, value, allow_none: bool = False) -> None:
    """An integer of at least 1 (None too, where `allow_none`), else a one-line InputError."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be an integer of at least 1, got {value!r}")


def _check_options(batch, precision, gpus, workers, per_gpu) -> None:
    """The options that name no file, checked before anything is loaded."""
    from ..codegen.schedule import PRECISIONS
    _positive("batch", batch)
    _positive("per_gpu", per_gpu)
    _positive("workers", workers, allow_none=True)
    if precision not in PRECISIONS:
        raise InputError(f"precision must be {', '.join(PRECISIONS)}, got {precision!r}")
    check_gpus(gpus)


def _decode_in_processes(decoders: str, kind: str) -> bool:
    """Threads are enough to keep the NumPy reference busy and cost less to start; with a GPU
    and several cores, processes, which do not share the interpreter lock, keep up with it
    (README, "Throughput on the H200")."""
    from .worker_pool import available
    if decoders == "auto":
        return kind == "cuda" and (os.cpu_count() or 1) >= 4 and available()
    if decoders == "processes" and not available():
        raise InputError("decoding in processes needs the forkserver start method (Linux, "
                         "macOS); use decoders='threads'")
    return decoders == "processes"


def _resize_on_gpu(resize_on: str, kind: str, processes: bool, scores: bool, ray) -> bool:
    """Whether the GPU resizes and normalises the decoded images (`runtime.image_inputs`):
    where the workers are processes feeding a GPU that makes the masks (not with --scores or
    on Ray Data), unless resize_on is "cpu"."""
    if resize_on not in ("auto", "gpu", "cpu"):
        raise InputError(f"resize_on must be auto, gpu or cpu, got '{resize_on}'")
    possible = ray is None and kind == "cuda" and processes and not scores
    if resize_on == "gpu" and not possible:
        raise InputError("resizing on the GPU needs the cuda backend, decoding in worker "
                         "processes, no --scores and no --ray")
    return possible and resize_on != "cpu"


def _jpeg_on_gpu(jpeg_on: str, gpu_resize: bool, channels: int, device: int | None,
                 log) -> bool:
    """Whether nvJPEG's hardware decoder decodes the JPEGs on the GPU (`runtime.nvjpeg`):
    where the GPU resizes (`_resize_on_gpu`) for a 3-channel model and the decoder starts on
    the first GPU, unless jpeg_on is "cpu". "gpu" where it cannot is an error; "auto" says why
    in one line and decodes on the CPU."""
    if jpeg_on not in ("auto", "gpu", "cpu"):
        raise InputError(f"jpeg_on must be auto, gpu or cpu, got '{jpeg_on}'")
    if jpeg_on == "cpu":
        return False
    if not (gpu_resize and channels == 3):
        if jpeg_on == "gpu":
            raise InputError("decoding JPEGs on the GPU needs the GPU resize (the cuda backend, "
                             "decoding in worker processes, no --scores, no --ray, not "
                             "--resize-on cpu) and a 3-channel model")
        return False
    from ..runtime.nvjpeg import available
    why = available(device or 0)
    if why is None:
        return True
    if jpeg_on == "gpu":
        raise GPUError(f"cannot decode JPEGs on the GPU: {why}")
    log(f"squeezegen: {why}: JPEGs are decoded on the CPU")
    return False


def _overlap(overlap: bool | None, kind: str, scores: bool, ray) -> bool:
    """Whether each GPU network keeps two batches in flight (`runtime.overlap`). None: wherever
    a local GPU makes the masks (not with --scores or on Ray Data); True there is an error."""
    if overlap and (ray is not None or scores):
        raise InputError("overlap is for the masks made on a local GPU: not with --ray or "
                         "--scores")
    if overlap is None:
        return ray is None and kind == "cuda" and not scores
    return bool(overlap)


def segment(model, weights, inputs, out_dir, *, batch: int = 32, precision: str = "fp32",
            gpus="all", resize: str = "stretch", mean=(128.0,), std=(1.0,),
            scores: bool = False, overwrite: bool = False, backend: str = "auto",
            workers: int | None = None, per_gpu: int = 1, progress: bool = True,
            ray: str | None = None, decoders: str = "auto", resize_on: str = "auto",
            jpeg_on: str = "cpu", overlap: bool | None = None, log=None) -> SegmentSummary:
    """Segment every image of `inputs` (paths of images, folders, globs or .txt lists) into
    `out_dir`; returns the summary. `backend` is cuda, numpy or auto; `gpus` is all, a count or
    a list of ids; `workers` the decoders and the encode threads (each; default: the CPU count);
    `decoders` "processes", "threads" or "auto" (processes with a GPU and 4 CPUs or more);
    `per_gpu` networks share each GPU (to overlap one's copies with another's kernels); `ray`
    ("auto" or a cluster address) runs the job on Ray Data instead (`squeezegen.ray`);
    `resize_on` "cpu", "gpu" or "auto" (default: the GPU where the workers are processes feeding
    a GPU that makes the masks): the GPU resizes the decoded images with Pillow's arithmetic,
    so the CPUs only decode; `jpeg_on` "cpu" (the default, Pillow), "gpu" or "auto" (the GPU
    where it resizes, for a 3-channel model, and nvJPEG's hardware decoder starts): baseline
    JPEGs are decoded by nvJPEG on the GPU, so the CPUs only read their bytes (the pixels
    differ from Pillow's by a few levels: another IDCT and chroma upsampling; not yet run on a
    GPU, hence not the default); `overlap`: each GPU network keeps two batches in flight, its
    copies overlapping its kernels (`runtime.overlap`; None, the default: wherever a local GPU
    makes the masks; False: never); `mean` and `std` a number or one per channel. Images that
    cannot be read, and subfolders that cannot be listed, are skipped and listed in
    out_dir/failed.txt (the summary counts the images in `failed`, the folders apart in
    `unreadable`). Temp files that an interrupted run left (SIGKILL) are removed first.
    SIGTERM stops the run as Ctrl-C does (KeyboardInterrupt, after the summary; the CLI's exit
    status is 130 for both)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    with _sigterm_stops():
        return _segment(model, weights, inputs, out_dir, batch=batch, precision=precision,
                        gpus=gpus, resize=resize, mean=mean, std=std, scores=scores,
                        overwrite=overwrite, backend=backend, workers=workers, per_gpu=per_gpu,
                        progress=progress, ray=ray, decoders=decoders, resize_on=resize_on,
                        jpeg_on=jpeg_on, overlap=overlap, log=log)


def _segment(model, weights, inputs, out_dir, *, batch, precision, gpus, resize, mean, std,
             scores, overwrite, backend, workers, per_gpu, progress, ray, decoders, resize_on,
             jpeg_on, overlap, log) -> SegmentSummary:
    from ..frontend import load_model
    from ..weights import check_weights, load_weights
    _check_options(batch, precision, gpus, workers, per_gpu)
    graph = load_model(model)
    check_segmentation_model(graph)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    c, h, w = graph.input.type.shape
    mean_a, std_a = check_normalisation(c, mean, std)
    if resize not in ("stretch", "letterbox"):
        raise InputError(f"resize must be stretch or letterbox, got '{resize}'")
    weights_file = None if isinstance(weights, dict) else str(weights)
    checked = check_weights(graph, load_weights(weights), weights_file)
    if decoders not in ("auto", "threads", "processes"):
        raise InputError(f"decoders must be auto, threads or processes, got '{decoders}'")
    _overlap(overlap, "cuda", scores, ray)        # refuses what cannot overlap, before a build
    _check_out_dir(out_dir)
    with out_dir_lock(out_dir, log):      # no other run writes there, nor sweeps, meanwhile
        items, unreadable, plan = _inputs(inputs, out_dir, log)
        settings = Settings(shape=(c, h, w), mean=mean_a, std=std_a, batch=batch,
                            resize=resize, scores=scores, overwrite=overwrite,
                            workers=workers or os.cpu_count() or 4)
        if ray is not None:
            _resize_on_gpu(resize_on, "ray", False, scores, ray)
            _jpeg_on_gpu(jpeg_on, False, c, None, log)
            from .ray_data import run_ray
            try:
                summary = run_ray(ray, graph, checked, items, out_dir, settings,
                                  precision=precision, backend=backend, progress=progress,
                                  log=log, per_gpu=per_gpu)
            except BaseException:         # stopped or failed before a summary: the folders
                if unreadable:            # that could not be read still go to failed.txt
                    write_failed(out_dir, unreadable)
                raise
            _finish(summary, out_dir, unreadable, plan, progress, log, sweep=summary.interrupted)
        else:
            kind = choose_backend(backend, log)
            specs = backend_specs(kind, graph, checked, batch, precision, gpus, per_gpu)
            processes = _decode_in_processes(decoders, kind)
            gpu_resize = _resize_on_gpu(resize_on, kind, processes, scores, ray)
            settings = replace(settings, processes=processes,
                               overlap=_overlap(overlap, kind, scores, ray),
                               gpu_resize=gpu_resize,
                               gpu_jpeg=_jpeg_on_gpu(jpeg_on, gpu_resize, c, specs[0].device,
                                                     log))
            bar = Progress(len(items), enabled=progress)
            pipeline = Pipeline(items, specs, out_dir, settings, kind,
                                bar if progress else None, log)
            try:
                summary = pipeline.run()
            finally:
                _finish(pipeline.summary, out_dir, unreadable, plan, progress, log,
                        sweep=pipeline.summary.interrupted or pipeline.restarts > 0)
    if summary.interrupted:
        raise KeyboardInterrupt
    return summary


def _inputs(inputs, out_dir, log) -> tuple[list[Item], list, dict]:
    """The images of `inputs` (`collect`), the folders that could not be listed (path, why),
    and the output folders' `sweep_plan`, after removing the temp files a killed run left
    there."""
    unreadable: list[tuple[str, str]] = []
    items = collect([str(i) for i in inputs], out_dir, failures=unreadable, log=log)
    _check_reserved_names(out_dir, items)
    plan = sweep_plan(out_dir, items)
    removed = sweep_temp_files(plan)
    if removed:
        log(f"squeezegen: removed {removed:,} temporary file{'s' if removed > 1 else ''} that "
            f"an interrupted run left in {out_dir}")
    return items, unreadable, plan


def _finish(summary: SegmentSummary, out_dir, unreadable: list, plan: dict, progress: bool,
            log, sweep: bool) -> None:
    """The end of a run, finished or not: the unreadable folders in the summary (apart from the
    images: written + failed + skipped stays the images found), failed.txt (the folders and the
    images), the temp files of a stopped run's writes removed (`sweep`), the summary of an
    interrupted run on stderr (the CLI prints a finished one)."""
    summary.unreadable = list(unreadable)
    write_failed(out_dir, unreadable + summary.failures)
    if sweep:
        sweep_temp_files(plan)
    if summary.interrupted and progress:
        log(summary.text())
