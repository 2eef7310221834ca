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

import os
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..fsutil import atomic_write
from ..images import MAX_PNG_CLASSES, check_image_model, check_normalisation
from .backends import backend_specs, choose_backend
from .inputs import Item, collect
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


def write_failed(out_dir, failures: list[tuple[str, str]]) -> None:
    """OUT_DIR/failed.txt: `absolute path<TAB>reason` per line (a valid input list: `segment`
    reads the path before the tab). Removed when a run has no failures, so it always tells the
    last run."""
    path = Path(out_dir) / "failed.txt"
    if failures:
        lines = "".join(f"{_one_line(os.path.abspath(p))}\t{_one_line(why)}\n"
                        for p, why in sorted(failures))
        atomic_write(path, lambda f: f.write(lines.encode("utf-8", "surrogateescape")), InputError)
    elif path.exists():
        path.unlink()


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
            overlap: bool | None = None, log=None) -> SegmentSummary:
    """Segment every image of `inputs` (paths of images, folders, globs or .txt lists) into
    `out_dir`; returns the summary. `backend` is cuda, numpy or auto; `gpus` is all, a count or
    a list of ids; `workers` the decoders and the encode threads (each; default: the CPU count);
    `decoders` "processes", "threads" or "auto" (processes with a GPU and 4 CPUs or more);
    `per_gpu` networks share each GPU (to overlap one's copies with another's kernels); `ray`
    ("auto" or a cluster address) runs the job on Ray Data instead (`squeezegen.ray`);
    `resize_on` "cpu", "gpu" or "auto" (default: the GPU where the workers are processes feeding
    a GPU that makes the masks): the GPU resizes the decoded images with Pillow's arithmetic,
    so the CPUs only decode; `overlap`: each GPU network keeps two batches in flight, its
    copies overlapping its kernels (`runtime.overlap`; None, the default: wherever a local GPU
    makes the masks; False: never). Images that cannot be read are skipped and listed in
    out_dir/failed.txt."""
    from ..frontend import load_model
    from ..weights import check_weights, load_weights
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    graph = load_model(model)
    check_segmentation_model(graph)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    c, h, w = graph.input.type.shape
    mean_a, std_a = check_normalisation(c, list(mean), list(std))
    if resize not in ("stretch", "letterbox"):
        raise InputError(f"resize must be stretch or letterbox, got '{resize}'")
    weights_file = None if isinstance(weights, dict) else str(weights)
    checked = check_weights(graph, load_weights(weights), weights_file)
    _check_out_dir(out_dir)
    items = collect([str(i) for i in inputs], out_dir)
    if decoders not in ("auto", "threads", "processes"):
        raise InputError(f"decoders must be auto, threads or processes, got '{decoders}'")
    settings = Settings(shape=(c, h, w), mean=mean_a, std=std_a, batch=batch, resize=resize,
                        scores=scores, overwrite=overwrite, workers=workers or os.cpu_count() or 4)
    _overlap(overlap, "cuda", scores, ray)        # refuses what cannot overlap, before a build
    if ray is not None:
        _resize_on_gpu(resize_on, "ray", False, scores, ray)
        from .ray_data import run_ray
        summary = run_ray(ray, graph, checked, items, out_dir, settings, precision=precision,
                          backend=backend, progress=progress, log=log, per_gpu=per_gpu)
    else:
        kind = choose_backend(backend, log)
        specs = backend_specs(kind, graph, checked, batch, precision, gpus, per_gpu)
        processes = _decode_in_processes(decoders, kind)
        settings = replace(settings, processes=processes,
                           overlap=_overlap(overlap, kind, scores, ray),
                           gpu_resize=_resize_on_gpu(resize_on, kind, processes, scores, ray))
        bar = Progress(len(items), enabled=progress)
        pipeline = Pipeline(items, specs, out_dir, settings, kind, bar if progress else None, log)
        try:
            summary = pipeline.run()
        finally:
            write_failed(out_dir, pipeline.summary.failures)
            if pipeline.summary.interrupted and progress:
                log(pipeline.summary.text())
    if ray is not None:
        write_failed(out_dir, summary.failures)
        if summary.interrupted and progress:
            log(summary.text())
    if summary.interrupted:
        raise KeyboardInterrupt
    return summary
