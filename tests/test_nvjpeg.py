"""JPEGs decoded by nvJPEG's hardware decoder on the GPU (runtime/nvjpeg.py, `segment --jpeg-on`).

On the CPU: which files go to the GPU's decoder as bytes (`images.gpu_jpeg`: baseline colour
JPEGs that fit a slot, nothing else), the draft scale Pillow would pick (`draft_scale`, against
Pillow's own `draft` on many sizes), the JPEG slots' checks in `ImageInputs.prepare` and their
decoding in `inputs_on_cpu` (Pillow's pixels), and where the option sends the JPEGs. On a GPU:
nvJPEG's pixels against Pillow's at full and draft scales, the input the GPU makes from JPEG
slots against `inputs_on_cpu`, and `segment` with the JPEGs decoded on the GPU against the CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

import squeezegen
from helpers import ODDSEG, needs_gpu, random_weights
from squeezegen.images import check_normalisation, draft_scale, gpu_jpeg, scaled_size
from squeezegen.runtime import image_inputs
from squeezegen.segmentation.slots import slot_bytes

Image = pytest.importorskip("PIL.Image")

SHAPE = (3, 21, 34)
LIMIT = slot_bytes(SHAPE)            # 17,136 bytes


def _photo(path, h: int, w: int, seed: int = 0, **save) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    pic = np.stack([xx * 255 // w, yy * 255 // h, (3 * xx + yy) % 256], axis=2)
    pic = np.clip(pic + rng.normal(0, 6, pic.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pic).save(path, **({"quality": 90} | save))
    return pic


def test_draft_scale_is_pillows():
    rng = np.random.default_rng(3)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(8, 1200, 2))
        th, tw = (int(v) for v in rng.integers(5, 300, 2))
        with Image.open(_save(Image.new("RGB", (w, h)))) as jpeg:
            jpeg.draft("RGB", (tw, th))
            assert jpeg.size[::-1] == scaled_size(h, w, draft_scale((h, w), (th, tw)))


def _save(im):
    import io
    f = io.BytesIO()
    im.save(f, "JPEG")
    f.seek(0)
    return f


def test_which_files_go_to_the_gpu_as_bytes(tmp_path):
    _photo(tmp_path / "base.jpg", 90, 140)
    found = gpu_jpeg(tmp_path / "base.jpg", SHAPE[1:], "stretch", LIMIT)
    assert found is not None
    data, size, scale = found
    assert data == (tmp_path / "base.jpg").read_bytes() and size == (90, 140) and scale == 4
    box = (0, 0, 21, 34)
    assert scale == draft_scale(size, box[2:])
    # letterbox: the box is smaller, the scale still Pillow's for it
    found = gpu_jpeg(tmp_path / "base.jpg", SHAPE[1:], "letterbox", LIMIT)
    assert found[2] == 4
    _photo(tmp_path / "prog.jpg", 90, 140, progressive=True)
    _photo(tmp_path / "big.jpg", 300, 400, seed=1, quality=100)     # bytes past the slot
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(tmp_path / "grey.jpg")
    Image.new("CMYK", (60, 50)).save(tmp_path / "cmyk.jpg")
    _photo(tmp_path / "p.png", 50, 60)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "base.jpg").read_bytes()[:-40])
    (tmp_path / "fake.jpg").write_bytes(b"\xff\xd8 not a jpeg \xff\xd9")
    base = (tmp_path / "base.jpg").read_bytes()
    sof = base.index(b"\xff\xc0")
    for marker, name in [(b"\xff\xc1", "extended.jpg"), (b"\xff\xc9", "arithmetic.jpg")]:
        (tmp_path / name).write_bytes(base[:sof] + marker + base[sof + 2:])
    sos = base.index(b"\xff\xda")                # a second scan: not for the hardware
    (tmp_path / "scans.jpg").write_bytes(base[:-2] + base[sos:])
    # everything else (and what cannot be read: the CPU's decoder reports it, naming the file)
    for name in ("prog.jpg", "big.jpg", "grey.jpg", "cmyk.jpg", "p.png", "cut.jpg",
                 "fake.jpg", "missing.jpg", "extended.jpg", "arithmetic.jpg", "scans.jpg"):
        assert gpu_jpeg(tmp_path / name, SHAPE[1:], "stretch", LIMIT) is None, name


def test_frame_markers():
    from squeezegen.images import frame_marker
    app = b"\xff\xe0\x00\x04ab"
    assert frame_marker(b"\xff\xd8" + app + b"\xff\xc0\x00\x02") == 0xC0
    assert frame_marker(b"\xff\xd8" + app + b"\xff\xff\xc2\x00\x02") == 0xC2
    assert frame_marker(b"\xff\xd8\xff\xc4\x00\x02\xff\xda\x00\x02") is None  # scan first
    assert frame_marker(b"\xff\xd8" + app + b"junk") is None
    assert frame_marker(b"\xff\xd8\xff\xe0\xff\xff") is None          # a length past the end


def _jpeg_slots(tmp_path, sizes):
    """Slots holding JPEG files' bytes, and their image entries (stretch)."""
    slots = np.zeros((len(sizes), LIMIT), np.uint8)
    images = []
    for i, (h, w) in enumerate(sizes):
        _photo(tmp_path / f"{i}.jpg", h, w, seed=i)
        data, size, scale = gpu_jpeg(tmp_path / f"{i}.jpg", SHAPE[1:], "stretch", LIMIT)
        slots[i, :len(data)] = np.frombuffer(data, np.uint8)
        images.append(scaled_size(*size, scale) + ((0, 0) + SHAPE[1:], (len(data), scale)))
    return slots, images


def test_inputs_on_cpu_decode_jpeg_slots_as_pillow_does(tmp_path):
    mean, std = check_normalisation(3, [100.0, 110.5, 120.0], [60.0, 1.0, 0.3])
    slots, images = _jpeg_slots(tmp_path, [(90, 140), (30, 40), (200, 90)])
    x = image_inputs.inputs_on_cpu(slots, images, SHAPE, mean, std)
    for i in range(3):
        with Image.open(tmp_path / f"{i}.jpg") as im:
            im.draft("RGB", (34, 21))
            want = np.asarray(im.convert("RGB").resize((34, 21), Image.BILINEAR), np.float32)
        np.testing.assert_allclose(x[i], (want.transpose(2, 0, 1) - mean) / std, rtol=1e-6)


def test_jpeg_slots_are_checked(tmp_path):
    from squeezegen.runtime.image_inputs import ImageInputs
    inputs = ImageInputs.__new__(ImageInputs)          # prepare's checks, without a GPU
    inputs.net = type("Net", (), {"batch": 4})()
    inputs.shape, inputs.slot_bytes = SHAPE, LIMIT
    inputs._ready_bytes = 4 * int(np.prod(SHAPE))
    slots, images = _jpeg_slots(tmp_path, [(90, 140)])
    *_, used, back = inputs.prepare(slots, images)
    assert used == [0] and back == images                # nothing copied: nvJPEG reads them
    for bad in [(0, 4), (LIMIT + 1, 4), (100, 3)]:
        with pytest.raises(squeezegen.SqueezegenError, match="a JPEG slot of"):
            inputs.prepare(slots, [images[0][:3] + (bad,)])


def test_where_the_jpegs_are_decoded():
    from squeezegen.segmentation import _jpeg_on_gpu
    said = []
    assert not _jpeg_on_gpu("cpu", True, 3, 0, said.append)
    assert not _jpeg_on_gpu("auto", False, 3, 0, said.append)
    assert not _jpeg_on_gpu("auto", True, 1, 0, said.append)
    assert said == []
    for gpu_resize, channels in [(False, 3), (True, 1)]:
        with pytest.raises(squeezegen.SqueezegenError, match="decoding JPEGs on the GPU needs"):
            _jpeg_on_gpu("gpu", gpu_resize, channels, 0, said.append)
    with pytest.raises(squeezegen.SqueezegenError, match="jpeg_on must be auto, gpu or cpu"):
        _jpeg_on_gpu("tpu", True, 3, 0, said.append)


def test_jpeg_on_gpu_needs_the_gpu_resize(tmp_path):
    (tmp_path / "m.yaml").write_text(ODDSEG)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    (tmp_path / "in").mkdir()
    _photo(tmp_path / "in" / "a.jpg", 30, 40)
    with pytest.raises(squeezegen.SqueezegenError, match="decoding JPEGs on the GPU needs"):
        squeezegen.segment(tmp_path / "m.yaml", random_weights(graph, 1), tmp_path / "in",
                           tmp_path / "out", backend="numpy", jpeg_on="gpu", progress=False)


# ------------------------------------------------------------------ on a GPU
def _nvjpeg_or_skip():
    from squeezegen.runtime.nvjpeg import available
    why = available(0)
    if why is not None:
        pytest.skip(why)


@needs_gpu
def test_nvjpeg_pixels_are_pillows_within_a_few_levels(tmp_path):
    """nvJPEG's IDCT, chroma upsampling and DCT-domain scaling are not libjpeg-turbo's: its
    pixels differ from Pillow's by a few levels (measured: see MAX_LEVELS, MEAN_LEVELS)."""
    _nvjpeg_or_skip()
    from squeezegen.runtime.device import current
    from squeezegen.runtime.nvjpeg import JpegDecoder
    with current(0) as drv:
        decoder = JpegDecoder(4)
        stream = drv.Stream()
        try:
            for i, (h, w, sub) in enumerate([(90, 140, 2), (31, 47, 0), (200, 90, 1),
                                             (64, 64, 2)]):
                _photo(tmp_path / f"{i}.jpg", h, w, seed=i, subsampling=sub)
                data = (tmp_path / f"{i}.jpg").read_bytes()
                info = decoder.info(data)
                assert (info.height, info.width, info.channels) == (h, w, 3)
                for scale in (1, 2, 4, 8):
                    dh, dw = scaled_size(h, w, scale)
                    d = drv.mem_alloc(dh * dw * 3)
                    decoder.decode([data], [(int(d), dw * 3)], stream.handle, 3, [scale])
                    stream.synchronize()
                    got = np.empty((dh, dw, 3), np.uint8)
                    drv.memcpy_dtoh(got, d)
                    d.free()
                    with Image.open(tmp_path / f"{i}.jpg") as im:
                        im.draft("RGB", (dw, dh))
                        want = np.asarray(im.convert("RGB"))
                    assert want.shape == got.shape
                    diff = np.abs(want.astype(np.int16) - got)
                    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, \
                        (i, scale, diff.max(), diff.mean())
            assert decoder.info(b"\xff\xd8 not a jpeg") is None
        finally:
            decoder.close()


MAX_LEVELS, MEAN_LEVELS = 24, 1.5


@needs_gpu
def test_gpu_input_from_jpeg_slots(tmp_path):
    _nvjpeg_or_skip()
    (tmp_path / "m.yaml").write_text(ODDSEG)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    mean, std = check_normalisation(3, [100.0, 110.5, 120.0], [60.0, 60.0, 60.0])
    slots, images = _jpeg_slots(tmp_path, [(90, 140), (30, 40), (200, 90)])
    images.insert(1, None)                   # a ready slot among them
    ready = np.random.default_rng(1).normal(size=int(np.prod(SHAPE))).astype(np.float32)
    slots = np.insert(slots, 1, 0, axis=0)
    slots[1, :ready.nbytes] = ready.view(np.uint8)
    with squeezegen.compile(graph, random_weights(graph, 2), batch=4) as net:
        inputs = image_inputs.ImageInputs(net, mean, std)
        try:
            for _ in range(2):
                with net.forward_from(inputs.queue(slots.copy(), images)):
                    pass
                got = net.tensor(graph.input.name)
                want = image_inputs.inputs_on_cpu(slots, images, SHAPE, mean, std)
                np.testing.assert_array_equal(got[1], want[1])
                assert np.abs(got - want).max() * 60.0 <= MAX_LEVELS
                assert inputs.fallbacks == 0 and inputs.failures == []     # nvJPEG did it all
        finally:
            inputs.close()


def _broken_huffman_table(path) -> bytes:
    """A JPEG whose first Huffman table claims too many codes: its header reads (gpu_jpeg sends
    it to the GPU), its decoding fails in nvJPEG and in Pillow alike."""
    data = bytearray(path.read_bytes())
    i = data.find(b"\xff\xc4")
    data[i + 5:i + 21] = b"\xff" * 16
    return bytes(data)


def test_a_broken_huffman_table_goes_to_the_gpu_and_fails_in_pillow(tmp_path):
    """What the GPU path does with a JPEG whose header reads but whose data cannot be decoded:
    nvJPEG refuses it, then Pillow (`decode_jpeg_slot`) raises, and the image fails."""
    _photo(tmp_path / "a.jpg", 64, 96)
    (tmp_path / "bad.jpg").write_bytes(_broken_huffman_table(tmp_path / "a.jpg"))
    data, size, scale = gpu_jpeg(tmp_path / "bad.jpg", SHAPE[1:], "stretch", LIMIT)
    slot = np.zeros(LIMIT, np.uint8)
    slot[:len(data)] = np.frombuffer(data, np.uint8)
    with pytest.raises(OSError):
        image_inputs.decode_jpeg_slot(slot, (len(data), scale), scaled_size(*size, scale))


@needs_gpu
def test_segment_with_jpegs_decoded_on_the_gpu(tmp_path):
    """The masks with nvJPEG decoding against Pillow decoding: the same files and failures, and
    nearly every mask pixel the same (the inputs differ by a few levels)."""
    import os
    _nvjpeg_or_skip()
    if (os.cpu_count() or 1) < 2:
        pytest.skip("worker processes need 2 CPUs")
    (tmp_path / "m.yaml").write_text(ODDSEG)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    weights = random_weights(graph, 6)
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(5)
    for i in range(30):
        h, w = int(rng.integers(25, 220)), int(rng.integers(35, 240))
        _photo(tmp_path / "in" / f"{i:02d}.jpg", h, w, seed=i)
    _photo(tmp_path / "in" / "prog.jpg", 90, 140, progressive=True)
    (tmp_path / "in" / "cut.jpg").write_bytes((tmp_path / "in" / "00.jpg").read_bytes()[:200])
    (tmp_path / "in" / "badhuff.jpg").write_bytes(_broken_huffman_table(tmp_path / "in" / "01.jpg"))
    outs = {}
    for where in ("gpu", "cpu"):
        s = squeezegen.segment(tmp_path / "m.yaml", weights, tmp_path / "in", tmp_path / where,
                               batch=8, jpeg_on=where, mean=[100.0, 110.5, 120.0],
                               std=[60.0, 60.0, 60.0], decoders="processes", workers=2,
                               progress=False)
        assert (s.written, s.failed) == (31, 2), s.failures
        assert sorted(p.rsplit("/", 1)[-1] for p, _ in s.failures) == ["badhuff.jpg", "cut.jpg"]
        assert s.jpegs_on == where and (("JPEGs decoded on the GPU" in s.text())
                                        == (where == "gpu"))
        outs[where] = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / where).rglob("*.png")}
    assert outs["gpu"].keys() == outs["cpu"].keys()
    same = np.mean([np.mean(outs["gpu"][k] == outs["cpu"][k]) for k in outs["cpu"]])
    assert same >= 0.97, same
