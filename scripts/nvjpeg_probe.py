#!/usr/bin/env python3
"""What nvJPEG's hardware decoder does with segment_bench's JPEGs on this GPU: decode-only
img/s (batches of 32, one or more decoders on their own streams and threads, full size and at
Pillow's draft scale for the model's 227 x 227 input) against Pillow on the CPU, and how far its
pixels are from Pillow's (full decode and draft decode).

    python3 scripts/nvjpeg_probe.py --images 2000 --out probe.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from segment_bench import make_images  # noqa: E402
from squeezegen.fsutil import write_text  # noqa: E402
from squeezegen.images import draft_scale, scaled_size  # noqa: E402
from squeezegen.runtime import nvjpeg  # noqa: E402
from squeezegen.runtime.device import current, driver  # noqa: E402

TARGET = (227, 227)


def decode_all(datas, infos, batch: int, draft: bool, decoders: int) -> dict:
    """Decode every image `decoders` ways at once (threads, each its decoder and stream);
    returns img/s and the seconds."""
    drv = driver()
    chunks = [list(range(i, min(i + batch, len(datas)))) for i in range(0, len(datas), batch)]

    def worker(part: list) -> None:
        with current(0):
            decs = [nvjpeg.JpegDecoder(batch), nvjpeg.JpegDecoder(batch)]   # one a buffer
            stream = drv.Stream()
            size = max(info.height * info.width * 3 for info in infos)
            bufs = [drv.mem_alloc(size * batch) for _ in range(2)]
            for k, chunk in enumerate(part):
                dec = decs[k % 2]          # its previous batch (k - 2) is done: see below
                scales = [draft_scale((infos[i].height, infos[i].width), TARGET)
                          if draft else 1 for i in chunk]
                dests = []
                for j, (i, s) in enumerate(zip(chunk, scales)):
                    h, w = scaled_size(infos[i].height, infos[i].width, s)
                    dests.append((int(bufs[k % 2]) + j * size, w * 3))
                dec.decode([datas[i] for i in chunk], dests, stream.handle, 3, scales)
                if k % 2:
                    stream.synchronize()
            stream.synchronize()
            for dec in decs:
                dec.close()
            for b in bufs:
                b.free()

    parts = [chunks[d::decoders] for d in range(decoders)]
    start = time.perf_counter()
    with ThreadPoolExecutor(decoders) as pool:
        list(pool.map(worker, parts))
    seconds = time.perf_counter() - start
    return {"img_s": round(len(datas) / seconds, 1), "seconds": round(seconds, 3)}


def compare(datas, infos, paths, count: int, flags: int) -> dict:
    """Max and mean |difference| of nvJPEG's pixels against Pillow's, full and draft."""
    from PIL import Image
    drv = driver()
    out = {"full": [], "draft": []}
    with current(0):
        dec = nvjpeg.JpegDecoder(1, flags)
        out["flags"] = dec.flags
        stream = drv.Stream()
        for i in range(count):
            info = infos[i]
            for mode in ("full", "draft"):
                s = draft_scale((info.height, info.width), TARGET) if mode == "draft" else 1
                h, w = scaled_size(info.height, info.width, s)
                d = drv.mem_alloc(h * w * 3)
                dec.decode([datas[i]], [(int(d), w * 3)], stream.handle, 3, [s])
                stream.synchronize()
                got = np.empty((h, w, 3), np.uint8)
                drv.memcpy_dtoh(got, d)
                d.free()
                with Image.open(paths[i]) as im:
                    if mode == "draft":
                        im.draft("RGB", (TARGET[1], TARGET[0]))
                    ref = np.asarray(im.convert("RGB"))
                if ref.shape != got.shape:
                    out[mode].append({"shape_gpu": got.shape, "shape_pil": ref.shape})
                    continue
                diff = np.abs(ref.astype(np.int16) - got)
                out[mode].append({"max": int(diff.max()), "mean": round(float(diff.mean()), 4),
                                  "scale": s})
        dec.close()
    return out


def cpu_decode(paths, n: int, draft: bool) -> float:
    from PIL import Image
    start = time.perf_counter()
    for p in paths[:n]:
        with Image.open(p) as im:
            if draft:
                im.draft("RGB", (TARGET[1], TARGET[0]))
            im.convert("RGB").load()
    return round(n / (time.perf_counter() - start), 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--folder", default="/tmp/segment_bench/images_probe")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    folder = Path(args.folder)
    made = make_images(folder, args.images, os.cpu_count() or 4)
    paths = sorted(str(q) for q in folder.rglob("*.jpg"))[:args.images]
    datas = [Path(q).read_bytes() for q in paths]
    report = {"images": len(paths), "made_s": round(made, 1),
              "mean_bytes": int(np.mean([len(d) for d in datas]))}
    why = nvjpeg.available()
    report["available"] = why or "yes"
    if why:
        print(json.dumps(report, indent=1))
        return 1
    with current(0):
        dec = nvjpeg.JpegDecoder(1)
        report["engines_cores"] = dec.engines()
        start = time.perf_counter()
        infos = [dec.info(d) for d in datas]
        report["info_us_per_image"] = round(1e6 * (time.perf_counter() - start) / len(datas), 1)
        dec.close()
    report["unsupported"] = sum(i is None for i in infos)
    keep = [k for k, i in enumerate(infos) if i is not None]
    datas, infos, paths = ([datas[k] for k in keep], [infos[k] for k in keep],
                           [paths[k] for k in keep])
    report["compare"] = compare(datas, infos, paths, 12, nvjpeg.UPSAMPLING_WITH_INTERPOLATION)
    report["compare_no_flags"] = compare(datas, infos, paths, 6, 0)
    print(json.dumps(report["compare"]), flush=True)
    print(json.dumps(report["compare_no_flags"]), flush=True)
    for draft in (False, True):
        for decoders in (1, 2, 4):
            key = f"{'draft' if draft else 'full'}_x{decoders}"
            report[key] = decode_all(datas, infos, 32, draft, decoders)
            print(key, report[key], flush=True)
    report["pil_one_thread_full_img_s"] = cpu_decode(paths, 300, False)
    report["pil_one_thread_draft_img_s"] = cpu_decode(paths, 300, True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
