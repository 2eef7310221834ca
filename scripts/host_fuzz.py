"""Differential fuzzing without a GPU: gpu_fuzz's random models, their generated CUDA run on the
host (tests/host_kernels.py: g++, each block's threads as fibers meeting at each barrier, loads
bounds-checked, stores guarded) against the NumPy reference, in fp32.

    python3 scripts/host_fuzz.py --models 1000 --jobs 2 --json host-fuzz.json

The models are gpu_fuzz's (the same indices give the same models, a tenth of them wide, batch
1 to 3), so a failure here is one the GPU would show too; what the host cannot show is a race
between threads or anything of the GPU's own (memory model, launch limits). Pass: max abs error
relative to the output's max magnitude <= 1e-4, no stray load, no NaN. Exit status 0 only when
every model passed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from gpu_fuzz import TOL, model_case          # noqa: E402


def check(index: int) -> dict:
    """Worker: one model, built, run on the host and compared with the reference."""
    from helpers import random_input, random_weights
    from host_kernels import run_on_host
    from squeezegen import parse_model
    from squeezegen.reference import ReferenceExecutor
    text, batch, wide = model_case(index)
    g = parse_model(text)
    w, x = random_weights(g, index), random_input(g, batch, seed=index)
    want = ReferenceExecutor(g, w)(x)
    want = want if isinstance(want, tuple) else (want,)
    with tempfile.TemporaryDirectory(prefix="host_fuzz") as folder:
        got, stray, result = run_on_host(g, w, x, Path(folder))
    errs = [float(np.abs(a.reshape(b.shape) - b).max() / max(float(np.abs(b).max()), 1e-30))
            for a, b in zip(got, want)]
    ok = stray == 0 and all(e <= TOL for e in errs) and not any(np.isnan(a).any() for a in got)
    return {"index": index, "ok": ok, "error": max(errs), "stray": stray, "wide": wide,
            "kernels": len(result.output.kernels), **({} if ok else {"model": text})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--start", type=int, default=0, help="the first model's index [0]")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for row in pool.map(check, range(args.start, args.start + args.models)):
            rows.append(row)
            print(f"model {row['index']}: {'ok' if row['ok'] else 'FAIL'} error "
                  f"{row['error']:.1e}, {row['kernels']} kernels"
                  + ("" if row["ok"] else f", {row['stray']} stray loads\n{row['model']}"),
                  flush=True)
    failed = [r["index"] for r in rows if not r["ok"]]
    summary = {"models": len(rows), "failed": failed, "worst_error": max(r["error"] for r in rows),
               "kernels": sum(r["kernels"] for r in rows), "seconds": round(time.time() - t0, 1),
               "start": args.start}
    print("summary: " + json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
