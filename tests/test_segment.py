"""`squeezegen segment` on the NumPy backend: a small segmentation model (3x32x48 in, 5 classes
out) and a few dozen generated images of many sizes and formats (JPEG, PNG, grey, RGBA, palette,
an animated GIF, PPM, 16-bit, a truncated file, a text file named .jpg, an empty file). Every PNG is checked against
the reference run directly on the image, its scores resized back with PyTorch's bilinear
interpolation; then resume, failed.txt, --overwrite, letterbox, --scores, Ctrl-C and bad inputs.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import squeezegen
from helpers import random_weights
from squeezegen.images import load_image
from squeezegen.reference import ReferenceExecutor
from squeezegen import segment
from squeezegen.segmentation.backends import BackendSpec, NumpyBackend, parse_gpus
from squeezegen.segmentation.inputs import collect
from squeezegen.segmentation.pipeline import Pipeline, Settings
from squeezegen.segmentation.progress import Progress
from squeezegen.segmentation import resample
from squeezegen.segmentation.resample import (argmax_classes, bilinear, classes_at,
                                              resize_scores)
from squeezegen.weights import save_weights

Image = pytest.importorskip("PIL.Image")
torch = pytest.importorskip("torch")

MODEL = """\
name: tinyseg
input: {shape: [3, 32, 48]}
layers:
  - {name: c1, op: conv, out: 8, kernel: 3, pad: 1, relu: true}
  - {name: p1, op: maxpool, kernel: 2, stride: 2}
  - {name: c2, op: conv, out: 8, kernel: 3, pad: 1, relu: true}
  - {name: score, op: conv, out: 5, kernel: 1}
  - {name: up, op: deconv, out: 5, kernel: 2, stride: 2}
output: up
"""
MEAN, STD = [100.0, 110.0, 120.0], [60.0]
BAD = {"broken/truncated.jpg", "broken/text.jpg", "broken/empty.png"}


DEATH = re.compile(r"\((signal 9|exit status 255)\)")   # how a killed worker is reported


def _picture(rng, h, w, channels=3):
    """A smooth picture with a few blocks (so the segmentation has regions, not noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 / max(1, w - 1)), (yy * 255 / max(1, h - 1)),
                     np.full((h, w), 128.0)], axis=2)
    for _ in range(3):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        base[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0, 255, 3)
    base += rng.normal(0, 8, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)[..., :channels]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    (root / "tinyseg.yaml").write_text(MODEL)
    graph = squeezegen.load_model(root / "tinyseg.yaml")
    weights = random_weights(graph, 3)
    save_weights(root / "w.npz", weights)
    rng = np.random.default_rng(7)
    images = root / "images"
    sizes = [(20, 30), (32, 48), (41, 77), (64, 96), (90, 50), (17, 130), (150, 100), (48, 32),
             (33, 33), (70, 110), (25, 60), (100, 70)]
    names = []

    def save(name, im, **kw):
        path = images / name
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, **kw)
        names.append(name)

    for i, (h, w) in enumerate(sizes):
        pic = Image.fromarray(_picture(rng, h, w))
        save(f"jpeg/{i:02d}.jpg", pic, quality=92)
        save(f"png/deep/{i:02d}.png" if i % 2 else f"png/{i:02d}.png", pic)
    for i, (h, w) in enumerate(sizes[:3]):
        save(f"grey/{i}.png", Image.fromarray(_picture(rng, h, w)[..., 0]))
        save(f"grey/{i}.jpg", Image.fromarray(_picture(rng, w, h)[..., 1]))
        rgba = np.dstack([_picture(rng, h, w), rng.integers(0, 256, (h, w), dtype=np.uint8)])
        save(f"rgba/{i}.png", Image.fromarray(rgba, "RGBA"))
        deep = (_picture(rng, h, w)[..., 0].astype(np.uint16) * 257)
        save(f"sixteen/{i}.png", Image.fromarray(deep))
    save("palette/0.png", Image.fromarray(_picture(rng, 40, 60)).convert("P"))
    frames = [Image.fromarray(_picture(rng, 30, 45)).convert("P") for _ in range(3)]
    save("palette/anim.gif", frames[0], save_all=True, append_images=frames[1:])  # 1st frame
    save("pnm/0.ppm", Image.fromarray(_picture(rng, 26, 35)))
    save("big.jpg", Image.fromarray(_picture(rng, 300, 420)), quality=90)  # JPEG draft decoding
    full = io.BytesIO()
    Image.fromarray(_picture(rng, 64, 64)).save(full, format="JPEG")
    (images / "broken").mkdir()
    (images / "broken/truncated.jpg").write_bytes(full.getvalue()[:len(full.getvalue()) // 2])
    (images / "broken/text.jpg").write_text("this is not a JPEG\n")
    (images / "broken/empty.png").write_bytes(b"")
    (images / "notes.md").write_text("not an image: ignored\n")
    names += sorted(BAD)
    return {"root": root, "model": root / "tinyseg.yaml", "weights": root / "w.npz",
            "graph": graph, "w": weights, "images": images, "names": names}


def _input(path, h, w):
    """The image as the model's (1, 3, h, w) input, decoded as `run` does; a JPEG at least twice
    the input's size is decoded at a reduced scale first (Pillow's draft mode), as `segment`
    does for speed."""
    with Image.open(path) as im:
        if im.format != "JPEG":
            return load_image(path, (3, h, w), MEAN, STD)
        im.draft("RGB", (w, h))
        pixels = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), np.float32)
    x = (pixels.transpose(2, 0, 1) - np.float32(MEAN).reshape(3, 1, 1)) / np.float32(STD[0])
    return x[None].astype(np.float32)


def _reference(data, path, resize="stretch"):
    """(classes, scores) at the original size, computed without the pipeline: PIL, the
    reference executor, and torch's bilinear interpolation."""
    graph, run = data["graph"], ReferenceExecutor(data["graph"], data["w"])
    with Image.open(path) as im:
        h0, w0 = im.height, im.width
    if resize == "stretch":
        y = run(_input(path, 32, 48))[0]
    else:
        scale = min(32 / h0, 48 / w0)
        nh, nw = min(32, max(1, round(h0 * scale))), min(48, max(1, round(w0 * scale)))
        top, left = (32 - nh) // 2, (48 - nw) // 2
        x = np.zeros((1, 3, 32, 48), np.float32)
        x[:, :, top:top + nh, left:left + nw] = _input(path, nh, nw)
        y = run(x)[0][:, top:top + nh, left:left + nw]
    assert graph[graph.outputs[0]].type.shape == (5, 32, 48)
    up = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(y))[None],
                                         size=(h0, w0), mode="bilinear", align_corners=False)
    return up[0].argmax(0).numpy(), up[0].numpy()


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "squeezegen", "segment", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kw)


def _tmp_files(folder):
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "masks"
    proc = _cli(data["model"], "--weights", data["weights"], data["images"], "-o", out,
                "--batch", 5, "--backend", "numpy", "--mean", "100,110,120", "--std", "60",
                "--workers", 3, "--json", out.parent / "summary.json")
    return out, proc


def test_every_readable_image_matches_the_reference(data, first_run):
    out, proc = first_run
    assert proc.returncode == 0, proc.stderr
    good = [n for n in data["names"] if n not in BAD]
    assert f"{len(good)} of {len(data['names'])} images segmented" in proc.stdout
    assert "3 failed" in proc.stdout and "numpy" in proc.stdout
    summary = json.loads((out.parent / "summary.json").read_text())
    assert (summary["written"], summary["failed"], summary["skipped"]) == (len(good), 3, 0)
    assert summary["networks"] == ["numpy"] and 0 < summary["network_busy"] <= 1
    for name in good:
        png = out / f"{name}.png"
        with Image.open(png) as im:
            assert im.mode == "P"
            assert im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
            got = np.asarray(im)
        want, scores = _reference(data, data["images"] / name)
        assert got.shape == want.shape, name
        _same_classes_but_near_ties(got, want, scores, name)
    assert not _tmp_files(out)


def _same_classes_but_near_ties(got, want, scores, name):
    """got's classes are PyTorch's argmax of its scores, except where PyTorch's two best
    scores lie within float32 rounding of each other (segment's bilinear sums in another
    order): there got's class scores within 1e-5 (relative to the largest score) of the best."""
    differ = got != want
    if differ.any():
        mine = np.take_along_axis(scores, got[None].astype(np.intp), 0)[0]
        gap = float((scores.max(0) - mine)[differ].max())
        assert gap <= 1e-5 * float(np.abs(scores).max()), \
            f"{name}: {int(differ.sum())} of {got.size} pixels differ, by up to {gap:.3g}"
        assert differ.mean() <= 1e-4, f"{name}: {int(differ.sum())} pixels differ"


def test_failures_are_one_line_each_and_listed(data, first_run):
    out, proc = first_run
    lines = [l for l in proc.stderr.splitlines() if l.startswith("squeezegen: skipped")]
    assert len(lines) == 3 and "Traceback" not in proc.stderr
    assert any("truncated" in l for l in lines)
    listed = (out / "failed.txt").read_text().splitlines()
    assert sorted(Path(l.split("\t")[0]).relative_to(data["images"]).as_posix()
                  for l in listed) == sorted(BAD)
    assert all("\tcannot read the image: " in l for l in listed)
    for name in BAD:
        assert not (out / f"{name}.png").exists()


def test_rerun_resumes_and_overwrite_redoes(data, first_run, tmp_path):
    out, _ = first_run
    done = sorted(out.rglob("*.png"))
    removed = done[:4]
    kept = {p: p.stat().st_mtime_ns for p in done[4:]}
    for p in removed:
        p.unlink()
    s = segment(data["model"], data["weights"], [data["images"]], out, batch=5, backend="numpy",
                mean=MEAN, std=STD, progress=False)
    assert (s.written, s.skipped, s.failed) == (4, len(done) - 4, 3)
    assert all(p.exists() for p in removed)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    # the failures can be given back as a list (the text after the tab is ignored)
    again = segment(data["model"], data["weights"], [out / "failed.txt"], tmp_path / "retry",
                    backend="numpy", progress=False)
    assert (again.images, again.written, again.failed) == (3, 0, 3)
    s = segment(data["model"], data["weights"], [data["images"]], out, batch=7, backend="numpy",
                mean=MEAN, std=STD, progress=False, overwrite=True)
    assert (s.written, s.skipped, s.failed) == (len(done), 0, 3)
    assert not _tmp_files(out)


def test_letterbox_and_scores(data, tmp_path):
    names = ["jpeg/05.jpg", "png/deep/01.png", "grey/2.jpg", "sixteen/1.png", "rgba/0.png"]
    s = segment(data["model"], data["weights"], [data["images"] / n for n in names],
                tmp_path, batch=2, resize="letterbox", scores=True, backend="numpy",
                mean=MEAN, std=STD, progress=False)
    assert (s.written, s.failed) == (5, 0)
    for n in names:
        want_classes, want_scores = _reference(data, data["images"] / n, "letterbox")
        scores = np.load(tmp_path / f"{Path(n).name}.npy")
        assert scores.shape == want_scores.shape and scores.dtype == np.float32
        np.testing.assert_allclose(scores, want_scores, rtol=0,
                                   atol=1e-5 * np.abs(want_scores).max())
        classes = np.asarray(Image.open(tmp_path / f"{Path(n).name}.png"))
        np.testing.assert_array_equal(classes, scores.argmax(0))
        assert (classes != want_classes).mean() <= 1e-3
    # a rerun that now asks for scores redoes the images whose .npy is missing
    (tmp_path / f"{Path(names[0]).name}.npy").unlink()
    again = segment(data["model"], data["weights"], [data["images"] / n for n in names],
                    tmp_path, resize="letterbox", scores=True, backend="numpy", mean=MEAN,
                    std=STD, progress=False)
    assert (again.written, again.skipped) == (1, 4)


@pytest.mark.parametrize("decoders", ["threads", "processes"])
def test_a_grey_model_segments_every_kind_of_image(data, tmp_path, decoders):
    """A model of one input channel: grey, RGB, RGBA and 16-bit images all become its grey
    input (each decoder once gave Pillow's h x w grey pixels where h x w x 1 was expected, and
    every image failed). Each mask is the reference's on `load_image`'s input."""
    (tmp_path / "grey.yaml").write_text(MODEL.replace("[3, 32, 48]", "[1, 32, 48]")
                                        .replace("tinyseg", "greyseg"))
    graph = squeezegen.load_model(tmp_path / "grey.yaml")
    weights = random_weights(graph, 5)
    names = ["grey/0.png", "grey/1.jpg", "png/02.png", "rgba/1.png", "sixteen/2.png",
             "big.jpg"]
    s = segment(tmp_path / "grey.yaml", weights, [data["images"] / n for n in names],
                tmp_path / "out", batch=4, backend="numpy", mean=[100.0], std=[60.0],
                progress=False, decoders=decoders, workers=2)
    assert (s.written, s.failed) == (len(names), 0), s.failures
    run = ReferenceExecutor(graph, weights)
    for n in names[:-1]:                            # (big.jpg: decoded in draft mode)
        x = load_image(data["images"] / n, (1, 32, 48), [100.0], [60.0])
        with Image.open(data["images"] / n) as im:
            size = (im.height, im.width)
        want = argmax_classes(bilinear(run(x)[0], size, (0, 0, 32, 48), (32, 48)))
        got = np.asarray(Image.open(tmp_path / "out" / f"{Path(n).name}.png"))
        np.testing.assert_array_equal(got, want, err_msg=n)


def test_fast_argmax_equals_the_full_resize(monkeypatch):
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.standard_normal((1, 6, 5, 7)).astype(np.float32))
    scores = torch.nn.functional.interpolate(coarse, size=(24, 40), mode="bilinear")[0].numpy()
    for size, box in [((100, 77), (0, 0, 24, 40)), ((10, 13), (0, 0, 24, 40)),
                      ((90, 40), (0, 12, 24, 16)), ((7, 200), (10, 0, 4, 40))]:
        full = resize_scores(scores, size, box, (24, 40))
        t, l, h, w = box
        want = torch.nn.functional.interpolate(
            torch.from_numpy(scores[None, :, t:t + h, l:l + w].copy()), size=size,
            mode="bilinear", align_corners=False)[0].numpy()
        np.testing.assert_allclose(full, want, atol=1e-5)
        np.testing.assert_array_equal(classes_at(scores, size, box, (24, 40)), want.argmax(0))
    # 21 classes of noise, every cell a boundary: through the boundary path (cells with 3 to 7
    # classes that can win), and through the dense one (every class resized, by Pillow)
    noise = rng.standard_normal((21, 30, 30)).astype(np.float32)
    full = resize_scores(noise, (200, 170), (0, 0, 30, 30), (30, 30)).argmax(0)
    for per_class in (1e9, 0.0):
        monkeypatch.setattr(resample, "DENSE_PER_CLASS", {"pillow": per_class,
                                                         "numpy": per_class})
        fast = classes_at(noise, (200, 170), (0, 0, 30, 30), (30, 30))
        assert (fast != full).sum() <= 2         # float rounding at exact near-ties, at most
    monkeypatch.undo()
    # 3 classes of noise: every cell is a boundary, so every class is resized (the dense path)
    noise = rng.standard_normal((3, 12, 20)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(noise[None]), size=(50, 70),
                                           mode="bilinear", align_corners=False)[0].numpy()
    dense = classes_at(noise, (50, 70), (0, 0, 12, 20), (12, 20))
    assert (dense != want.argmax(0)).sum() <= 2


def test_two_networks_share_the_work_each_in_its_own_thread(data, tmp_path):
    calls = {}

    class Recording(NumpyBackend):
        def __init__(self, label):
            super().__init__(data["graph"], data["w"], 4)
            self.label, self.made_in = label, threading.get_ident()

        def __call__(self, x):
            assert threading.get_ident() == self.made_in and x.shape[0] <= 4
            calls.setdefault(self.label, set()).add(self.made_in)
            time.sleep(0.02)                     # long enough for the other one to get work
            return super().__call__(x)

    specs = [BackendSpec(f"fake:{i}", lambda i=i: Recording(f"fake:{i}")) for i in range(2)]
    items = collect([data["images"] / "jpeg", data["images"] / "png"], tmp_path)
    mean, std = np.full((3, 1, 1), 128, np.float32), np.ones((3, 1, 1), np.float32)
    settings = Settings(shape=(3, 32, 48), mean=mean, std=std, batch=4, workers=2)
    s = Pipeline(items, specs, tmp_path, settings, "numpy").run()
    assert s.written == len(items) == 24 and sum(s.per_network) == 24
    assert all(n > 0 for n in s.per_network), s.per_network
    assert len(calls) == 2 and calls["fake:0"] != calls["fake:1"]
    assert 0 < s.network_busy <= 1 and "fake:0" in s.text()


def test_a_failing_network_stops_the_run_with_its_error(data, tmp_path):
    class Broken(NumpyBackend):
        def __call__(self, x):
            raise squeezegen.SqueezegenError("the GPU fell over")

    items = collect([data["images"] / "png"], tmp_path)
    mean, std = np.zeros((3, 1, 1), np.float32), np.ones((3, 1, 1), np.float32)
    specs = [BackendSpec("broken", lambda: Broken(data["graph"], data["w"], 2))]
    pipeline = Pipeline(items, specs, tmp_path, Settings((3, 32, 48), mean, std, batch=2), "x")
    with pytest.raises(squeezegen.SqueezegenError, match="fell over"):
        pipeline.run()
    assert not list(tmp_path.rglob("*.png"))


def test_progress_without_a_terminal_prints_plain_lines():
    stream = io.StringIO()
    bar = Progress(100, stream=stream, every=0.0)
    bar.update(10, 1, 5)
    bar.write("squeezegen: skipped x.jpg: cannot read the image")
    bar.close(10, 1, 5)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.startswith("segment: 16/100 (16%)") and "img/s, ETA" in text
    assert "1 failed, 5 already done" in text


@pytest.mark.parametrize("decoders,signals", [
    ("threads", "INT"), ("processes", "INT"), ("threads", "TERM"), ("processes", "TERM"),
    ("threads", "INT,INT")])
def test_ctrl_c_stops_cleanly_and_the_rerun_finishes(data, tmp_path, decoders, signals):
    """Ctrl-C at a terminal: SIGINT to the whole process group (the worker processes too);
    SIGTERM the same way (`timeout -s TERM`), which stops the run as Ctrl-C does (status 130);
    and a second Ctrl-C during the clean stop, with --scores (large .npy files being written),
    leaves no temp file behind either."""
    import os
    many = tmp_path / "many"
    many.mkdir()
    src = (data["images"] / "jpeg/03.jpg").read_bytes()
    for i in range(300):
        (many / f"{i:03d}.jpg").write_bytes(src)
    out = tmp_path / "out"
    scores = ["--scores"] if signals != "INT" else []
    proc = subprocess.Popen([sys.executable, "-m", "squeezegen", "segment", str(data["model"]),
                             "--weights", str(data["weights"]), str(many), "-o", str(out),
                             "--batch", "2", "--workers", "1", "--backend", "numpy",
                             "--decoders", decoders, *scores],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not list(out.glob("*.png")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    for name in signals.split(","):
        os.killpg(proc.pid, getattr(signal, "SIG" + name))
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted:" in stderr and "squeezegen: interrupted" in stderr
    assert "Traceback" not in stderr
    written = sorted(out.glob("*.png"))
    assert 0 < len(written) < 300 and not _tmp_files(out), _tmp_files(out)
    for p in written:
        with Image.open(p) as im:
            im.load()
    if scores:
        return
    s = segment(data["model"], data["weights"], [many], out, backend="numpy", progress=False)
    assert s.skipped == len(written) and s.written == 300 - len(written) and s.failed == 0


@pytest.mark.parametrize("args,message", [
    (["IMAGES/nowhere"], "input not found"),
    (["EMPTY"], "no images found"),
    (["IMAGES/grey/0.png", "IMAGES/sixteen/0.png"], "would both write"),
    (["IMAGES", "--std", "0"], "--std must not be 0"),
    (["IMAGES", "--mean", "1,2"], "--mean needs 1 or 3 finite numbers"),
    (["IMAGES", "--backend", "cuda"], "GPU_MISSING"),
    (["IMAGES", "--model", "models/lenet.yaml"], "output is (classes, height, width)"),
])
def test_bad_input_is_one_line(data, tmp_path, args, message):
    if message == "GPU_MISSING":
        from squeezegen.runtime.network import gpu_available
        if gpu_available():
            pytest.skip("a GPU is usable here, so --backend cuda runs")
    (tmp_path / "empty").mkdir()
    model, weights = data["model"], data["weights"]
    if "--model" in args:
        i = args.index("--model")
        model, weights = args[i + 1], "models/weights/lenet_digits.npz"
        args = args[:i] + args[i + 2:]
    args = [a.replace("IMAGES", str(data["images"])).replace("EMPTY", str(tmp_path / "empty"))
            for a in args]
    if "--backend" not in args:
        args += ["--backend", "numpy"]
    proc = _cli(model, "--weights", weights, *args, "-o", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("squeezegen: error:")
    if message == "GPU_MISSING":                 # the runtime's GPUError: what is missing
        assert re.search(r"NVIDIA driver|PyCUDA|CUDA GPU", lines[0]), lines[0]
    else:
        assert message in lines[0], lines[0]


def test_inputs_names_and_gpus(data, tmp_path):
    images = data["images"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{images / 'jpeg/00.jpg'}\n\n{images / 'png/deep/01.png'}\n")
    items = collect([listing, images / "big.jpg", str(images / "grey") + "/*.png"], tmp_path)
    root = images.relative_to(images.anchor).as_posix()     # absolute entries: from the root
    assert [i.name for i in items] == [f"{root}/jpeg/00.jpg", f"{root}/png/deep/01.png",
                                       "big.jpg", "0.png", "1.png", "2.png"]
    # the output folder inside an input folder is not read back as input
    inside = collect([images], images / "png")
    assert not any(i.name.startswith("png/") for i in inside)
    assert parse_gpus("all", 4) == [0, 1, 2, 3] and parse_gpus("2", 4) == [0, 1]
    assert parse_gpus("0,2", 4) == [0, 2] and parse_gpus("3,", 4) == [3]
    assert parse_gpus([1], 4) == [1] and parse_gpus((0, 3), 4) == [0, 3]
    for bad in ("5", "0,7", "x", "1,1", "-1", "0", [], True):
        with pytest.raises(squeezegen.SqueezegenError, match="--gpus"):
            parse_gpus(bad, 4)


def test_outputs_never_leave_out_dir_nor_overwrite_inputs(tmp_path):
    """A glob reaching up with '..' is refused; images inside OUT_DIR (inputs there, or a
    previous run's PNGs) are never read back or overwritten."""
    from squeezegen.segmentation.inputs import output_path
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "esc").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "esc" / "evil.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "x.jpg")
    with pytest.raises(squeezegen.SqueezegenError, match="would leave the output folder"):
        collect([str(tmp_path / "a" / "*" / ".." / ".." / "esc" / "*.jpg")], tmp_path / "a" / "out")
    for bad in ("../x.jpg", "/etc/x", "a/../../x", "", "a//b"):
        with pytest.raises(squeezegen.SqueezegenError, match="would leave the output folder"):
            output_path(tmp_path, bad)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a" / "x.jpg.png")  # an old output
    for inputs in ([tmp_path / "a"], [str(tmp_path / "a") + "/*"]):  # OUT_DIR is the input folder
        with pytest.raises(squeezegen.SqueezegenError, match="every image found .2. lies inside "
                                                             "the output folder"):
            collect(inputs, tmp_path / "a")


def test_a_name_the_file_system_refuses_fails_alone_and_resume_goes_on(data, tmp_path):
    from squeezegen.segmentation.outputs import is_done
    assert is_done(tmp_path, "L" * 300 + ".jpg") is False          # ENAMETOOLONG: not done
    (tmp_path / "out").mkdir()
    squeezegen.segmentation.write_failed(tmp_path / "out", [("bad\nname\udcff.jpg", "why\rnot")])
    lines = (tmp_path / "out" / "failed.txt").read_bytes().splitlines()
    assert len(lines) == 1 and lines[0].startswith(b"/")             # absolute: a valid input list
    # only what the line format cannot hold is escaped; the name's undecodable byte is kept
    assert lines[0].endswith(b"/bad\\nname\xff.jpg\twhy\\rnot"), lines


def test_names_with_backslashes_and_undecodable_bytes_segment_and_read_back(data, tmp_path):
    """Legal POSIX file names: a backslash is a character of the name (not a separator), and
    failed.txt lists an unreadable one so that it reads back as an input list."""
    import os
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a\\b.png")
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    summary = segment(data["model"], data["weights"], [folder], tmp_path / "out",
                      backend="numpy", progress=False)
    assert (summary.written, summary.failed) == (1, 1)
    assert (tmp_path / "out" / "a\\b.png.png").exists()
    again = segment(data["model"], data["weights"], [tmp_path / "out" / "failed.txt"],
                    tmp_path / "retry", backend="numpy", progress=False)
    assert again.failed == 1 and "cannot read the image" in again.failures[0][1], again.failures
    assert "not found" not in again.failures[0][1]


def test_an_unusable_out_dir_is_one_line_before_any_work(data, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = _cli(data["model"], "--weights", data["weights"], data["images"], "--backend", "numpy",
                "-o", tmp_path / "afile")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "cannot create the output folder" in lines[0] and "afile" in lines[0]


def test_ray_without_ray_installed_is_one_line(data, tmp_path):
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("Ray is installed here (test_segment_ray.py runs --ray)")
    proc = _cli(data["model"], "--weights", data["weights"], data["images"] / "png", "-o",
                tmp_path, "--ray", "auto", "--backend", "numpy")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("squeezegen: error: --ray needs Ray: pip install "
                                   "'squeezegen[ray]'")


@pytest.mark.parametrize("processes", [False, True, "tiny slots", "ignores out", "gpu resize",
                                       "gpu jpeg", "workers die"])
def test_one_network_per_gpu_through_compile_device(data, tmp_path, monkeypatch, processes):
    """The cuda backend's contract, without a GPU: squeezegen.compile(..., device=i) once per
    network, each made and called in its own thread; here compile returns the reference, and
    the masks are made in NumPy. With worker processes the masks reach the workers through
    the shared slots (page-locked once, unlocked at the end), or pickled when a batch's masks
    do not fit a slot ("tiny slots") or the backend did not put them there ("ignores out"):
    every PNG holds its own image's mask either way. With worker processes the networks also
    keep two batches in flight (`overlap`; here a NumPy stand-in). "gpu resize": the workers
    leave the decoded pixels in byte slots and the network makes the input from them
    (`ImageInputs`, here its NumPy oracle `inputs_on_cpu`), with the CPU's resize for those
    that do not fit (PNGs larger than a slot here) and 16-bit ones. "gpu jpeg": the JPEGs go
    as their files' bytes (`images.gpu_jpeg`), which `inputs_on_cpu` decodes with Pillow as
    nvJPEG would on a GPU (within a few levels there). "workers die": one worker
    process is killed decoding an image, another writing a PNG: each costs its image alone."""
    from squeezegen.runtime import device, image_inputs
    from squeezegen.segmentation import backends, pipeline
    from squeezegen.segmentation.worker_pool import fill_slot
    made, pinned = [], []

    class FakeNet:
        def __init__(self, graph, weights, batch, precision, device):
            self.run, self.batch, self.device = ReferenceExecutor(graph, weights), batch, device
            made.append((device, batch, precision, threading.get_ident()))
            self.closed = False

        def __call__(self, x):
            assert x.shape[0] <= self.batch
            return self.run(x)

        def close(self):
            self.closed = True

    def fake_compile(model, weights, batch=1, use_graph=True, tune=False, precision="fp32",
                     device=0):
        return FakeNet(model, weights, batch, precision, device)

    class FakeMasks:                  # runtime.masks.ClassMasks, made in NumPy
        def __init__(self, net):
            self.net = net

        def sampling(self, size, box):
            return size, box

        def __call__(self, x, sizes, boxes, out=None, check_values=True, make_input=None):
            if make_input is not None:
                x = make_input.x
            masks = [argmax_classes(bilinear(y, size, box, (32, 48))).astype(np.uint8)
                     for y, size, box in zip(self.net(x), sizes, boxes, strict=True)]
            total = sum(m.size for m in masks)
            if out is None or total > len(out) or processes == "ignores out":
                return masks
            offsets = np.cumsum([0] + [m.size for m in masks])
            out[:total] = np.concatenate([m.ravel() for m in masks])
            return [out[o:o + m.size].reshape(m.shape) for o, m in zip(offsets, masks)]

        def close(self):
            pass

    class FakePin:                    # runtime.device.PinnedHost, recording what it locked
        def __init__(self, array, device):
            self.array, self.closed = array, False
            pinned.append(self)

        def close(self):
            self.closed = True

    queued, jpegs = [], []

    class FakeInputs:                 # runtime.image_inputs.ImageInputs, made in NumPy
        def __init__(self, net, mean, std):
            self.mean, self.std = mean, std
            self.failures = []

        def queue(self, slots, images):
            queued.append(sum(i is not None for i in images))
            jpegs.append(sum(image_inputs.jpeg_of(i) is not None for i in images))
            return type("Made", (), {"x": image_inputs.inputs_on_cpu(
                slots, images, (3, 32, 48), self.mean, self.std)})

        def close(self):
            pass

    in_flight = []

    class FakeOverlap:                # runtime.overlap.OverlappedMasks: made at once, in NumPy
        def __init__(self, net, masks, inputs=None):
            self.masks, self.inputs, self.flying = masks, inputs, 0

        def submit(self, samplings, out=None, x=None, slots=None, images=None):
            self.flying += 1
            in_flight.append(self.flying)
            assert self.flying <= 2
            if slots is not None:
                x = self.inputs.queue(slots, images)
            sizes, boxes = zip(*samplings)
            return self.masks(None if slots is not None else x, sizes, boxes, out=out,
                              make_input=x if slots is not None else None)

        def result(self, ticket):
            self.flying -= 1
            return ticket

        def close(self):
            pass

    from squeezegen.runtime import masks, overlap
    monkeypatch.setattr(overlap, "OverlappedMasks", FakeOverlap)
    monkeypatch.setattr(image_inputs, "ImageInputs", FakeInputs)
    monkeypatch.setattr(squeezegen, "compile", fake_compile)
    monkeypatch.setattr(masks, "ClassMasks", FakeMasks)
    monkeypatch.setattr(device, "PinnedHost", FakePin)
    monkeypatch.setattr(backends, "gpu_count", lambda: 3)
    if processes == "tiny slots":
        monkeypatch.setattr(pipeline, "MASK_PIXELS_PER_IMAGE", 1)
    dead = {"00.jpg": "decoder", "deep/03.png": "PNG writer"} if processes == "workers die" else {}
    if dead:
        from squeezegen.segmentation import worker_pool
        monkeypatch.setenv(worker_pool.DIES, "decode:00.jpg,encode:03.png")
    specs = backends.backend_specs("cuda", data["graph"], data["w"], 4, "fp16", gpus="0,2",
                                   per_gpu=2)
    assert [s.label for s in specs] == ["cuda:0#0", "cuda:0#1", "cuda:2#0", "cuda:2#1"]
    items = collect([data["images"] / "png", data["images"] / "jpeg"], tmp_path)
    mean, std = np.full((3, 1, 1), 128, np.float32), np.ones((3, 1, 1), np.float32)
    items += collect([data["images"] / "broken"], tmp_path)
    settings = Settings((3, 32, 48), mean, std, batch=4, workers=2,
                        processes=bool(processes),
                        gpu_resize=processes in ("gpu resize", "gpu jpeg"),
                        gpu_jpeg=processes == "gpu jpeg", overlap=bool(processes))
    s = Pipeline(items, specs, tmp_path, settings, "cuda").run()
    assert (sum(queued) > 0) == (processes in ("gpu resize", "gpu jpeg"))
    assert sum(jpegs) == (12 if processes == "gpu jpeg" else 0)     # the 12 colour JPEGs
    # with overlap, each network submits a batch before collecting the one before
    assert max(in_flight, default=0) == (2 if processes else 0)
    items = [i for i in items[:-3] if i.name not in dead]
    # (the signal, 9, or an exit status of 255 where another thread's start of a process
    # reaped the dead one first: multiprocessing's own race)
    died = sorted((Path(p).name, DEATH.sub("(how)", why)) for p, why in s.failures
                  if "process died" in why)
    assert died == sorted((Path(n).name, f"the {what} process died (how) on this image")
                          for n, what in dead.items())
    assert (s.written, s.failed) == (24 - len(dead), 3 + len(dead))
    assert sum(s.per_network) == 24 - (1 if dead else 0)
    assert sorted(d for d, *_ in made) == [0, 0, 2, 2]
    assert {(b, p) for _, b, p, _ in made} == {(4, "fp16")}
    assert len({t for *_, t in made}) == 4 and threading.get_ident() not in {t for *_, t in made}
    if processes and os.access("/dev/shm", os.W_OK):   # shared memory, locked once
        batches = np.uint8 if processes in ("gpu resize", "gpu jpeg") else np.float32
        assert [p.array.dtype for p in pinned] == [batches, np.uint8]
        assert all(p.closed for p in pinned)
    else:
        assert pinned == []
    run = ReferenceExecutor(data["graph"], data["w"])
    for item in items:                # each image's own mask, wherever it travelled
        pixels, size = resample_input(item.path)
        x = np.zeros((1, 3, 32, 48), np.float32)
        fill_slot(x[0], pixels, (0, 0, 32, 48), mean, std)
        want = argmax_classes(bilinear(run(x)[0], size, (0, 0, 32, 48), (32, 48)))
        with Image.open(tmp_path / f"{item.name}.png") as im:
            np.testing.assert_array_equal(np.asarray(im), want)


def resample_input(path):
    """An image as segment's decoders read it for the (3, 32, 48) test model."""
    from squeezegen.images import read_pixels
    return read_pixels(path, 3, (32, 48), "stretch", draft=True)


def test_segment_bench_runs_on_the_cpu(data, tmp_path):
    """scripts/segment_bench.py (run on the H200 by hand) on the numpy backend, 3 images."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "scripts/segment_bench.py", "--images", "3",
                           "--batch", "2", "--backend", "numpy", "--model", str(data["model"]),
                           "--iters", "2", "--workers", "2", "--dir", str(tmp_path),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["segment"]["summary"]["written"] == 3
    assert result["network"]["img_s"] > 0 and result["segment"]["ratio_to_network"] > 0
    assert {"decode_ms", "decode_for_gpu_resize_ms", "encode_ms"} <= \
        set(result["per_image_ms_one_thread"])
    stage = result["segment"]["limited_by"].split(" (")[0]
    assert stage in {"decode", "encode", "decode and encode on the same CPUs",
                     "network with copies"}


def test_segmenter_is_a_plain_callable_for_bytes_and_arrays(data, first_run):
    """squeezegen.ray.Segmenter without Ray: encoded files (as read_binary_files gives) and
    decoded arrays (as read_images gives) in, the classes of each image out, a bad file as an
    error in its row."""
    from squeezegen.ray import Segmenter
    out, _ = first_run
    names = ["png/00.png", "png/deep/01.png", "grey/2.png", "broken/text.jpg"]
    seg = Segmenter(data["model"], data["weights"], batch=2, backend="numpy", mean=MEAN,
                    std=STD)
    paths = [str(data["images"] / n) for n in names]
    result = seg({"bytes": [Path(p).read_bytes() for p in paths], "path": np.array(paths)})
    assert list(result["path"]) == paths and result["error"][3].startswith("cannot read")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:3]]
    from_arrays = seg({"image": arrays})
    for i, n in enumerate(names[:3]):
        want = np.asarray(Image.open(out / f"{n}.png"))
        assert result["error"][i] == "" and from_arrays["error"][i] == ""
        np.testing.assert_array_equal(result["classes"][i], want)
        np.testing.assert_array_equal(from_arrays["classes"][i], want)


@pytest.mark.gpu
def test_cuda_backend_on_every_gpu_matches_the_numpy_one(data, first_run, tmp_path):
    """On a GPU machine: one network per GPU (two on each), each in its own thread, gives the
    numpy backend's PNGs (fp32 within 1e-4: an argmax may flip where two classes tie)."""
    from squeezegen.runtime.network import GPUError, cuda
    try:
        cuda()
    except GPUError as exc:
        pytest.skip(f"no GPU: {exc}")
    out, _ = first_run
    s = segment(data["model"], data["weights"], [data["images"]], tmp_path, batch=5,
                backend="cuda", gpus="all", per_gpu=2, mean=MEAN, std=STD, progress=False,
                jpeg_on="cpu")              # Pillow's pixels: test_nvjpeg.py compares nvJPEG's
    assert (s.written, s.failed) == (len(data["names"]) - 3, 3) and s.backend == "cuda"
    assert sum(s.per_network) == s.written and len(s.networks) >= 2
    for png in out.rglob("*.png"):
        got = np.asarray(Image.open(tmp_path / png.relative_to(out)))
        assert (got != np.asarray(Image.open(png))).mean() <= 1e-3, png


def test_decoding_in_worker_processes_gives_the_same_pngs(data, first_run, tmp_path):
    """decoders="processes" (the default with a GPU and 4+ CPUs): the images decoded in worker
    processes into shared batches, chunks of 3 (batch 5); the same PNGs, failures and resume
    as the threads, and no shared-memory file left behind."""
    import os
    out, _ = first_run
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    s = segment(data["model"], data["weights"], [data["images"]], tmp_path / "p", batch=5,
                backend="numpy", workers=2, mean=MEAN, std=STD, decoders="processes",
                progress=False)
    good = [n for n in data["names"] if n not in BAD]
    assert (s.written, s.failed, s.skipped) == (len(good), 3, 0) and s.decode_s > 0
    assert sorted(Path(p).relative_to(data["images"]).as_posix()
                  for p, _ in s.failures) == sorted(BAD)
    for name in good:
        got = np.asarray(Image.open(tmp_path / "p" / f"{name}.png"))
        np.testing.assert_array_equal(got, np.asarray(Image.open(out / f"{name}.png")), name)
    again = segment(data["model"], data["weights"], [data["images"]], tmp_path / "p", batch=5,
                    backend="numpy", workers=2, mean=MEAN, std=STD, decoders="processes",
                    progress=False)
    assert (again.written, again.skipped) == (0, len(good))
    if shm:
        assert set(os.listdir("/dev/shm")) <= shm
    with pytest.raises(squeezegen.SqueezegenError, match="decoders must be"):
        segment(data["model"], data["weights"], [data["images"]], tmp_path / "q",
                backend="numpy", decoders="fork")


def test_shared_batches_go_where_there_is_room_or_fail_in_one_line(tmp_path, monkeypatch):
    """segment's shared files are reserved in full when made: a full /dev/shm (a container's
    64 MB) means the next folder, never a SIGBUS at the first write past what tmpfs had; no
    folder with room is one error naming each and why."""
    import errno
    import os
    from squeezegen.errors import InputError
    from squeezegen.segmentation import worker_pool
    full, roomy = tmp_path / "full", tmp_path / "roomy"
    full.mkdir()
    roomy.mkdir()
    reserve = os.posix_fallocate

    def fallocate(fd, offset, length):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(full)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        reserve(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    monkeypatch.setattr(worker_pool, "shared_folders", lambda: [str(full), str(roomy)])
    folder = worker_pool.shared_files({"a.f32": 4096, "b.u8": 10_000})
    try:
        assert Path(folder.name).parent == roomy and list(full.iterdir()) == []
    finally:
        folder.cleanup()
    monkeypatch.setattr(worker_pool, "shared_folders",
                        lambda: [str(tmp_path / "gone"), str(full), str(roomy)])
    folder = worker_pool.shared_files({"a.f32": 4096, "b.u8": 10_000})
    try:                              # a folder that cannot take a new one: the next
        assert Path(folder.name).parent == roomy
        assert (Path(folder.name) / "b.u8").stat().st_size == 10_000
    finally:
        folder.cleanup()
    monkeypatch.setattr(worker_pool, "shared_folders", lambda: [str(full)])
    with pytest.raises(InputError, match=r"no room for segment's shared batches \(14,096 "
                                         r"bytes\): .*full: No space left on device"):
        worker_pool.shared_files({"a.f32": 4096, "b.u8": 10_000})
    assert list(full.iterdir()) == []


def _pictures(folder, names, size=(30, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_picture(rng, *size)).save(folder / name)


def test_a_dying_decoder_process_costs_only_its_image(data, tmp_path, monkeypatch):
    """A worker process killed (SIGKILL: a codec's segfault, the OOM killer) while decoding
    one image breaks the whole executor; the run goes on: the workers restart, the images they
    held are decoded again each in a process of its own, and only the culprit fails, with the
    signal (worker_pool's test hook kills the worker on that image)."""
    from squeezegen.segmentation import worker_pool
    names = [f"{i:02d}.png" for i in range(14)]
    _pictures(tmp_path / "in", names)
    monkeypatch.setenv(worker_pool.DIES, "decode:05.png")
    lines = []
    s = segment(data["model"], data["weights"], [tmp_path / "in"], tmp_path / "out", batch=4,
                backend="numpy", workers=2, decoders="processes", progress=False,
                log=lines.append)
    assert (s.written, s.failed) == (13, 1), s.failures
    assert [(p, DEATH.sub("(how)", why)) for p, why in s.failures] == [
        (str(tmp_path / "in" / "05.png"), "the decoder process died (how) on this image")]
    assert any("a worker process died: the workers were restarted" in l for l in lines)
    listed = (tmp_path / "out" / "failed.txt").read_text().splitlines()
    assert [DEATH.sub("(how)", line) for line in listed] == [
        f"{tmp_path / 'in' / '05.png'}\tthe decoder process died (how) on this image"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == \
        [f"{n}.png" for n in names if n != "05.png"]
    assert not _tmp_files(tmp_path / "out")


def test_temp_files_of_an_interrupted_run_are_removed_by_the_next(data, tmp_path):
    """SIGKILL leaves atomic_write's `.<name>.<8 random>.tmp` files; the next run removes those
    of its outputs (a PNG or .npy of an image name, failed.txt), in one line, and nothing else."""
    out = tmp_path / "out"
    _pictures(tmp_path / "in", ["a.png", "sub/b.jpg"])
    stale = [out / ".a.png.png.k3x_9q0z.tmp", out / "sub" / ".b.jpg.npy.abcdefgh.tmp",
             out / ".failed.txt.0a1b2c3d.tmp"]
    kept = [out / ".notes.txt.abcdefgh.tmp", out / "a.png.png.abcdefgh.tmp",
            out / ".a.png.png.abc.tmp", out / "sub" / ".b.jpg.abcdefgh.tmp", out / "keep.tmp"]
    for p in stale + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    lines = []
    s = segment(data["model"], data["weights"], [tmp_path / "in"], out, backend="numpy",
                progress=False, log=lines.append)
    assert s.written == 2
    assert [l for l in lines if "temporary" in l] == [
        f"squeezegen: removed 3 temporary files that an interrupted run left in {out}"]
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_a_list_names_its_entries_from_its_own_folder(tmp_path):
    """A .txt list's output names depend on each entry and the list's folder alone: editing
    the list (adding entries, missing ones too) renames nothing that was done. Entries reaching
    up keep their path with '__' for each '..'; absolute ones outside, their path from the
    root. A UTF-8 byte-order mark at the start is not part of the first entry."""
    _pictures(tmp_path / "col", ["A/a.png", "B/a.png"])
    _pictures(tmp_path / "lists", ["in/c.png"])
    listing = tmp_path / "lists" / "l9.txt"
    listing.write_bytes("\ufeff../col/A/a.png\n".encode())
    assert [i.name for i in collect([listing], tmp_path / "out")] == ["__/col/A/a.png"]
    absolute = tmp_path / "col" / "B" / "a.png"
    listing.write_text(f"../col/A/a.png\n../col/B/a.png\n../gone/x.png\nin/./c.png\n"
                       f"{absolute}\n")
    items = collect([listing], tmp_path / "out")
    root = tmp_path.relative_to(tmp_path.anchor).as_posix()
    assert [i.name for i in items] == ["__/col/A/a.png", "__/col/B/a.png", "__/gone/x.png",
                                       "in/c.png"]          # the absolute B/a.png: a duplicate
    assert items[-1].path == str(tmp_path / "lists" / "in" / "c.png")
    (tmp_path / "lists" / "only.txt").write_text(f"{absolute}\n")
    assert [i.name for i in collect([tmp_path / "lists" / "only.txt"], tmp_path / "out")] == \
        [f"{root}/col/B/a.png"]


def test_out_dir_holding_every_input_is_an_error_and_some_a_line(data, tmp_path):
    _pictures(tmp_path / "imgs", ["a.png", "b.png"])
    _pictures(tmp_path / "more", ["c.png"])
    proc = _cli(data["model"], "--weights", data["weights"], tmp_path / "imgs", "-o",
                tmp_path / "imgs", "--backend", "numpy")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0] == (f"squeezegen: error: {tmp_path / 'imgs'}: every image found (2) lies "
                        "inside the output folder, where segment never reads (its outputs go "
                        "there): give another -o")
    said = []
    s = segment(data["model"], data["weights"], [tmp_path / "imgs", tmp_path / "more"],
                tmp_path / "imgs", backend="numpy", progress=False, log=said.append)
    assert (s.images, s.written) == (1, 1)
    assert said == [f"squeezegen: 2 of the images found lie inside the output folder "
                    f"{tmp_path / 'imgs'} and are not read"]
    with pytest.raises(squeezegen.SqueezegenError, match="no inputs given"):
        segment(data["model"], data["weights"], [], tmp_path / "o", backend="numpy")


def test_symlinked_folders_are_followed_and_unreadable_ones_listed(data, tmp_path,
                                                                   monkeypatch):
    """A symbolic link to a folder is walked like a folder, each real folder once (a link back
    up does not loop); a subfolder that cannot be listed is one line and a line of
    failed.txt, and the rest of the run goes on."""
    _pictures(tmp_path / "in", ["a.png", "real/b.png", "locked/c.png"])
    _pictures(tmp_path / "elsewhere", ["d.png"])
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "in" / "real" / "loop").symlink_to(tmp_path / "in")
    (tmp_path / "in" / "twin").symlink_to(tmp_path / "in" / "real")
    locked = str(tmp_path / "in" / "locked")
    scandir = os.scandir

    def refusing(path="."):             # chmod 000 is no obstacle to root: refuse it here
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    said = []
    s = segment(data["model"], data["weights"], [tmp_path / "in"], tmp_path / "out",
                backend="numpy", progress=False, log=said.append)
    assert sorted(p.relative_to(tmp_path / "out").as_posix()
                  for p in (tmp_path / "out").rglob("*.png")) == \
        ["a.png.png", "linked/d.png.png", "real/b.png.png"]
    assert (s.written, s.failed) == (3, 0)
    assert s.unreadable == [(locked, "cannot read the folder: Permission denied")]
    assert said == [f"squeezegen: skipped {locked}: cannot read the folder: Permission denied"]
    assert (tmp_path / "out" / "failed.txt").read_text() == \
        f"{locked}\tcannot read the folder: Permission denied\n"


@pytest.mark.parametrize("decoders", ["threads", "processes"])
def test_decompression_bomb_warning_is_one_line_naming_the_file(data, tmp_path, monkeypatch,
                                                                 capfd, decoders):
    """Pillow warns (without the file's name) about images above MAX_IMAGE_PIXELS and up to
    twice that; segment says it in one line naming the image, from threads or processes (which
    take the parent's limit)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _pictures(tmp_path / "in", ["big.png"], size=(30, 40))      # 1,200 pixels
    _pictures(tmp_path / "in", ["small.png"], size=(20, 20))
    said = []
    s = segment(data["model"], data["weights"], [tmp_path / "in"], tmp_path / "out",
                backend="numpy", progress=False, log=said.append, decoders=decoders, workers=2)
    assert (s.written, s.failed) == (2, 0)
    assert said == [f"squeezegen: warning: {tmp_path / 'in' / 'big.png'}: 40x30 = 1,200 pixels, "
                    "more than Pillow's limit of 1,000 (PIL.Image.MAX_IMAGE_PIXELS) against "
                    "decompression bombs; decoded all the same"]
    captured = capfd.readouterr()
    assert "DecompressionBomb" not in captured.err + captured.out


def test_failed_txt_cannot_be_a_folder(data, tmp_path):
    """OUT_DIR/failed.txt is where the failures go: an input folder named failed.txt (whose
    outputs would go there), or a folder already there, is one line before any work."""
    _pictures(tmp_path / "in", ["a.png", "failed.txt/b.png"])
    with pytest.raises(squeezegen.SqueezegenError, match="the outputs of the input folder "
                                                         "'failed.txt' would go into"):
        segment(data["model"], data["weights"], [tmp_path / "in"], tmp_path / "out",
                backend="numpy", progress=False)
    (tmp_path / "out2" / "failed.txt").mkdir(parents=True)
    proc = _cli(data["model"], "--weights", data["weights"], tmp_path / "in" / "a.png", "-o",
                tmp_path / "out2", "--backend", "numpy")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"squeezegen: error: {tmp_path / 'out2' / 'failed.txt'}: "
                               "segment writes its list of failures there")
    assert not list((tmp_path / "out2").rglob("*.png"))


@pytest.mark.parametrize("option,value,message", [
    ("precision", "fp8", "precision must be fp32, tf32, fp16, got 'fp8'"),
    ("per_gpu", 0, "per_gpu must be an integer of at least 1, got 0"),
    ("workers", -3, "workers must be an integer of at least 1, got -3"),
    ("gpus", "xyz", "--gpus takes all"),
    ("gpus", "-1", "--gpus takes all"),
    ("batch", 2.5, "batch must be an integer of at least 1, got 2.5"),
    ("mean", "abc", "--mean needs 1 or 3 finite numbers"),
    ("std", 1e-45, "--std [1e-45] is too small for --mean [128.0]"),
    ("std", 1e-50, "--std must not be 0"),
    ("mean", [1e39], "--mean needs 1 or 3 finite numbers"),
])
def test_bad_options_are_one_line_errors(data, tmp_path, option, value, message):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no overflow warnings either
        with pytest.raises(squeezegen.SqueezegenError) as error:
            segment(data["model"], data["weights"], [data["images"] / "png"], tmp_path,
                    backend="numpy", progress=False, **{option: value})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bare_numbers_for_mean_and_std_and_gpus_on_the_numpy_backend(data, tmp_path):
    s = segment(data["model"], data["weights"], [data["images"] / "png" / "00.png"], tmp_path,
                backend="numpy", progress=False, mean=100.0, std=60, gpus=[0])
    assert s.written == 1
    proc = _cli(data["model"], "--weights", data["weights"], data["images"] / "png", "-o",
                tmp_path / "x", "--backend", "numpy", "--gpus", "abc")
    assert proc.returncode == 1 and proc.stderr.startswith("squeezegen: error: --gpus takes")


def test_a_ctrl_c_after_the_last_image_is_a_finished_run(data, tmp_path):
    """Ctrl-C (KeyboardInterrupt in the main thread) once every image is written: the run is
    complete, not 'Interrupted: 4 of 4'."""
    items = collect([data["images"] / "png" / "deep"], tmp_path)

    class Slow(NumpyBackend):           # the run lasts long enough to be watched
        def __call__(self, x):
            time.sleep(0.15)
            return super().__call__(x)

    class LateCtrlC(Pipeline):
        def _show(self):
            while self.summary.written < len(items):
                time.sleep(0.01)
            raise KeyboardInterrupt

    mean, std = np.zeros((3, 1, 1), np.float32), np.ones((3, 1, 1), np.float32)
    specs = [BackendSpec("numpy", lambda: Slow(data["graph"], data["w"], 2))]
    s = LateCtrlC(items, specs, tmp_path, Settings((3, 32, 48), mean, std, batch=2),
                  "numpy").run()
    assert s.written == len(items) == 6 and not s.interrupted
    assert not s.text().startswith("Interrupted")
