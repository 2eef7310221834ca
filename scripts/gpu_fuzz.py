"""Differential fuzzing on the GPU: many seeded random models, generated CUDA against the reference.

    source .device/env.sh && python3 scripts/gpu_fuzz.py --models 1000 --log $OUT/gpu-fuzz.log

Each model comes from `tests/random_models.py` (a tenth of them `wide`, so that the wide GEMM
tile and split-K are scheduled too) at batch 1, 2 or 3. Worker processes parse, build, compile
(nvcc, into the shared build cache) and run the NumPy reference in parallel; this process loads
each compiled network onto the GPU, runs it twice (the CUDA-graph replay must repeat exactly) and
compares with the reference: max abs error relative to the output's max magnitude <= 1e-4.
A failing model is shrunk to a minimal one (tests/test_fuzz.py's shrinker) and printed as YAML.
Exit status 0 only when every model passed.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TOL = 1e-4
WIDE_EVERY = 10          # every tenth model is a wide one


def model_case(index: int) -> tuple[str, int, bool]:
    """(YAML text, batch, wide) of the index-th fuzz model."""
    from random_models import random_model
    wide = index % WIDE_EVERY == WIDE_EVERY - 1
    seed = 700000 + index
    return random_model(seed, wide=wide), 1 + index % 3, wide


def prepare(index: int) -> dict:
    """Worker: build and compile the model (filling the cache), and run the reference."""
    from helpers import random_input, random_weights
    from squeezegen import parse_model
    from squeezegen.build import build
    from squeezegen.reference import ReferenceExecutor
    from squeezegen.runtime.compile import compile_cubin
    text, batch, wide = model_case(index)
    try:
        g = parse_model(text)
        result = build(g, batch)
        files = {k: v for k, v in result.output.files.items() if k.endswith((".cu", ".h"))}
        compile_cubin(files, f"{result.fused.name}.cu", os.environ.get("SG_ARCH", "sm_90"))
        w = random_weights(g, index)
        x = random_input(g, batch, seed=index)
        want = ReferenceExecutor(g, w)(x)
        want = want if isinstance(want, tuple) else (want,)
        kernels = len(result.output.manifest["kernels"])
        return {"index": index, "text": text, "batch": batch, "wide": wide, "w": w, "x": x,
                "want": want, "kernels": kernels, "error": None}
    except Exception:
        return {"index": index, "text": text, "batch": batch, "wide": wide,
                "error": "prepare: " + traceback.format_exc(limit=3).strip().splitlines()[-1]}


def rel_err(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def run_on_gpu(graph_or_text, w, x, want) -> float:
    """The worst relative error of the generated network's outputs; raises on a mismatch."""
    import squeezegen
    with squeezegen.compile(graph_or_text, w, batch=x.shape[0]) as net:
        got = net(x)
        again = net(x)
    got = got if isinstance(got, tuple) else (got,)
    again = again if isinstance(again, tuple) else (again,)
    worst = 0.0
    for g, a, r in zip(got, again, want):
        if g.shape != r.shape:
            raise AssertionError(f"shape {g.shape} != reference {r.shape}")
        if not np.array_equal(g, a):
            raise AssertionError("the second run differs from the first")
        worst = max(worst, rel_err(g, r))
    if not worst <= TOL:
        raise AssertionError(f"relative error {worst:.2e} > {TOL:.0e}")
    return worst


def still_fails(text: str, batch: int) -> bool:
    from helpers import random_input, random_weights
    from squeezegen import parse_model
    from squeezegen.reference import ReferenceExecutor
    g = parse_model(text)
    w, x = random_weights(g, 0), random_input(g, batch)
    want = ReferenceExecutor(g, w)(x)
    try:
        run_on_gpu(g, w, x, want if isinstance(want, tuple) else (want,))
    except AssertionError:
        return True
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0, help="first model index")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    ap.add_argument("--log", type=Path, help="also write the log here")
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args()
    log_file = open(args.log, "w") if args.log else None

    def log(line: str) -> None:
        print(line, flush=True)
        if log_file:
            log_file.write(line + "\n")
            log_file.flush()

    from squeezegen import parse_model
    from squeezegen.runtime.bench import environment
    env = environment()
    log(f"gpu fuzz: {args.models} random models from index {args.start}, {args.jobs} workers, "
        f"tolerance {TOL:.0e}")
    log("environment: " + json.dumps(env))
    started = time.perf_counter()
    passed, failures, kernels, worst_all = 0, [], 0, 0.0
    # spawn: the workers must not inherit this process's CUDA context
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        futures = [pool.submit(prepare, i) for i in range(args.start, args.start + args.models)]
        for fut in as_completed(futures):
            case = fut.result()
            tag = f"model {case['index']:5d} ({'wide' if case['wide'] else 'small'}, batch {case['batch']})"
            if case["error"]:
                failures.append(case)
                log(f"{tag}: FAIL {case['error']}")
                continue
            try:
                worst = run_on_gpu(parse_model(case["text"]), case["w"], case["x"], case["want"])
            except Exception as exc:
                case["error"] = f"{type(exc).__name__}: {exc}"
                failures.append(case)
                log(f"{tag}: FAIL {case['error']}")
                continue
            passed += 1
            kernels += case["kernels"]
            worst_all = max(worst_all, worst)
            log(f"{tag}: ok, {case['kernels']} kernels, rel err {worst:.2e}")
    for case in failures[:5]:
        log(f"--- model {case['index']} failed: {case['error']}")
        try:
            from test_fuzz import shrink
            log(shrink(case["text"], lambda t: still_fails(t, case["batch"])))
        except Exception as exc:
            log(f"(could not shrink: {exc})\n{case['text']}")
    summary = {"models": args.models, "passed": passed, "failed": len(failures),
               "kernels": kernels, "worst_rel_err": worst_all, "tolerance": TOL,
               "seconds": round(time.perf_counter() - started, 1), "environment": env,
               "failed_indices": sorted(c["index"] for c in failures)}
    log("summary: " + json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
