"""Writing one image's results: OUT_DIR/<name>.png (the classes in the VOC palette) and, when
asked, OUT_DIR/<name>.npy (the scores), both at the image's original size, both atomic. The PNG
comes last, so its presence means the image is done (what a rerun checks to resume)."""
from __future__ import annotations

import numpy as np

from ..fsutil import atomic_write
from ..images import save_classes
from .inputs import output_path
from .resample import argmax_classes, classes_at, resize_scores

PNG_LEVEL = 1              # deflate level of the PNGs: masks compress well, level 1 is fast


def is_done(out_dir, name: str, with_scores: bool = False) -> bool:
    """Whether a previous run wrote this image's outputs (with_scores: the .npy too)."""
    try:
        png = output_path(out_dir, name)
        return png.exists() and (not with_scores or output_path(out_dir, name, ".npy").exists())
    except OSError:               # a name too long, a folder we cannot read: not done; writing
        return False              # it will fail for that image alone, in one line


def write_outputs(out_dir, name: str, scores: np.ndarray, size: tuple, box: tuple,
                  input_hw: tuple, with_scores: bool = False) -> None:
    """scores: the network's (classes, h, w) for an image of `size` (height, width) that
    covered `box` (top, left, height, width) of the model's `input_hw`."""
    if with_scores:
        full = resize_scores(scores, size, box, input_hw)
        atomic_write(output_path(out_dir, name, ".npy"), lambda f: np.save(f, full))
        classes = argmax_classes(full).astype(np.uint8)
    else:
        classes = classes_at(scores, size, box, input_hw)
    save_classes(output_path(out_dir, name), classes, compress_level=PNG_LEVEL)
