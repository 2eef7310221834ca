"""Copy the tuning choices of one GPU from the tuning cache into the database shipped in the
package (`squeezegen/data/tuning.json`), keeping only those timed with the current kernel code
(the digest in their key), so that `squeezegen.compile(..., tune=True)` on a fresh machine with
that GPU finds them without timing anything.

    source .device/env.sh && python3 -m squeezegen bench models/squeezeseg.yaml --weights W \\
        --batch 1 32 128 && python3 scripts/ship_tuning.py --gpu "NVIDIA H200" --cache-out $OUT/t.json
    # then, here: python3 scripts/ship_tuning.py --gpu "NVIDIA H200" --from t.json

`--rekey OLD_DIGEST` moves a GPU's shipped choices from an older kernels' digest to the current
one, without timing anything; use it only where `scripts/candidate_code.py --compare` shows that
every candidate round of the model renders byte-identical code at both (a change elsewhere in
the kernel sources, such as a new op, changes the digest but not the code a tuned tile runs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from squeezegen.fsutil import atomic_write                                   # noqa: E402
from squeezegen.runtime.autotune import (CACHE_FORMAT, kernels_digest, load_tuning,  # noqa: E402
                                         shipped_tuning_file, tuning_file)


def current_entries(entries: dict, gpu: str) -> dict:
    """The entries of `gpu` timed with the current kernel code."""
    prefix = f"{gpu}|kernels {kernels_digest()}|"
    return {k: v for k, v in entries.items() if k.startswith(prefix)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", required=True, help="the GPU's name as the driver reports it")
    ap.add_argument("--from", dest="source", help="a tuning.json to read [the tuning cache]")
    ap.add_argument("--cache-out", help="only copy the cache's current entries to this file")
    ap.add_argument("--rekey", metavar="OLD_DIGEST",
                    help="move the shipped choices of --gpu timed at OLD_DIGEST to the current "
                         "digest (after candidate_code.py --compare shows the same code)")
    args = ap.parse_args(argv)
    if args.rekey:
        return rekey(args.gpu, args.rekey)
    entries = current_entries(load_tuning(Path(args.source) if args.source else tuning_file()),
                              args.gpu)
    out = Path(args.cache_out) if args.cache_out else shipped_tuning_file()
    kept = {} if args.cache_out else {k: v for k, v in load_tuning(out).items()
                                      if not k.startswith(f"{args.gpu}|")}
    merged = dict(sorted({**kept, **entries}.items()))
    text = json.dumps({"format": CACHE_FORMAT, "entries": merged}, indent=1) + "\n"
    atomic_write(out, lambda f: f.write(text.encode()))
    print(f"wrote {out}: {len(entries)} choices for {args.gpu} (kernels {kernels_digest()}), "
          f"{len(merged)} in all")
    return 0


def rekey(gpu: str, old: str) -> int:
    out = shipped_tuning_file()
    entries = load_tuning(out)
    prefix, current = f"{gpu}|kernels {old}|", f"{gpu}|kernels {kernels_digest()}|"
    moved = {current + k[len(prefix):]: v for k, v in entries.items() if k.startswith(prefix)}
    if not moved:
        print(f"no choices for {gpu} at kernels {old} in {out}", file=sys.stderr)
        return 1
    kept = {k: v for k, v in entries.items() if not k.startswith(prefix)}
    merged = dict(sorted({**moved, **kept}.items()))     # a choice timed at the current digest wins
    text = json.dumps({"format": CACHE_FORMAT, "entries": merged}, indent=1) + "\n"
    atomic_write(out, lambda f: f.write(text.encode()))
    print(f"wrote {out}: {len(moved)} choices for {gpu} moved from kernels {old} to "
          f"{kernels_digest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
