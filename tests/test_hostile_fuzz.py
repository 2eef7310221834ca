"""Mutation fuzzing of the front doors: a mangled model file or weights file must give a
SqueezegenError (one clear line in the CLI) or a valid result, never any other exception."""
from __future__ import annotations

import io
import re
import random
from pathlib import Path

import numpy as np
import pytest

from squeezegen import parse_model
from squeezegen.build import build
from squeezegen.errors import SqueezegenError
from squeezegen.weights import check_weights, load_weights

MODELS = sorted(Path("models").glob("*.yaml"))
TOKENS = ["-1", "0", "1", "3", "1e9", "4294967297", "2.5", "true", "null", "''", "x", "[1, 2, 3]",
          "[0, 0]", "{a: 1}", "input", "conv", "fire", "add", "&a x", "*a", "!!python/none",
          "'\\x00'", "\"conv1\"", "[conv1, conv1]", "-", ":", "{", "]", "#", "\t"]


def mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    kind = rng.randrange(6)
    i = rng.randrange(len(lines))
    if kind == 0:                                   # drop a line
        del lines[i]
    elif kind == 1:                                 # duplicate a line
        lines.insert(i, lines[i])
    elif kind == 2:                                 # swap two lines
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 3:                                 # replace a value after a colon
        parts = lines[i].split(": ")
        if len(parts) > 1:
            k = rng.randrange(1, len(parts))
            tail = parts[k].split(",", 1)
            parts[k] = rng.choice(TOKENS) + ("," + tail[1] if len(tail) > 1 else "")
            lines[i] = ": ".join(parts)
    elif kind == 4:                                 # delete a few characters
        if lines[i]:
            a = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:a] + lines[i][a + rng.randint(1, 4):]
    else:                                           # insert a token
        a = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:a] + rng.choice(TOKENS) + lines[i][a:]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_mangled_model_files_fail_cleanly(model):
    rng = random.Random(model.stem)
    original = model.read_text()
    outcomes = {"error": 0, "valid": 0}
    for _ in range(400):
        text = original
        for _ in range(rng.randint(1, 3)):
            text = mutate(text, rng)
        try:
            graph = parse_model(text, "mutant.yaml")
        except SqueezegenError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
            continue
        outcomes["valid"] += 1
        try:
            build(graph, 1)
        except SqueezegenError:
            pass
    assert outcomes["error"] > 100 and outcomes["valid"] > 5, outcomes


def test_corrupted_weight_files_fail_cleanly(tmp_path):
    graph = parse_model(Path("models/lenet.yaml").read_text(), "lenet.yaml")
    good = Path("models/weights/lenet_digits.npz").read_bytes()
    rng = random.Random(7)
    errors = 0
    for trial in range(150):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if trial % 5 == 0:
            data = data[: rng.randrange(len(data))]            # truncated
        path = tmp_path / f"w{trial}.npz"
        path.write_bytes(bytes(data))
        try:
            check_weights(graph, load_weights(path), str(path))
        except SqueezegenError as exc:
            assert "\n" not in str(exc)
            errors += 1
    assert errors > 20


def test_weights_with_wrong_dtypes_and_shapes_fail_cleanly(tmp_path):
    graph = parse_model(Path("models/lenet.yaml").read_text(), "lenet.yaml")
    good = load_weights("models/weights/lenet_digits.npz")
    variants = {
        "int": {**good, "ip2.bias": np.arange(10)},
        "complex": {**good, "ip2.bias": np.zeros(10, np.complex64)},
        "bool": {**good, "ip2.bias": np.ones(10, bool)},
        "scalar": {**good, "ip2.bias": np.float32(1)},
        "transposed": {**good, "ip1.weight": good["ip1.weight"].T},
        "strings": {**good, "ip2.bias": np.array(["a"] * 10)},
    }
    for name, weights in variants.items():
        buffer = io.BytesIO()
        np.savez(buffer, **weights)
        path = tmp_path / f"{name}.npz"
        path.write_bytes(buffer.getvalue())
        key = "ip1.weight" if name == "transposed" else "ip2.bias"
        with pytest.raises(SqueezegenError, match=re.escape(key)):
            check_weights(graph, load_weights(path), str(path))
