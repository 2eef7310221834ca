"""Make models/data/digits28.npz: scikit-learn's real handwritten digits, resized to LeNet's 28x28.

    .venv/bin/pip install scikit-learn      # only to run this script; nothing else needs it
    .venv/bin/python scripts/make_digits.py

Source: `sklearn.datasets.load_digits()`, 1,797 handwritten digits of 8x8 pixels, values 0..16
(a copy of the test set of the UCI "Optical Recognition of Handwritten Digits" data; provenance
and licence in models/data/README.md).

Each image is scaled to 0..1 (value / 16), resized to 28x28 by bilinear interpolation written
here in pure NumPy (half-pixel centres with edge clamping: the convention of
`torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` without antialiasing;
float64 arithmetic, so the result does not depend on any library's kernels), then stored as uint8
0..255 (`round(255 * v)`). Consumers normalise with x = pixels / 255 (float32, 0..1).

The split is fixed and stored in the file: a permutation of 0..1796 from
`np.random.default_rng(SPLIT_SEED)`; its first 1,297 indices are the training set (`train_idx`) and
the last 500 the held-out test set (`test_idx`), each sorted ascending.

Arrays in the file (np.savez_compressed, no pickled objects):
    images     uint8 (1797, 28, 28)   0..255
    labels     int64 (1797,)          0..9
    train_idx  int64 (1297,)
    test_idx   int64 (500,)
    split_seed int64 ()
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "models" / "data" / "digits28.npz"
SIZE = 28
N_TEST = 500
SPLIT_SEED = 20240601


def _axis_weights(n_in: int, n_out: int):
    """Source indices (lo, hi) and weight of hi for each output position, half-pixel centres."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, n_in - 1)           # clamp at the edges (align_corners=False rule)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) float -> (N, size, size) float64, bilinear, half-pixel centres, clamped edges."""
    images = np.asarray(images, dtype=np.float64)
    ylo, yhi, wy = _axis_weights(images.shape[1], size)
    xlo, xhi, wx = _axis_weights(images.shape[2], size)
    rows = images[:, ylo, :] * (1 - wy)[None, :, None] + images[:, yhi, :] * wy[None, :, None]
    return rows[:, :, xlo] * (1 - wx)[None, None, :] + rows[:, :, xhi] * wx[None, None, :]


def make(out: Path = OUT) -> dict:
    from sklearn.datasets import load_digits   # only this script needs scikit-learn

    digits = load_digits()
    raw = np.asarray(digits.images)             # (1797, 8, 8) float, 0..16
    labels = np.asarray(digits.target, dtype=np.int64)
    assert raw.shape == (1797, 8, 8) and raw.min() >= 0 and raw.max() <= 16, raw.shape
    big = resize_bilinear(raw / 16.0, SIZE)     # 0..1
    images = np.clip(np.rint(big * 255.0), 0, 255).astype(np.uint8)

    perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    train_idx = np.sort(perm[:-N_TEST]).astype(np.int64)
    test_idx = np.sort(perm[-N_TEST:]).astype(np.int64)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, images=images, labels=labels, train_idx=train_idx,
                        test_idx=test_idx, split_seed=np.int64(SPLIT_SEED))
    tmp.replace(out)
    return {
        "file": str(out.relative_to(ROOT)), "bytes": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "images": images.shape, "train": len(train_idx), "test": len(test_idx),
        "test_class_counts": np.bincount(labels[test_idx], minlength=10).tolist(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    info = make(parser.parse_args().out.resolve())
    for key, value in info.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
