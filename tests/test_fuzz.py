"""Differential fuzzing (in the NNSmith spirit): hundreds of seeded random models through the
reference, the fused/planned executor, PyTorch and nvcc. A failure is shrunk to a minimal model
(layers removed one at a time while it still fails) and printed as YAML to paste into a test."""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from squeezegen import parse_model
from squeezegen.build import build, write_outputs
from squeezegen.codegen.schedule import ConvTile, schedule, scratch_needs
from squeezegen.errors import SqueezegenError
from squeezegen.passes import run_passes
from squeezegen.passes.plan_memory import plan_memory
from squeezegen.reference import ReferenceExecutor
from squeezegen.reference.planned import PlannedExecutor
from helpers import random_input, random_weights, torch_module, torch_run
from random_models import random_model

MODELS = 300
TORCH_MODELS = 100
NVCC_MODELS = 16


def _outputs(y):
    return y if isinstance(y, tuple) else (y,)


def _rel(a, b):
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def _without_layer(lines: list[str], i: int) -> list[str]:
    """The model without layer line `i`, whose readers now read what it read (its `input`, or
    the layer before it)."""
    import re
    name = re.match(r"  - \{name: (\w+)", lines[i]).group(1)
    explicit = re.search(r"[{ ]input: (\w+)", lines[i])
    before = [re.match(r"  - \{name: (\w+)", ln).group(1) for ln in lines[:i]
              if ln.startswith("  - {name:")]
    source = explicit.group(1) if explicit else (before[-1] if before else "input")
    rest = lines[:i] + lines[i + 1:]
    return [re.sub(rf"\b{name}\b", source, ln) if ln.startswith("  - {name:") else ln
            for ln in rest]


def shrink(text: str, fails) -> str:
    """Remove layer lines one at a time (their readers read what they read; the output list
    fixed) while `fails(text)` holds."""
    lines = text.splitlines()
    changed = True
    while changed:
        changed = False
        layer_rows = [i for i, ln in enumerate(lines) if ln.startswith("  - {name:")]
        for i in reversed(layer_rows):
            candidate = _without_layer(lines, i)
            for fixed in _with_valid_outputs(candidate):
                try:
                    parse_model(fixed)
                except SqueezegenError:
                    continue
                if fails(fixed):
                    lines, changed = fixed.splitlines(), True
                    break
            if changed:
                break
    return "\n".join(lines) + "\n"


def _with_valid_outputs(lines: list[str]):
    """Variants of a model whose output line names every layer nothing else reads."""
    import re
    names = [re.match(r"  - \{name: (\w+)", ln).group(1) for ln in lines if ln.startswith("  - {name:")]
    body = [ln for ln in lines if not ln.startswith("output:")]
    read = set()
    for ln in body:
        for m in re.finditer(r"(?:input|inputs): \[?([\w, ]+)\]?", ln):
            read.update(x.strip() for x in m.group(1).split(","))
    dangling = [n for n in names if n not in read] or names[-1:]
    if not names:
        return
    yield "\n".join(body + [f"output: [{', '.join(dangling)}]"]) + "\n"


def _planned_matches(text: str, batch: int | None = None) -> bool:
    g = parse_model(text)
    fused = run_passes(g)
    batch = batch or 1 + len(text) % 3
    tiles = schedule(fused, batch)
    plan = plan_memory(fused, batch, tiles, scratch_needs(fused, batch, tiles))
    w = random_weights(g, 0)
    x = random_input(g, batch)
    want = _outputs(ReferenceExecutor(fused, w)(x))
    got = _outputs(PlannedExecutor(fused, plan, w)(x))
    # the passes keep the function (folding a BatchNorm rounds the weights once more) ...
    original = _outputs(ReferenceExecutor(g, w)(x))
    kept = all(np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1e-30)
               for a, b in zip(want, original))
    # ... and the memory plan keeps every value exactly
    return kept and len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


def fuzz(seeds, matches, what: str) -> None:
    """Check `matches(text)` on the random model of every seed; shrink and show the failures."""
    failures = [shrink(text, lambda t: not matches(t))
                for text in (random_model(seed) for seed in seeds) if not matches(text)]
    print(f"\nfuzz: {len(seeds)} random models, {what}")
    assert not failures, "minimal failing model(s):\n" + "\n---\n".join(failures[:3])


def test_planned_executor_on_hundreds_of_random_models():
    fuzz(range(20000, 20000 + MODELS), _planned_matches, "passes + planner + planned executor")


def test_planned_executor_on_wide_random_models():
    """Models with many channels at batch 1 and 32: split-K and the wide tile get scheduled, and
    the planner's scratch for split-K is poisoned by the planned executor."""
    tiles_seen = set()
    for seed in range(12):
        text = random_model(50000 + seed, wide=True)
        for batch in (1, 32):
            fused = run_passes(parse_model(text))
            tiles_seen |= {("wide" if t.wide else "split" if t.splitk > 1 else "narrow")
                           for t in schedule(fused, batch).values() if isinstance(t, ConvTile)}
            assert _planned_matches(text, batch), shrink(text, lambda t: not _planned_matches(t, batch))
    assert tiles_seen == {"wide", "split", "narrow"}, tiles_seen


def _torch_matches(text: str) -> bool:
    g = parse_model(text)
    w = random_weights(g, 1)
    x = random_input(g, 3)
    want = _outputs(torch_run(torch_module(g, w), x))
    got = _outputs(ReferenceExecutor(g, w)(x))
    # float32 sums in another order: relative to the output's magnitude, but at least 0.1 (a
    # linear head summing thousands of terms to almost nothing is off by ~1e-7 absolute)
    return all(a.shape == b.shape and
               np.abs(a.astype(np.float64) - b).max() <= 1e-5 * max(np.abs(b).max(), 0.1)
               for a, b in zip(got, want))


def test_reference_matches_torch_on_random_models():
    pytest.importorskip("torch")
    fuzz(range(30000, 30000 + TORCH_MODELS), _torch_matches, "reference vs PyTorch")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_random_models_generate_code_that_compiles(tmp_path):
    def compile_one(case):
        name, text, batch = case
        result = build(parse_model(text, f"{name}.yaml"), batch)
        folder = tmp_path / name
        write_outputs(result.output, folder)
        source = next(folder.glob("*.cu"))
        proc = subprocess.run(["nvcc", "-arch=sm_90", "-Werror", "all-warnings", "-c", str(source),
                               "-o", str(source.with_suffix(".o"))], capture_output=True, text=True)
        return name, proc.returncode, proc.stderr, text
    cases = [(f"fuzz{s}", random_model(40000 + s), 1 + s % 4) for s in range(NVCC_MODELS)]
    cases += [(f"wide{s}", random_model(50000 + s, wide=True), 32) for s in range(4)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(compile_one, cases))
    bad = [(name, err, text) for name, rc, err, text in results if rc != 0]
    assert not bad, f"{bad[0][0]}:\n{bad[0][2]}\n{bad[0][1][:2000]}"


def test_shrinker_finds_a_minimal_model():
    """The shrinker itself: a 'bug' that needs a deconv shrinks to (nearly) just the deconv."""
    text = random_model(20000)
    for seed in range(20000, 20400):
        text = random_model(seed)
        if "op: deconv" in text and text.count("  - {name:") >= 4:
            break

    def fails(t):
        return "op: deconv" in t
    small = shrink(text, fails)
    assert "op: deconv" in small
    assert small.count("  - {name:") <= 2 < text.count("  - {name:")   # the deconv and its input
    parse_model(small)
