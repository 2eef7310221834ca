"""Diagnose dependent launches on the GPU: for each wide random model, are serial launches
repeatable bit for bit, and which dependent-launch runs differ from them (how many elements, by
how much)? tests/test_dependent_launch.py failed on these models on an H100 at 91a21f5.

    source .device/env.sh && python3 scripts/dependent_launch_check.py [SEED ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import squeezegen  # noqa: E402
from squeezegen import parse_model  # noqa: E402
from helpers import random_input, random_weights  # noqa: E402
from random_models import random_model  # noqa: E402

RUNS = 10


def check(seed: int) -> str:
    g = parse_model(random_model(seed, wide=True))
    w, x = random_weights(g, seed), random_input(g, 3, seed)
    with squeezegen.compile(g, w, batch=3, dependent_launch=True) as net:
        net.set_dependent_launch(False)
        first = net(x)
        serial_differ = sum(not np.array_equal(net(x), first) for _ in range(RUNS))
        net.set_dependent_launch(True)
        differ = []
        for _ in range(RUNS):
            d = np.abs(net(x) - first)
            if d.any():
                differ.append(f"{int((d > 0).sum())} elements, max {float(d.max()):.3g}")
        return (f"seed {seed}: {len(net._launches)} kernels, split-K counters "
                f"{net.build.plan.counters_bytes} B; serial runs differing from the first "
                f"{serial_differ}/{RUNS}; dependent runs differing {len(differ)}/{RUNS} "
                f"{differ[:3]}")


if __name__ == "__main__":
    for seed in [int(s) for s in sys.argv[1:]] or [1, 2, 3, 4]:
        print(check(seed), flush=True)
