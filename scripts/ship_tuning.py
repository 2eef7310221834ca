"""Copy the tuning choices of one GPU from the tuning cache into the database shipped in the
package (`squeezegen/data/tuning.json`), keeping only those timed with the current kernel code
(the digest in their key), so that `squeezegen.compile(..., tune=True)` on a fresh machine with
that GPU finds them without timing anything.

    source .device/env.sh && python3 -m squeezegen bench models/squeezeseg.yaml --weights W \\
        --batch 1 32 128 && python3 scripts/ship_tuning.py --gpu "NVIDIA H200" --cache-out $OUT/t.json
    # then, here: python3 scripts/ship_tuning.py --gpu "NVIDIA H200" --from t.json
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
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
