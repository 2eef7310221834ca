"""Images in and out of `squeezegen run`: PNG/JPEG inputs, colour-coded segmentation PNGs.

An input image is converted to the model's channels (1: greyscale, 3: RGB), resized to its H x W
(bilinear), and normalised: x = (pixel - mean) / std per channel, pixels in 0..255, giving a
float32 (1, C, H, W) batch. A segmentation output (N, classes, H, W) is written as the argmax class
of each pixel in the Pascal VOC palette.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .fsutil import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def is_image(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading and writing images needs Pillow (pip install pillow)") from None
    return Image


def load_image(path, shape: tuple, mean: list[float], std: list[float]) -> np.ndarray:
    image_mod = _pil()
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise InputError(f"an image can only feed a model with 1 or 3 input channels, this one "
                         f"takes {shape}", file=str(path))
    c, h, w = shape
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, c) or not np.isfinite(values).all():
            raise InputError(f"--{name} needs 1 or {c} finite numbers, got {values}")
    if any(v == 0 for v in std):
        raise InputError(f"--std must not be 0, got {std}")
    try:
        with image_mod.open(path) as im:
            pixels = _pixels(image_mod, im, c, h, w)
    except FileNotFoundError:
        raise InputError("input image not found", file=str(path)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the image: {exc}", file=str(path)) from None
    pixels = pixels.reshape(h, w, c).transpose(2, 0, 1)
    mean_a = np.asarray(mean if len(mean) == c else list(mean) * c, np.float32).reshape(c, 1, 1)
    std_a = np.asarray(std if len(std) == c else list(std) * c, np.float32).reshape(c, 1, 1)
    return ((pixels - mean_a) / std_a)[None].astype(np.float32)


def _pixels(image_mod, im, channels: int, h: int, w: int) -> np.ndarray:
    """H x W x channels float32 in 0..255; 16-bit and float images are scaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        scale = 257.0 if im.mode.startswith("I;16") else 1.0
        grey = np.asarray(im.resize((w, h), image_mod.BILINEAR), np.float32)
        if im.mode in ("I", "F") and grey.max() > 255:
            scale = float(grey.max()) / 255.0
        grey = grey / scale
        return np.repeat(grey[..., None], channels, axis=2)
    im = im.convert("L" if channels == 1 else "RGB").resize((w, h), image_mod.BILINEAR)
    return np.asarray(im, np.float32)


def voc_palette(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: class k's colour from the bits of k."""
    palette = np.zeros((n, 3), np.uint8)
    for k in range(n):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[k] = (r, g, b)
    return palette


def save_segmentation(path, y: np.ndarray) -> None:
    """Write the argmax classes of y (N, classes, H, W) as a palette PNG (images side by side)."""
    image_mod = _pil()
    if y.ndim != 4:
        raise InputError(f"a segmentation PNG needs an N,C,H,W output, got shape {y.shape}",
                         file=str(path))
    classes = np.concatenate(list(np.argmax(y, axis=1)), axis=1).astype(np.uint8)
    im = image_mod.fromarray(classes)                      # mode L; the palette makes it P
    im.putpalette(voc_palette().reshape(-1).tolist())
    atomic_write(path, lambda f: im.save(f, format="PNG"), InputError)
