"""Images in and out of `squeezegen run`: PNG/JPEG inputs, colour-coded segmentation PNGs.

An input image is converted to the model's channels (1: greyscale, 3: RGB), resized to its H x W
(bilinear), and normalised: x = (pixel - mean) / std per channel, pixels in 0..255, giving a
float32 (1, C, H, W) batch. A segmentation output (N, classes, H, W) is written as the argmax class
of each pixel in the Pascal VOC palette.
"""
from __future__ import annotations

import functools
import io
import numbers
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import InputError
from .fsutil import atomic_write

try:                                   # ISA-L's deflate, for the masks' PNGs (`deflate`)
    from isal import isal_zlib as _isal_zlib
except ImportError:                    # a platform without its wheels: zlib does it, slower
    _isal_zlib = None

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                  ".pbm")
MAX_PNG_CLASSES = 256          # an 8-bit palette
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_image(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading and writing images needs Pillow (pip install pillow)") from None
    return Image


def _numbers(name: str, channels: int, values) -> list[float]:
    """--mean/--std as a list of floats: a bare number is one value."""
    if isinstance(values, numbers.Real):
        return [float(values)]
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"--{name} needs 1 or {channels} finite numbers, got {values!r}") \
            from None


def check_normalisation(channels: int, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """--mean/--std (each a number, or 1 or `channels` of them) as (channels, 1, 1) float32
    arrays; InputError if they do not fit, or if (pixel - mean) / std would not be a finite
    float32 for a pixel in 0..255."""
    mean, std = _numbers("mean", channels, mean), _numbers("std", channels, std)
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels) or not all(
                abs(v) <= _FLOAT32_MAX for v in values):      # (NaN fails too)
            raise InputError(f"--{name} needs 1 or {channels} finite numbers, got {values}")
    if any(np.float32(v) == 0 for v in std):
        raise InputError(f"--std must not be 0 (nor so small that it is 0 as a float32), got "
                         f"{std}")
    mean_a = np.asarray(mean if len(mean) == channels else list(mean) * channels, np.float32)
    std_a = np.asarray(std if len(std) == channels else list(std) * channels, np.float32)
    widest = np.maximum(np.abs(mean_a.astype(np.float64)), np.abs(255.0 - mean_a)) / np.abs(std_a)
    if not (widest <= _FLOAT32_MAX).all():
        raise InputError(f"--std {std} is too small for --mean {mean}: (pixel - mean) / std "
                         "overflows a float32")
    return mean_a.reshape(channels, 1, 1), std_a.reshape(channels, 1, 1)


def check_image_model(shape: tuple, path=None) -> None:
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise InputError(f"an image can only feed a model with 1 or 3 input channels, this one "
                         f"takes {shape}", file=None if path is None else str(path))


def load_image(path, shape: tuple, mean: list[float], std: list[float]) -> np.ndarray:
    check_image_model(shape, path)
    c, h, w = shape
    mean_a, std_a = check_normalisation(c, mean, std)
    try:
        pixels, _ = read_pixels(path, c, (h, w))
    except FileNotFoundError:
        raise InputError("input image not found", file=str(path)) from None
    except (OSError, ValueError, _pil().DecompressionBombError) as exc:
        raise InputError(f"cannot read the image: {exc}", file=str(path)) from None
    pixels = pixels.reshape(h, w, c).transpose(2, 0, 1)
    return ((pixels - mean_a) / std_a)[None].astype(np.float32)


def fit_box(size: tuple[int, int], target: tuple[int, int], resize: str) -> tuple[int, ...]:
    """Where an image of `size` (height, width) goes in a `target` (height, width) input:
    (top, left, height, width). `stretch` fills the target; `letterbox` keeps the aspect ratio,
    centred, the rest being padding."""
    th, tw = target
    if resize == "stretch":
        return (0, 0, th, tw)
    if resize != "letterbox":
        raise InputError(f"resize must be stretch or letterbox, got '{resize}'")
    scale = min(th / size[0], tw / size[1])
    h = min(th, max(1, round(size[0] * scale)))
    w = min(tw, max(1, round(size[1] * scale)))
    return ((th - h) // 2, (tw - w) // 2, h, w)


def read_pixels(source, channels: int, target: tuple[int, int], resize: str = "stretch",
                draft: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image (a path or a binary file) and resize it (bilinear) into the box that
    `fit_box` gives for `target`: (box height x width x channels float32 pixels in 0..255, the
    image's original (height, width)). `draft` lets a JPEG decode at a reduced scale that is
    still at least the box's size (much faster for large photos). Raises what Pillow raises."""
    image_mod = _pil()
    with image_mod.open(source) as im:
        size = (im.height, im.width)
        _, _, h, w = fit_box(size, target, resize)
        if draft and im.format == "JPEG":
            im.draft("L" if channels == 1 else "RGB", (w, h))
        return _pixels(image_mod, im, channels, h, w), size


def read_decoded(source, channels: int, target: tuple[int, int], resize: str,
                 limit: int) -> tuple[np.ndarray, tuple[int, int], bool]:
    """`read_pixels` (in draft mode) up to the resize, for the GPU to resize: (pixels, the
    image's original (height, width), whether they are decoded). An 8-bit image whose decoded
    pixels (converted to the model's channels) number at most `limit` comes as those pixels,
    h x w x channels uint8; any other as `read_pixels` gives it (resized into its box, float32)."""
    image_mod = _pil()
    with image_mod.open(source) as im:
        size = (im.height, im.width)
        _, _, h, w = fit_box(size, target, resize)
        if im.mode in _WIDE_MODES:
            return _pixels(image_mod, im, channels, h, w), size, False
        if im.format == "JPEG":
            im.draft("L" if channels == 1 else "RGB", (w, h))
        im = im.convert("L" if channels == 1 else "RGB")
        if im.width * im.height > limit:
            return np.asarray(im.resize((w, h), image_mod.BILINEAR), np.float32
                              ).reshape(h, w, channels), size, False
        return np.asarray(im).reshape(im.height, im.width, channels), size, True


def scaled_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """The size a JPEG decodes to at 1/scale (libjpeg's DCT scaling, Pillow's `draft`): each
    side's ceiling."""
    return -(-height // scale), -(-width // scale)


def draft_scale(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The scale Pillow's `draft` picks for a JPEG of `size` (height, width) asked for
    `target` (height, width): the largest of 8, 4, 2 (else 1) that is at most both sides'
    whole ratios."""
    ratio = min(size[1] // max(1, target[1]), size[0] // max(1, target[0]))
    return next((s for s in (8, 4, 2) if ratio >= s), 1)


_GPU_SAMPLINGS = (0, 1, 2)     # JpegImagePlugin.get_sampling: 4:4:4, 4:2:2, 4:2:0
_SOI, _EOI, _SOS, _BASELINE = b"\xff\xd8", b"\xff\xd9", b"\xff\xda", 0xC0


def frame_marker(data: bytes) -> int | None:
    """The JPEG's start-of-frame marker (0xC0 baseline, 0xC1 extended, 0xC2 progressive, 0xC9
    arithmetic, ...): the segments walked from the start; None if none comes before the scan
    or the segments do not parse."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:                        # a fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        if marker in (0xD9, 0xDA):                # the end, or a scan, before any frame
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def gpu_jpeg(source, target: tuple[int, int], resize: str, limit: int):
    """For a GPU JPEG decoder, what `read_decoded` would decode on the CPU: (the file's bytes,
    the image's (height, width), the draft scale) of a baseline JPEG with one scan (nvJPEG's
    hardware decoder takes nothing else), complete (it ends with the end-of-image marker), in
    YCbCr colour (4:4:4, 4:2:2 or 4:2:0), whose bytes and pixels decoded at that scale fit
    `limit` bytes each; None for any other file, and for one that cannot be read, which the
    CPU then decodes (and reports as it always does)."""
    try:
        with open(source, "rb") as f:
            head = f.read(2)
            if head != _SOI:                      # not a JPEG: not read any further here
                return None
            data = head + f.read(limit - 1)
            if f.read(1):
                return None
        if (not data.endswith(_EOI) or frame_marker(data) != _BASELINE
                or data.count(_SOS) != 1):        # 0xFF in the scan's data is always escaped
            return None
        image_mod = _pil()
        from PIL import JpegImagePlugin
        with image_mod.open(io.BytesIO(data)) as im:
            layers = [layer[0] for layer in getattr(im, "layer", [])]   # component ids
            if (im.format != "JPEG" or im.mode != "RGB" or im.info.get("progressive")
                    or im.info.get("progression") or im.info.get("adobe_transform") == 0
                    or layers == [ord(c) for c in "RGB"]     # libjpeg's RGB without a marker
                    or JpegImagePlugin.get_sampling(im) not in _GPU_SAMPLINGS):
                return None
            size = (im.height, im.width)
    except Exception:                              # the CPU's decoder says what is wrong
        return None
    _, _, h, w = fit_box(size, target, resize)
    scale = draft_scale(size, (h, w))
    dh, dw = scaled_size(*size, scale)
    if dh * dw * 3 > limit:
        return None
    return data, size, scale


def array_pixels(array: np.ndarray, channels: int, target: tuple[int, int],
                 resize: str = "stretch") -> tuple[np.ndarray, tuple[int, int]]:
    """`read_pixels` for an image already decoded into an H x W (x C) array (uint8, uint16 or
    float), as Ray Data's read_images gives."""
    image_mod = _pil()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == np.uint16 and array.ndim == 2:
        im = image_mod.fromarray(array.astype(np.int32)).convert("I;16")
    elif array.dtype != np.uint8:
        im = image_mod.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    else:
        im = image_mod.fromarray(array)
    size = (im.height, im.width)
    _, _, h, w = fit_box(size, target, resize)
    return _pixels(image_mod, im, channels, h, w), size


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")       # 16-bit and 32-bit: not 8-bit pixels
_SIXTEEN_BIT_FORMATS = ("PNG", "PPM")      # at most 16 bits a sample, whatever the mode


def sixteen_bit(im) -> bool:
    """Whether an opened (not yet loaded) image has 16-bit samples: Pillow opens them as mode
    I;16 (PNG, TIFF) or as mode I (a 16-bit PGM, whatever its maxval, which Pillow scales to
    0..65535; a TIFF of raw I;16 data)."""
    if im.mode.startswith("I;16"):
        return True
    if im.mode != "I":
        return False
    if im.format in _SIXTEEN_BIT_FORMATS:
        return True
    rawmodes = [t.args if isinstance(t.args, str) else (t.args or ("",))[0] for t in im.tile]
    return bool(rawmodes) and all(str(r).startswith("I;16") for r in rawmodes)


def _pixels(image_mod, im, channels: int, h: int, w: int) -> np.ndarray:
    """H x W x channels float32 in 0..255; wide images are scaled, not clipped: 16-bit ones
    (`sixteen_bit`, any format) from 0..65535 (divided by 257), 32-bit ones (I, F) by their own
    maximum when it is above 255."""
    if im.mode in _WIDE_MODES:
        scale = 257.0 if sixteen_bit(im) else 1.0
        grey = np.asarray(im.resize((w, h), image_mod.BILINEAR), np.float32)
        if scale == 1.0 and grey.max() > 255:
            scale = float(grey.max()) / 255.0
        grey = grey / scale
        return np.repeat(grey[..., None], channels, axis=2)
    im = im.convert("L" if channels == 1 else "RGB").resize((w, h), image_mod.BILINEAR)
    return np.asarray(im, np.float32).reshape(h, w, channels)     # "L" comes as h x w


def too_many_pixels(path, size: tuple[int, int]) -> str | None:
    """The warning for an image of `size` (height, width) above Pillow's MAX_IMAGE_PIXELS (which
    Pillow decodes, up to twice that, with a DecompressionBombWarning that does not name the
    file), in one line naming it; None below."""
    limit = _pil().MAX_IMAGE_PIXELS
    pixels = size[0] * size[1]
    if limit is None or pixels <= limit:
        return None
    return (f"{path}: {size[1]}x{size[0]} = {pixels:,} pixels, more than Pillow's limit of "
            f"{limit:,} (PIL.Image.MAX_IMAGE_PIXELS) against decompression bombs; decoded all "
            "the same")


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


@functools.lru_cache(maxsize=1)
def _palette_bytes() -> bytes:
    return voc_palette().tobytes()


def save_segmentation(path, y: np.ndarray) -> None:
    """Write the argmax classes of y (N, classes, H, W) as a palette PNG (images side by side)."""
    if y.ndim != 4:
        raise InputError(f"a segmentation PNG needs an N,C,H,W output, got shape {y.shape}",
                         file=str(path))
    if y.shape[1] > MAX_PNG_CLASSES:
        raise InputError(f"a palette PNG holds at most {MAX_PNG_CLASSES} classes, the output has "
                         f"{y.shape[1]}", file=str(path))
    save_classes(path, np.concatenate(list(np.argmax(y, axis=1)), axis=1).astype(np.uint8))


def save_classes(path, classes: np.ndarray, compress_level: int = 6) -> None:
    """Write an H x W array of class numbers (0..255) as a PNG in the VOC palette, atomically."""
    data = classes_png(classes, compress_level)
    atomic_write(path, lambda f: f.write(data), InputError)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def deflate(data, level: int) -> bytes:
    """A zlib stream of `data`. Levels 1 to 3 go through ISA-L (the `isal` package, installed
    with squeezegen where it has wheels): on segmentation masks 3 to 6 times as fast as zlib's
    level 1, and the files are no larger. zlib otherwise (level 0: stored; 4 to 9). Both let
    other threads run while they compress."""
    if 1 <= level <= 3 and _isal_zlib is not None:
        return _isal_zlib.compress(data, level)
    return zlib.compress(data, level)


def classes_png(classes: np.ndarray, compress_level: int = 6) -> bytes:
    """The PNG file of an H x W array of class numbers: 8-bit palette (the VOC colours), rows
    unfiltered, one zlib stream (`deflate`). Written here rather than through Pillow, which
    took 3 to 4 times as long for the same file (1024 x 768, zlib level 1: 2.5 ms against
    8.4 ms)."""
    classes = np.asarray(classes)
    if classes.ndim != 2 or 0 in classes.shape:
        raise InputError(f"a class mask must be a non-empty 2-D array, got shape {classes.shape}")
    h, w = classes.shape
    rows = np.zeros((h, w + 1), np.uint8)            # each row: filter byte 0, then the classes
    rows[:, 1:] = classes
    header = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)    # 8 bits, palette, deflate, none
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"PLTE", _palette_bytes())
            + _chunk(b"IDAT", deflate(rows.data, compress_level)) + _chunk(b"IEND", b""))
