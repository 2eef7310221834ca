"""`squeezegen run` with images: a JPEG/PNG in, a Pascal-VOC colour PNG of the argmax classes out
(plus the .npy), on the numpy backend (the GPU variant is in test_gpu.py)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from squeezegen import load_model
from squeezegen.images import load_image, save_segmentation, voc_palette
from squeezegen.reference import ReferenceExecutor
from squeezegen.weights import save_weights
from helpers import random_weights

Image = pytest.importorskip("PIL.Image")


def test_voc_palette_is_the_standard_one():
    p = voc_palette()
    assert p[0].tolist() == [0, 0, 0] and p[1].tolist() == [128, 0, 0]
    assert p[15].tolist() == [192, 128, 128] and p[20].tolist() == [0, 64, 128]


def test_load_image_resizes_and_normalises(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    x = load_image(tmp_path / "red.png", (3, 11, 7), [100.0, 0.0, 0.0], [2.0, 1.0, 1.0])
    assert x.shape == (1, 3, 11, 7) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], 50.0)
    np.testing.assert_allclose(x[0, 1:], 0.0)
    grey = load_image(tmp_path / "red.png", (1, 5, 5), [0.0], [1.0])
    assert grey.shape == (1, 1, 5, 5) and 50 < grey.mean() < 70      # luminance of red


def test_segmentation_png_holds_the_argmax(tmp_path):
    y = np.zeros((2, 21, 4, 3), np.float32)
    y[0, 15] = 1.0
    y[1, 20, 1, 2] = 5.0
    save_segmentation(tmp_path / "seg.png", y)
    im = Image.open(tmp_path / "seg.png")
    assert im.mode == "P" and im.size == (6, 4)                     # images side by side
    classes = np.asarray(im)
    assert (classes[:, :3] == 15).all() and classes[1, 5] == 20 and classes[0, 3] == 0


@pytest.mark.parametrize("level", [0, 1, 3, 6, 9])
@pytest.mark.parametrize("isal", [True, False], ids=["isal", "zlib"])
def test_classes_png_reads_back_at_every_level_with_either_deflate(level, isal, monkeypatch):
    """The masks' PNGs (ISA-L for levels 1-3 when installed, zlib otherwise): the exact classes
    back through Pillow, in the VOC palette, for a noisy odd-sized mask."""
    import io
    from squeezegen import images
    if isal and images._isal_zlib is None:
        pytest.skip("the isal package is not installed on this platform")
    if not isal:
        monkeypatch.setattr(images, "_isal_zlib", None)
    classes = np.random.default_rng(level).integers(0, 256, (37, 53), dtype=np.uint8)
    classes[:10] = 7                                                 # runs as well as noise
    im = Image.open(io.BytesIO(images.classes_png(classes, level)))
    assert im.mode == "P" and im.size == (53, 37)
    np.testing.assert_array_equal(np.asarray(im), classes)
    assert im.getpalette()[:3 * 21] == voc_palette(21).ravel().tolist()


def test_deflate_uses_isal_for_the_fast_levels_when_it_is_installed():
    import zlib
    from squeezegen import images
    if images._isal_zlib is None:
        pytest.skip("the isal package is not installed on this platform")
    data = bytes(range(256)) * 64
    assert images.deflate(data, 1) == images._isal_zlib.compress(data, 1)
    assert images.deflate(data, 6) == zlib.compress(data, 6)
    assert zlib.decompress(images.deflate(data, 1)) == data


def test_run_cli_writes_png_and_npy_on_numpy(tmp_path):
    g = load_model("models/squeezeseg.yaml")
    w = random_weights(g, 4)
    save_weights(tmp_path / "w.npz", w)
    pixels = (np.random.default_rng(0).random((100, 130, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.jpg")
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "run", "models/squeezeseg.yaml",
                           "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "in.jpg"),
                           "--output", str(tmp_path / "seg.png"), "--backend", "numpy"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    y = np.load(tmp_path / "seg.npy")
    want = ReferenceExecutor(g, w)(load_image(tmp_path / "in.jpg", (3, 227, 227), [128.0], [1.0]))
    np.testing.assert_array_equal(y, want)          # the same NumPy code: bit for bit
    classes = np.asarray(Image.open(tmp_path / "seg.png"))
    assert classes.shape == (227, 227)
    np.testing.assert_array_equal(classes, y[0].argmax(axis=0))


def test_unreadable_image_is_one_clear_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "run", "models/lenet.yaml",
                           "--weights", "models/weights/lenet_digits.npz", "--input",
                           str(tmp_path / "bad.png"), "--output", str(tmp_path / "y.npy"),
                           "--backend", "numpy"], capture_output=True, text=True)
    assert proc.returncode == 1 and "cannot read the image" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--std", "0"], "--std must not be 0"),
    (["--mean", "1,2"], "--mean needs 1 or 3 finite numbers"),
])
def test_bad_normalisation_is_refused(tmp_path, args, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    g = load_model("models/squeezeseg.yaml")
    save_weights(tmp_path / "w.npz", random_weights(g, 0))
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "run", "models/squeezeseg.yaml",
                           "--weights", str(tmp_path / "w.npz"), "--input", str(tmp_path / "in.png"),
                           "--output", str(tmp_path / "y.npy"), "--backend", "numpy", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    x = load_image(tmp_path / "deep.png", (1, 8, 8), [0.0], [1.0])
    np.testing.assert_allclose(x[0, 0], ramp / 257.0, rtol=1e-5)
    assert 240 < x.max() < 246                      # 63000 / 257: scaled to 8 bits, not clipped


@pytest.mark.parametrize("content,message", [
    ("scalar", "input has shape ()"),
    ("npz", "is an .npz archive"),
])
def test_check_validates_the_input_before_compiling(tmp_path, content, message):
    path = tmp_path / ("x.npy" if content == "scalar" else "x.npz")
    if content == "scalar":
        np.save(path, np.float32(3))
    else:
        np.savez(path, a=np.zeros(3, np.float32))
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "check", "models/lenet.yaml",
                           "--weights", "models/weights/lenet_digits.npz", "--input", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_model_path_that_is_not_a_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "squeezegen", "summary", "/dev/zero"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a regular file" in proc.stderr


def test_sixteen_bit_images_scale_alike_in_every_format(tmp_path):
    """The same 12-bit samples in a 16-bit PNG and TIFF (Pillow: mode I;16) and PGM (mode I):
    each divided by 257, whatever the format; a 32-bit TIFF (mode I) is still scaled by its
    own maximum."""
    data = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 85)          # 0..3995
    for suffix in ("png", "tif", "pgm"):
        Image.fromarray(data).save(tmp_path / f"deep.{suffix}")
        x = load_image(tmp_path / f"deep.{suffix}", (1, 6, 8), [0.0], [1.0])
        np.testing.assert_allclose(x[0, 0], data / 257.0, rtol=1e-5, err_msg=suffix)
    wide = data.astype(np.int32) * 1000
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    x = load_image(tmp_path / "wide.tif", (1, 6, 8), [0.0], [1.0])
    np.testing.assert_allclose(x[0, 0], wide * (255.0 / wide.max()), rtol=1e-5)


@pytest.mark.parametrize("mean,std,message", [
    (100.0, 2, None), ([1, 2, 3], [4], None),
    ("abc", 1, "--mean needs 1 or 3 finite numbers"), ([1, 2], 1, "--mean needs 1 or 3"),
    (0, 1e-45, "is too small for --mean"), (0, 1e-50, "--std must not be 0"),
    (1e39, 1, "--mean needs 1 or 3 finite numbers"), (0, float("nan"), "--std needs"),
])
def test_normalisation_takes_bare_numbers_and_refuses_overflows(mean, std, message):
    import warnings
    from squeezegen.errors import InputError
    from squeezegen.images import check_normalisation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if message is None:
            m, s = check_normalisation(3, mean, std)
            assert m.shape == s.shape == (3, 1, 1) and m.dtype == np.float32
            return
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            check_normalisation(3, mean, std)
