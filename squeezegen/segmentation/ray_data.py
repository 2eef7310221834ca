"""`segment` on Ray Data, past one machine: `Segmenter` for any Ray Data pipeline, and the
pipeline `squeezegen segment --ray` runs.

    rows of (path, name) -> map_batches(decode_batch)        CPU tasks: read, decode, resize
                         -> map_batches(Segmenter, raw=True) one actor per GPU: the network and
                                                             the masks (on the GPU)
                         -> map_batches(write_batch)         CPU tasks: PNG (on numpy or with
                                                             --scores: the scores back, .npy)
                         -> the driver: progress, failed.txt, summary

The rows come from the same input list as the local pipeline (so the output names, the resume
and failed.txt are the same); the files are read in the decode tasks, as
`ray.data.read_binary_files` would, but one unreadable file is one failed row, not a failed job.
Nothing here imports `ray` at module level: `Segmenter` is a plain callable class.
"""
from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np

from ..errors import InputError, SqueezegenError, printable
from ..images import array_pixels, check_normalisation, fit_box, read_pixels, save_classes
from .inputs import output_path
from .outputs import PNG_LEVEL, write_outputs
from .resample import argmax_classes, classes_at, resize_scores


def _reason(exc: BaseException) -> str:
    from .pipeline import reason
    return reason(exc)


def decode_batch(batch: dict, *, shape: tuple, mean, std, resize: str = "stretch") -> dict:
    """Rows with `path` (and `bytes`, or read from `path`; or `image`: decoded arrays) -> the
    same rows with `input` (the normalised C,H,W model input), `size`, `box` and `error`
    ("" when the image could be read)."""
    c, h, w = shape
    mean_a, std_a = check_normalisation(c, list(mean), list(std))
    n = len(batch["path"]) if "path" in batch else len(next(iter(batch.values())))
    x = np.zeros((n, c, h, w), np.float32)
    sizes, boxes, errors = np.zeros((n, 2), np.int64), np.zeros((n, 4), np.int64), []
    start = time.perf_counter()
    for i in range(n):
        try:
            if "image" in batch:
                pixels, size = array_pixels(batch["image"][i], c, (h, w), resize)
            elif "bytes" in batch:
                pixels, size = read_pixels(io.BytesIO(batch["bytes"][i]), c, (h, w), resize, True)
            else:
                pixels, size = read_pixels(str(batch["path"][i]), c, (h, w), resize, True)
        except Exception as exc:
            errors.append(f"cannot read the image: {_reason(exc)}")
            continue
        box = fit_box(size, (h, w), resize)
        top, left, bh, bw = box
        x[i, :, top:top + bh, left:left + bw] = (pixels.transpose(2, 0, 1) - mean_a) / std_a
        sizes[i], boxes[i] = size, box
        errors.append("")
    out = {k: v for k, v in batch.items() if k not in ("bytes", "image")}
    out.update(input=x, size=sizes, box=boxes, error=np.array(errors, dtype=object),
               decode_s=np.full(n, (time.perf_counter() - start) / max(1, n)))
    return out


class Segmenter:
    """Segment a batch of images with a squeezegen network: a callable class for Ray Data's
    `map_batches` (one instance per actor, the network built once per actor).

        import ray, squeezegen.ray
        ds = ray.data.read_images("photos/", include_paths=True, mode="RGB")
        ds = ds.map_batches(squeezegen.ray.Segmenter, batch_size=32, num_gpus=1,
                            compute=ray.data.ActorPoolStrategy(size=2),
                            fn_constructor_kwargs={"model": "squeezeseg.yaml",
                                                   "weights": "w.npz", "batch": 32})
        for row in ds.iter_rows():
            row["path"], row["classes"]           # uint8 classes at the image's size

    A batch holds `image` (decoded H x W (x C) arrays, as `read_images` gives; their sizes may
    differ), `bytes` (encoded files, as `read_binary_files` gives), or `input` (the output of
    `decode_batch`); other columns (`path`) pass through. The result has `classes` (an object
    column of uint8 arrays), `scores` with `scores=True` (float32 classes x H x W), and `error`
    ("" or why that image could not be read: a bad image never fails the batch).

    `model` and `weights` are paths (visible on every node) or a Graph and a weights dict.
    `backend` "auto" takes the GPU Ray gave the actor (num_gpus=1), else the NumPy reference.
    On a GPU the masks are made there (the scores resized and reduced on the device). With
    `raw=True` and without (on numpy, or with `scores=True`), the network's scores (`raw`,
    classes x h x w at the model's size) are returned with `size` and `box` instead, for a
    later CPU stage to resize (`write_batch`).
    """

    def __init__(self, model, weights, *, batch: int = 32, precision: str = "fp32",
                 backend: str = "auto", mean=(128.0,), std=(1.0,), resize: str = "stretch",
                 scores: bool = False, raw: bool = False, device: int = 0):
        from ..frontend import load_model
        from ..weights import check_weights, load_weights
        from . import check_segmentation_model
        from .backends import CudaBackend, NumpyBackend, choose_backend
        graph = load_model(model)
        file = None if isinstance(weights, dict) else str(weights)
        checked = check_weights(graph, load_weights(weights), file)
        self.shape = graph.input.type.shape
        self.out_shape = check_segmentation_model(graph)
        self.mean, self.std, self.resize = tuple(mean), tuple(std), resize
        check_normalisation(self.shape[0], list(mean), list(std))
        self.scores, self.raw, self.batch = scores, raw, batch
        self.kind = choose_backend(backend, log=lambda m: None)
        if self.kind == "cuda":
            self.net = CudaBackend(graph, checked, batch, precision, device)
        else:
            self.net = NumpyBackend(graph, checked, batch)
        self.worker = _worker_label(self.kind)

    def __call__(self, batch: dict) -> dict:
        if "input" not in batch:
            batch = decode_batch(batch, shape=self.shape, mean=self.mean, std=self.std,
                                 resize=self.resize)
        x, errors = batch["input"], batch["error"]
        ok = np.array([not e for e in errors], bool)
        n = len(errors)
        rows = np.cumsum(ok) - 1
        out = {k: v for k, v in batch.items() if k != "input"}
        out["worker"] = np.array([self.worker] * n, dtype=object)
        if hasattr(self.net, "classes") and not self.scores:       # masks made on the GPU
            start = time.perf_counter()
            good = np.nonzero(ok)[0]
            masks = []
            for i in range(0, len(good), self.batch):
                part = good[i:i + self.batch]
                masks += self.net.classes(np.ascontiguousarray(x[part]),
                                          [tuple(batch["size"][j]) for j in part],
                                          [tuple(batch["box"][j]) for j in part])
            out["network_s"] = np.full(n, (time.perf_counter() - start) / max(1, n))
            out["classes"] = _objects([masks[rows[i]] if ok[i] else np.zeros((0, 0), np.uint8)
                                       for i in range(n)])
            for k in ("size", "box"):
                out.pop(k, None)
            return out
        start = time.perf_counter()
        y = None
        if ok.any():
            good = np.ascontiguousarray(x[ok])
            y = np.concatenate([self._run(good[i:i + self.batch])
                                for i in range(0, len(good), self.batch)])
        out["network_s"] = np.full(n, (time.perf_counter() - start) / max(1, n))
        if self.raw:
            raw = np.zeros((n,) + self.out_shape, np.float32)
            if y is not None:
                raw[ok] = y
            out["raw"] = raw
            return out
        hw = self.shape[1:]
        classes, scores = [], []
        for i in range(n):
            if not ok[i]:
                classes.append(np.zeros((0, 0), np.uint8))
                scores.append(np.zeros((0, 0, 0), np.float32))
                continue
            size, box = tuple(batch["size"][i]), tuple(batch["box"][i])
            if self.scores:
                full = resize_scores(y[rows[i]], size, box, hw)
                scores.append(full)
                classes.append(argmax_classes(full).astype(np.uint8))
            else:
                classes.append(classes_at(y[rows[i]], size, box, hw))
        out["classes"] = _objects(classes)
        if self.scores:
            out["scores"] = _objects(scores)
        for k in ("size", "box"):
            out.pop(k, None)
        return out

    def _run(self, x: np.ndarray) -> np.ndarray:
        y = self.net(x)
        return y[0] if isinstance(y, tuple) else y


def _objects(arrays: list) -> np.ndarray:
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column


def _worker_label(kind: str) -> str:
    try:
        import ray
        ctx = ray.get_runtime_context()
        node = ctx.get_node_id()[:8]
        gpus = ray.get_gpu_ids() if kind == "cuda" else []
        return f"{node}/" + (f"gpu{','.join(str(g) for g in gpus)}" if gpus else f"pid{os.getpid()}")
    except Exception:
        return f"pid{os.getpid()}"


def write_batch(batch: dict, *, out_dir: str, input_hw: tuple, scores: bool = False) -> dict:
    """The CPU stage after `Segmenter(raw=True)`: each row's PNG (and .npy) in out_dir; returns
    the small rows the driver counts (path, error, worker, network_s, encode_s)."""
    n = len(batch["path"])
    errors = list(batch["error"])
    encode = np.zeros(n)
    for i in range(n):
        if errors[i]:
            continue
        start = time.perf_counter()
        try:
            if "classes" in batch:                   # the Segmenter made the masks (GPU)
                save_classes(output_path(out_dir, str(batch["name"][i])), batch["classes"][i],
                             compress_level=PNG_LEVEL)
            else:
                write_outputs(out_dir, str(batch["name"][i]), batch["raw"][i],
                              tuple(batch["size"][i]), tuple(batch["box"][i]), input_hw, scores)
        except Exception as exc:
            errors[i] = f"cannot write the output: {_reason(exc)}"
        encode[i] = time.perf_counter() - start
    return {"path": batch["path"], "error": np.array(errors, dtype=object),
            "worker": batch["worker"], "network_s": batch["network_s"],
            "decode_s": batch["decode_s"], "encode_s": encode}


def connect(address: str, log) -> bool:
    """Join the Ray cluster at `address` ("auto": the running one, else start a local one);
    True if this call started Ray (so the caller shuts it down)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'squeezegen[ray]'") from None
    if ray.is_initialized():
        return False
    import logging
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
    if address == "auto":
        try:
            ray.init(address="auto", **kwargs)
        except ConnectionError:
            log("squeezegen: no running Ray cluster found: starting a local one")
            ray.init(**kwargs)
    else:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot join the Ray cluster at {address}: "
                             f"{' '.join(str(exc).split())}") from None
    return True


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_ray(address: str, graph, weights: dict, items, out_dir, settings, *, precision: str,
            backend: str, progress: bool, log, per_gpu: int = 1):
    """The whole `segment` job on Ray Data; returns the SegmentSummary. One Segmenter actor per
    GPU of the cluster (`per_gpu` actors sharing each GPU), or one per node on numpy."""
    import logging

    from .outputs import is_done
    from .progress import Progress
    from .summary import SegmentSummary
    from . import _stop, _stop_on_sigterm
    before = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    started = connect(address, log)
    if before is _stop:           # inside segment(): ray.init put its own in place (sys.exit);
        _stop_on_sigterm()        # SIGTERM stops the run as Ctrl-C does, with the summary
    import ray
    import ray.data
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        kind = backend if backend != "auto" else ("cuda" if gpus else "numpy")
        if kind == "cuda" and not gpus:
            raise InputError("--backend cuda: the Ray cluster has no GPU")
        if backend == "auto" and kind == "numpy":
            log("squeezegen: the Ray cluster has no GPU: running on the numpy backend")
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        actors = gpus * per_gpu if kind == "cuda" else max(1, nodes)
        todo = [i for i in items
                if settings.overwrite or not is_done(out_dir, i.name, settings.scores)]
        summary = SegmentSummary(out_dir=str(out_dir), backend=f"ray/{kind}", networks=[],
                                 images=len(items), skipped=len(items) - len(todo))
        if not todo:
            return summary
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False                  # ours is on stderr
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        b = settings.batch
        ds = ray.data.from_items([{"path": i.path, "name": i.name} for i in todo],
                                 override_num_blocks=max(1, min(len(todo) // b, 4096)))
        ds = ds.map_batches(decode_batch, batch_size=b, fn_kwargs=dict(
            shape=settings.shape, mean=settings.mean.reshape(-1).tolist(),
            std=settings.std.reshape(-1).tolist(), resize=settings.resize))
        ds = ds.map_batches(
            Segmenter, batch_size=b, num_gpus=1 / per_gpu if kind == "cuda" else 0,
            num_cpus=1 if kind == "numpy" else None,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs=dict(model=graph, weights=weights, batch=b,
                                       precision=precision, backend=kind, raw=True))
        ds = ds.map_batches(write_batch, batch_size=b, fn_kwargs=dict(
            out_dir=str(out_dir), input_hw=settings.shape[1:], scores=settings.scores))
        bar = Progress(len(items), enabled=progress)
        counts: dict[str, int] = {}
        start = time.perf_counter()
        try:
            for rows in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for path, error, worker, net_s, dec_s, enc_s in zip(
                        rows["path"], rows["error"], rows["worker"], rows["network_s"],
                        rows["decode_s"], rows["encode_s"]):
                    summary.network_s += float(net_s)
                    summary.decode_s += float(dec_s)
                    if error:
                        summary.failed += 1
                        summary.failures.append((str(path), str(error)))
                        bar.write(f"squeezegen: skipped {printable(path)}: {printable(error)}")
                        continue
                    summary.written += 1
                    summary.encode_s += float(enc_s)
                    counts[str(worker)] = counts.get(str(worker), 0) + 1
                bar.update(summary.written, summary.failed, summary.skipped)
        except KeyboardInterrupt:
            summary.interrupted = True
        except ray.exceptions.RayError as exc:      # a failing actor: its error, in one line
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, SqueezegenError):
                raise cause from None
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
            raise SqueezegenError(f"the Ray job failed: {first}") from None
        summary.wall_s = time.perf_counter() - start
        summary.networks = sorted(counts)
        summary.per_network = [counts[k] for k in summary.networks]
        bar.close(summary.written, summary.failed, summary.skipped)
        return summary
    finally:
        if started:
            ray.shutdown()
