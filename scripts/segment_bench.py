#!/usr/bin/env python3
"""End-to-end `squeezegen segment` against the network alone (issue 18's measurement).

    python3 scripts/segment_bench.py --images 20000 --batch 32 --out $OUT/segment.json [--ray]

On the lent H200 (carry .device and .device-ray, see ../shared/device-ray/README.md):
    source .device/env.sh && source .device-ray/env.sh && \
        python3 scripts/segment_bench.py --images 20000 --batch 32 --out $OUT/segment.json --ray

1. Generates N JPEGs of mixed sizes (320x240 to 1024x768: smooth shapes, gradients and a little
   noise, so they decode and compress like photos) into DIR/images (kept and reused if present).
2. Times the network alone at the same batch and precision: CUDA-graph replay with the data on
   the GPU (CUDA events, as `squeezegen bench`), net(x) from host memory (adds the copies), and
   as `segment` runs it (input in, masks made on the GPU at the sample's sizes, masks out;
   from and to page-locked memory as segment's shared batches are, and from pageable memory).
3. Runs `squeezegen segment` (the CLI, in a subprocess) on the folder, with --resize-on and
   --overlap and --jpeg-on as given (segment's defaults where not); with --baseline, again with
   the JPEGs decoded by nvJPEG (`--jpeg-on auto`) and with the CPU resizing and no overlap
   (`--resize-on cpu --no-overlap`); with --threads, again
   decoding in threads rather than processes; with --ray, again through `--ray auto`.
4. Times one image's stages on one thread (decode+resize, decode alone for the GPU to resize;
   the PNG of the mask the GPU made, or on numpy the scores back at the original size + PNG)
   on a sample, to say which stage limits the pipeline.
It writes a JSON with img/s of each, the ratio end-to-end / network, the GPU busy fraction and
where the time goes. `--backend numpy` (with a small model and a few images) smoke-tests it on
a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import squeezegen  # noqa: E402
from squeezegen.fsutil import write_text  # noqa: E402
from squeezegen.runtime.device import page_aligned  # noqa: E402


def _make_image(args) -> None:
    path, seed = args
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    w = int(rng.integers(320, 1025))
    h = int(np.clip(round(w * rng.uniform(0.6, 0.9)), 240, 768))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(-1, 1, 2)
    base = np.stack([128 + 100 * np.sin(a * xx / 97 + c) * np.cos(b * yy / 83 + c)
                     for c in rng.uniform(0, 6, 3)], axis=2)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    pixels = np.asarray(im, np.float32) + rng.normal(0, 4, (h, w, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_images(folder: Path, n: int, workers: int) -> float:
    """N JPEGs in folder/NNN/NNNNNN.jpg (1000 a folder); returns the seconds it took."""
    start = time.perf_counter()
    todo = []
    for i in range(n):
        path = folder / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            todo.append((str(path), i))
    if todo:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_make_image, todo, chunksize=64))
    return time.perf_counter() - start


def time_network(model, weights, batch: int, precision: str, backend: str, iters: int,
                 sizes: list, decoded: list | None = None) -> dict:
    """The network alone: img/s with the data on the GPU (graph replay, CUDA events), from
    host memory (net(x): copies in and out included), and as `segment` runs it on a GPU
    (input in, forward, masks at the original `sizes` made on the GPU, masks out), the input
    copied in or (`decoded`: the sample's decoded pixels) made on the GPU from them."""
    graph = squeezegen.load_model(model)
    x = np.random.default_rng(0).uniform(-1, 1, (batch,) + graph.input.type.shape)
    x = x.astype(np.float32)
    if backend == "numpy":
        run = squeezegen.reference(graph, weights)
        run(x)
        start = time.perf_counter()
        for _ in range(max(1, iters // 10)):
            run(x)
        ms = (time.perf_counter() - start) * 1e3 / max(1, iters // 10)
        return {"ms_per_batch": ms, "img_s": batch / ms * 1e3, "host_ms_per_batch": ms,
                "host_img_s": batch / ms * 1e3, "transfer_ms_per_batch": 0.0}
    from squeezegen.runtime.bench import time_network as replay_ms
    with squeezegen.compile(graph, weights, batch=batch, precision=precision) as net:
        ms = replay_ms(net, iters)
        for _ in range(5):
            net(x)
        start = time.perf_counter()
        for _ in range(iters):
            net(x)
        host_ms = (time.perf_counter() - start) * 1e3 / iters
        from squeezegen.runtime.device import PinnedHost
        from squeezegen.runtime.masks import ClassMasks
        masks = ClassMasks(net)
        sizes = [sizes[i % len(sizes)] for i in range(batch)]
        pageable_ms = _ms_per_call(lambda: masks(x, sizes), iters)
        # as segment runs it: the input and the masks in page-locked memory, no NaN scan
        x_locked = page_aligned(x.shape, np.float32)
        x_locked[:] = x
        out = page_aligned((sum(h * w for h, w in sizes),), np.uint8)
        pins = [PinnedHost(x_locked, net.device), PinnedHost(out, net.device)]
        try:
            masks_ms = _ms_per_call(lambda: masks(x_locked, sizes, out=out, check_values=False),
                                    iters)
            resize_ms = _time_gpu_resize(net, masks, decoded, batch, sizes, out, iters) \
                if decoded else None
        finally:
            for pin in pins:
                pin.close()
    gpu_resize = {} if resize_ms is None else {
        "gpu_resize_masks_ms_per_batch": resize_ms,
        "gpu_resize_masks_img_s": batch / resize_ms * 1e3}
    return {**gpu_resize, "ms_per_batch": ms, "img_s": batch / ms * 1e3,
            "host_ms_per_batch": host_ms,
            "host_img_s": batch / host_ms * 1e3, "transfer_ms_per_batch": host_ms - ms,
            "masks_pageable_ms_per_batch": pageable_ms,
            "masks_pageable_img_s": batch / pageable_ms * 1e3,
            "masks_ms_per_batch": masks_ms, "masks_img_s": batch / masks_ms * 1e3}


def _time_gpu_resize(net, masks, decoded: list, batch: int, sizes: list, out, iters: int):
    """ms per batch as segment runs it with the GPU resizing: each image's decoded pixels in
    a page-locked byte slot, the input made on the GPU, the masks out."""
    from squeezegen.images import check_normalisation
    from squeezegen.runtime.device import PinnedHost
    from squeezegen.runtime.image_inputs import ImageInputs
    from squeezegen.segmentation.slots import fits, slot_bytes
    shape = tuple(net.graph.input.type.shape)
    mean, std = check_normalisation(shape[0], [128.0], [1.0])
    slots = page_aligned((batch, slot_bytes(shape)), np.uint8)
    images, sizes = [], []
    for i in range(batch):
        pixels, size = decoded[i % len(decoded)]
        sizes.append(size)
        if pixels is None or not fits(pixels.shape[:2], shape):
            images.append(None)                          # as a worker: the CPU's input
            continue
        slots[i, :pixels.size] = pixels.reshape(-1)
        images.append(pixels.shape[:2] + ((0, 0) + shape[1:],))
    inputs = ImageInputs(net, mean, std)
    pin = PinnedHost(slots, net.device)
    try:
        return _ms_per_call(lambda: masks(None, sizes, out=out,
                                          make_input=inputs.queue(slots, images)), iters)
    finally:
        pin.close()
        inputs.close()


def _ms_per_call(call, iters: int) -> float:
    for _ in range(5):
        call()
    start = time.perf_counter()
    for _ in range(iters):
        call()
    return (time.perf_counter() - start) * 1e3 / iters


def stage_costs(model, weights, images: list[Path], batch: int, precision: str, backend: str,
                resize: str = "stretch") -> dict:
    """One thread's milliseconds per image on a sample: decode + resize (with the JPEG draft),
    decode alone as the workers do when the GPU resizes (`read_decoded`: the images too large
    for a slot still resized on the CPU), and the scores back at the original size + the PNG,
    from the network's own scores for the sample (a noisy output has more class boundaries to
    interpolate than a smooth one)."""
    from squeezegen.images import (check_normalisation, classes_png, fit_box, gpu_jpeg,
                                   read_decoded, read_pixels, save_classes)
    from squeezegen.segmentation.slots import SLOT_PIXELS
    from squeezegen.segmentation.inputs import output_path
    from squeezegen.segmentation.outputs import PNG_LEVEL, write_outputs
    graph = squeezegen.load_model(model)
    c, h, w = graph.input.type.shape
    mean, std = check_normalisation(c, [128.0], [1.0])
    decoded = []
    start = time.perf_counter()
    for p in images:
        pixels, size = read_pixels(p, c, (h, w), resize, draft=True)
        decoded.append((pixels, size))
    decode_ms = (time.perf_counter() - start) * 1e3 / len(images)
    raw = []
    start = time.perf_counter()
    for p in images:
        pixels, size, is_decoded = read_decoded(p, c, (h, w), resize, SLOT_PIXELS * h * w)
        raw.append((pixels if is_decoded else None, size))
    decode_only_ms = (time.perf_counter() - start) * 1e3 / len(images)
    start = time.perf_counter()
    jpeg_bytes = [gpu_jpeg(p, (h, w), resize, SLOT_PIXELS * c * h * w) for p in images]
    read_jpeg_ms = (time.perf_counter() - start) * 1e3 / len(images)
    boxes = [fit_box(size, (h, w), resize) for _, size in decoded]
    x = np.zeros((len(images), c, h, w), np.float32)
    for i, ((pixels, _), (top, left, bh, bw)) in enumerate(zip(decoded, boxes)):
        x[i, :, top:top + bh, left:left + bw] = (pixels.transpose(2, 0, 1) - mean) / std
    sizes = [size for _, size in decoded]
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "numpy":               # the encoders resize the scores, then the PNG
            scores = squeezegen.reference(graph, weights)(x)
            start = time.perf_counter()
            for i, size in enumerate(sizes):
                write_outputs(tmp, f"{i}.jpg", scores[i], size, boxes[i], (h, w))
        else:                                # the GPU made the masks: the PNG alone
            from squeezegen.runtime.masks import ClassMasks
            with squeezegen.compile(graph, weights, batch=batch, precision=precision) as net:
                masks = ClassMasks(net)
                classes = [m for i in range(0, len(x), batch)
                           for m in masks(x[i:i + batch], sizes[i:i + batch],
                                          boxes[i:i + batch])]
            start = time.perf_counter()
            for mask in classes:                         # the PNG's bytes alone
                classes_png(mask, PNG_LEVEL)
            png_ms = (time.perf_counter() - start) * 1e3 / len(images)
            start = time.perf_counter()
            for i, mask in enumerate(classes):
                save_classes(output_path(tmp, f"{i}.jpg"), mask, compress_level=PNG_LEVEL)
        encode_ms = (time.perf_counter() - start) * 1e3 / len(images)
    if backend != "numpy":
        extra = {"png_bytes_ms": png_ms,
                 "mask_pixels_mean": float(np.mean([m.size for m in classes]))}
    else:
        extra = {}
    return {**extra, "decode_ms": decode_ms, "decode_for_gpu_resize_ms": decode_only_ms,
            "read_jpeg_for_gpu_ms": read_jpeg_ms,
            "jpegs_for_gpu": sum(j is not None for j in jpeg_bytes) / len(jpeg_bytes),
            "decoded_fit_slots": sum(p is not None for p, _ in raw) / len(raw),
            "encode_ms": encode_ms, "sample": len(images), "sizes": sizes, "decoded": raw}


def run_segment(model, weights, folder: Path, out: Path, args, ray: bool,
                decoders: str = "auto", resize_on: str | None = None,
                overlap: bool | None = None, jpeg_on: str | None = None) -> dict:
    if out.exists():
        shutil.rmtree(out)
    summary = out.parent / (out.name + ".summary.json")
    cmd = [sys.executable, "-m", "squeezegen", "segment", str(model), "--weights", str(weights),
           str(folder), "-o", str(out), "--batch", str(args.batch), "--precision",
           args.precision, "--backend", args.backend, "--quiet", "--json", str(summary)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.gpus:
        cmd += ["--gpus", args.gpus]
    if args.per_gpu:
        cmd += ["--per-gpu", str(args.per_gpu)]
    if ray:
        cmd += ["--ray", "auto"]
    else:
        cmd += ["--decoders", decoders]
        if resize_on is not None:
            cmd += ["--resize-on", resize_on]
        if overlap is not None:
            cmd += ["--overlap" if overlap else "--no-overlap"]
        if jpeg_on is not None:
            cmd += ["--jpeg-on", jpeg_on]
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"segment failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(summary.read_text())
    result["process_wall_s"] = took
    result["stdout"] = proc.stdout.strip()
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def limit(net: dict, costs: dict, workers: int, gpus: int, gpu_resize: bool = False,
          gpu_jpeg: bool = False) -> str:
    """Which stage bounds the end-to-end rate (each stage's capacity in img/s; decode and
    encode share the CPUs, so together they bound it too). With the JPEGs decoded on the
    GPU, the CPUs' "decode" is reading the files' bytes and headers."""
    decode = costs["read_jpeg_for_gpu_ms" if gpu_jpeg else
                   "decode_for_gpu_resize_ms" if gpu_resize else "decode_ms"]
    network = net.get("gpu_resize_masks_img_s" if gpu_resize else "masks_img_s",
                      net.get("masks_img_s", net["host_img_s"]))
    capacity = {"decode": workers * 1e3 / max(1e-9, decode),
                "encode": workers * 1e3 / max(1e-9, costs["encode_ms"]),
                "decode and encode on the same CPUs":
                    workers * 1e3 / max(1e-9, decode + costs["encode_ms"]),
                "network with copies": network * gpus}
    slowest = min(capacity, key=capacity.get)
    return (f"{slowest} (capacities with {workers} threads each: "
            + ", ".join(f"{k} {v:,.0f} img/s" for k, v in capacity.items()) + ")")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16"])
    p.add_argument("--model", default=str(ROOT / "models/squeezeseg.yaml"))
    p.add_argument("--weights", help=".npz [He-initialised, seed 0]")
    p.add_argument("--backend", default="cuda", choices=["cuda", "numpy"])
    p.add_argument("--gpus", help="segment's --gpus [all]")
    p.add_argument("--workers", type=int, help="segment's --workers [the CPU count]")
    p.add_argument("--per-gpu", type=int, help="segment's --per-gpu [1]")
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "segment_bench"),
                   help="where the images (kept) and outputs (removed) go")
    p.add_argument("--iters", type=int, default=50, help="timed network runs [50]")
    p.add_argument("--ray", action="store_true", help="also run through --ray auto")
    p.add_argument("--threads", action="store_true",
                   help="also run with --decoders threads (the default: processes on a GPU)")
    p.add_argument("--resize-on", choices=["cpu", "gpu", "auto"],
                   help="segment's --resize-on [segment's default]")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="segment's --overlap/--no-overlap [segment's default]")
    p.add_argument("--jpeg-on", choices=["cpu", "gpu", "auto"],
                   help="segment's --jpeg-on [segment's default]")
    p.add_argument("--baseline", action="store_true",
                   help="also run with --jpeg-on auto (nvJPEG decoding), and with --resize-on "
                        "cpu --no-overlap (the CPUs resizing, one batch in flight)")
    p.add_argument("--keep", action="store_true", help="keep the output PNGs")
    p.add_argument("--out", required=True, help="the JSON to write")
    args = p.parse_args()

    folder = Path(args.dir)
    images = folder / f"images_{args.images}"
    workers = args.workers or os.cpu_count() or 4
    made_s = make_images(images, args.images, workers)
    print(f"{args.images} JPEGs in {images} ({made_s:.1f} s to make)", flush=True)
    weights = args.weights
    if weights is None:
        weights = folder / "weights.npz"
        graph = squeezegen.load_model(args.model)
        squeezegen.save_weights(weights, squeezegen.init_weights(graph, 0))

    sample = sorted(images.rglob("*.jpg"))[:200 if args.backend == "cuda" else 20]
    costs = stage_costs(args.model, str(weights), sample, args.batch, args.precision,
                        args.backend)
    net = time_network(args.model, str(weights), args.batch, args.precision, args.backend,
                       args.iters, costs.pop("sizes"), costs.pop("decoded"))
    print(f"network alone: {net['img_s']:,.0f} img/s ({net['ms_per_batch']:.3f} ms/batch); "
          f"from host memory: {net['host_img_s']:,.0f} img/s" +
          (f"; with the masks made on the GPU: {net['masks_img_s']:,.0f} img/s from "
           f"page-locked memory ({net['masks_pageable_img_s']:,.0f} from pageable)"
           if "masks_img_s" in net else "") +
          (f"; the input made on the GPU from decoded images: "
           f"{net['gpu_resize_masks_img_s']:,.0f} img/s" if "gpu_resize_masks_img_s" in net
           else ""), flush=True)
    print(f"one thread: decode + resize {costs['decode_ms']:.2f} ms/img, decode alone "
          f"{costs['decode_for_gpu_resize_ms']:.2f} ms/img ({costs['decoded_fit_slots']:.0%} "
          f"fit a slot), a JPEG's bytes for the GPU {costs['read_jpeg_for_gpu_ms']:.2f} ms/img "
          f"({costs['jpegs_for_gpu']:.0%} go), encode {costs['encode_ms']:.2f} ms/img" +
          (f" (the PNG's bytes {costs['png_bytes_ms']:.2f} ms, the rest writing the file)"
           if "png_bytes_ms" in costs else ""), flush=True)

    result = {"images": args.images, "batch": args.batch, "precision": args.precision,
              "model": args.model, "backend": args.backend, "workers": workers,
              "cpus": os.cpu_count(), "network": net, "per_image_ms_one_thread": costs}
    if args.backend == "cuda":
        from squeezegen.runtime.bench import environment
        result["environment"] = environment()
    runs = {"segment": (False, "auto", args.resize_on, args.overlap, args.jpeg_on)}
    if args.baseline:
        runs["segment_jpeg_on_gpu"] = (False, "auto", None, None, "auto")
        runs["segment_baseline"] = (False, "auto", "cpu", False, None)
    if args.threads:
        runs["segment_threads"] = (False, "threads", "cpu", False, None)
    if args.ray:
        runs["segment_ray"] = (True, "auto", None, None, None)
    for name, (ray, decoders, resize_on, overlap, jpeg_on) in runs.items():
        e2e = run_segment(args.model, weights, images, folder / f"out_{name}", args, ray,
                          decoders, resize_on, overlap, jpeg_on)
        gpu_resize = e2e.get("resized_on") == "gpu"
        n_nets = max(1, len({w.split("#")[0] for w in e2e["networks"]}))   # GPUs, not networks
        result[name] = {
            "img_s": e2e["images_per_s"], "summary": e2e,
            "ratio_to_network": e2e["images_per_s"] / (net["img_s"] * n_nets),
            "gpu_resize": gpu_resize, "overlap": e2e.get("overlapped", overlap),
            "gpu_busy": e2e["network_busy"],
            "limited_by": limit(net, costs, workers, n_nets, gpu_resize,
                                e2e.get("jpegs_on") == "gpu"),
            "thread_seconds": {k: e2e[k] for k in ("decode_s", "network_s", "encode_s")}}
        print(f"{name}: {e2e['images_per_s']:,.0f} img/s = "
              f"{result[name]['ratio_to_network']:.0%} of the network alone on {n_nets} "
              f"network(s); busy {e2e['network_busy']:.0%}; limited by "
              f"{result[name]['limited_by']}", flush=True)
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
