"""The input batch made on the GPU from decoded images (segmentation/bilinear8.py,
runtime/image_inputs.py, templates/image_inputs.cu.j2): `segment --resize-on gpu`.

On the CPU: bilinear8's tables resize 8-bit images as Pillow's `resize(BILINEAR)` does, to the
bit, in the pass order of the installed Pillow (13: vertical first when the height shrinks by
more than twice what the width does); the kernel compiles with nvcc -Werror for grey and RGB
models; the tables it reads, walked in NumPy as the kernel walks them, give bilinear8's resize
and `inputs_on_cpu`; the kernel's own source, compiled as host C++, gives `inputs_on_cpu` bit
for bit and reads nothing outside a slot's used bytes and the tables; `read_decoded` hands
the workers 8-bit pixels and falls back to the CPU's resize for 16-bit images and images too
large for a slot. On a GPU: the kernel's input equals `inputs_on_cpu` bit for bit (odd sizes,
growing and shrinking, letterbox boxes, a ready slot, batch 3 of 4), and `segment` writes the
same masks whether the GPU (two batches in flight) or the CPU resizes.
"""
from __future__ import annotations

import numpy as np
import pytest

import squeezegen
from helpers import ODDSEG, needs_gpu, random_weights
from squeezegen.images import check_normalisation, fit_box, read_decoded, read_pixels
from squeezegen.runtime import image_inputs
from squeezegen.runtime.compile import compile_cubin
from squeezegen.segmentation import bilinear8
from squeezegen.segmentation.slots import input_view, slot_bytes

Image = pytest.importorskip("PIL.Image")

SHAPE = (3, 21, 34)
# (decoded height, width, box): shrinking, growing, one axis each way, letterboxed, one pixel,
# the box's own size (no pass at all), 8x the input's pixels (the most a slot holds), the height
# shrinking far more than the width (Pillow 13: vertical pass first)
IMAGES = [(40, 70, (0, 0, 21, 34)), (9, 13, (0, 0, 21, 34)), (60, 20, (0, 0, 21, 34)),
          (40, 70, (2, 0, 17, 34)), (1, 1, (0, 0, 21, 34)), (21, 34, (0, 0, 21, 34)),
          (84, 68, (0, 5, 21, 24)), (80, 35, (0, 0, 21, 34))]


@pytest.mark.parametrize("channels", [1, 3])
def test_resize_is_pillows_bilinear_to_the_bit(channels):
    """Odd sizes, growing and shrinking, each pass order (Pillow 13 runs the vertical pass
    first when the height shrinks by more than twice what the width does)."""
    rng = np.random.default_rng(channels)
    orders = set()
    for trial in range(60):
        src_h, src_w = (int(v) for v in rng.integers(1, 200, 2))
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        pixels = rng.integers(0, 256, (src_h, src_w, channels), dtype=np.uint8)
        im = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        want = np.asarray(im.resize((w, h), Image.BILINEAR)).reshape(h, w, channels)
        got = bilinear8.resize(pixels, h, w)
        assert got.shape == (h, w, channels) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want, err_msg=f"{src_h}x{src_w} -> {h}x{w}")
        orders.add(bilinear8.vertical_first((src_h, src_w), (h, w)))
    assert orders == {False, True} or bilinear8._pillow_version() < (13, 0)


def test_pass_order_follows_the_installed_pillow(monkeypatch):
    """Pillow 13: vertical first when the height shrinks by more than twice what the width
    does; 12.2: only images over 100 times as tall as wide that shrink in height; older: never."""
    monkeypatch.setattr(bilinear8, "_pillow_version", lambda: (13, 0))
    assert bilinear8.vertical_first((300, 100), (100, 99))
    assert not bilinear8.vertical_first((300, 100), (200, 40))     # 100 rows, 60 columns
    monkeypatch.setattr(bilinear8, "_pillow_version", lambda: (12, 2))
    assert not bilinear8.vertical_first((300, 100), (100, 99))
    assert bilinear8.vertical_first((301, 3), (224, 3))
    assert not bilinear8.vertical_first((300, 3), (224, 3))
    assert not bilinear8.vertical_first((301, 3), (400, 3))         # growing
    monkeypatch.setattr(bilinear8, "_pillow_version", lambda: (12, 1))
    assert not bilinear8.vertical_first((301, 3), (224, 3))


def test_resize_of_photos_decoded_in_draft_mode_equals_pillow(tmp_path):
    """segment's case: JPEGs of 320x240 to 1024x768 decoded at a reduced scale, to 227x227."""
    rng = np.random.default_rng(0)
    for i in range(6):
        w = int(rng.integers(320, 1025))
        h = int(rng.integers(240, 769))
        yy, xx = np.mgrid[0:h, 0:w]
        pic = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=2)
        pic = np.clip(pic + rng.normal(0, 6, pic.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pic).save(tmp_path / f"{i}.jpg", quality=90)
        pixels, size, decoded = read_decoded(tmp_path / f"{i}.jpg", 3, (227, 227), "stretch",
                                             8 * 227 * 227)
        assert decoded and size == (h, w) and pixels.dtype == np.uint8
        assert min(pixels.shape[:2]) >= 227 and pixels.size <= 8 * 227 * 227 * 3
        want, _ = read_pixels(tmp_path / f"{i}.jpg", 3, (227, 227), "stretch", draft=True)
        np.testing.assert_array_equal(bilinear8.resize(pixels, 227, 227), want)


def test_axis_tables_are_read_only_and_remembered():
    first, count, weights = bilinear8.axis_table(640, 227)
    assert bilinear8.axis_table(640, 227)[0] is first
    assert weights.dtype == np.int32 and (count >= 1).all() and first.min() == 0
    assert (first + count).max() == 640
    # each output's weights sum to 1.0 in 22-bit fixed point, up to their rounding
    assert np.abs(weights.sum(axis=1) - (1 << 22)).max() <= weights.shape[1]
    with pytest.raises(ValueError, match="read-only"):
        weights[0, 0] = 1
    with pytest.raises(ValueError, match="cannot resize"):
        bilinear8.axis_table(0, 3)


def _slots(rng, images, shape):
    """Slots holding each image's random decoded pixels (None: a ready float32 input)."""
    slots = np.zeros((len(images), slot_bytes(shape)), np.uint8)
    for i, image in enumerate(images):
        if image is None:
            floats = int(np.prod(shape))
            slots[i, :4 * floats].view(np.float32)[:] = rng.normal(size=floats)
        else:
            n = image[0] * image[1] * shape[0]
            slots[i, :n] = rng.integers(0, 256, n, dtype=np.uint8)
    return slots


def _emulate(slots, meta, taps, weights, shape, mean, std):
    """What the kernel computes, in NumPy: per input pixel, its row's and column's taps from
    the tables, the first pass's sums clipped to 8 bits, the second's over them, normalised."""
    c, height, width = shape
    x = np.zeros((len(meta), c, height, width), np.float32)
    for i, (kind, src_h, src_w, top, left, bh, bw, row, col, vertical_first) in \
            enumerate(meta.tolist()):
        if kind == image_inputs.KIND_READY:
            x[i] = input_view(slots[i], shape)
            continue
        pixels = slots[i, :src_h * src_w * c].reshape(src_h, src_w, c).astype(np.int64)
        out = np.zeros((bh, bw, c), np.int64)
        for y in range(bh):
            r0, rows, rw = taps[row + y]
            for xx in range(bw):
                c0, cols, cw = taps[col + xx]
                block = pixels[r0:r0 + rows, c0:c0 + cols]
                wy, wx = weights[rw:rw + rows], weights[cw:cw + cols]
                if vertical_first:
                    first = np.clip(((1 << 21) + (block * wy[:, None, None]).sum(0)) >> 22, 0, 255)
                    second = (1 << 21) + (first * wx[:, None]).sum(0)
                else:
                    first = np.clip(((1 << 21) + (block * wx[None, :, None]).sum(1)) >> 22, 0, 255)
                    second = (1 << 21) + (first * wy[:, None]).sum(0)
                out[y, xx] = np.clip(second >> 22, 0, 255)
        region = out.transpose(2, 0, 1).astype(np.float32)
        x[i, :, top:top + bh, left:left + bw] = (region - mean) / std
    return x


def test_the_kernel_compiles_and_its_tables_reproduce_the_resize(tmp_path):
    mean, std = check_normalisation(3, [100.0, 110.5, 120.0], [60.0, 1.0, 0.3])
    src = image_inputs.render("oddseg", SHAPE, mean, std)
    assert "#define IN_H 21" in src and "#define SLOT_BYTES 17136LL" in src
    assert "110.5f" in src and "__fdiv_rn" in src and "oddseg" in src
    compile_cubin({image_inputs.SOURCE: src.encode()}, image_inputs.SOURCE, "sm_90",
                  cache=tmp_path)
    grey = image_inputs.render("grey", (1, 9, 5), *check_normalisation(1, [3.0], [2.0]))
    compile_cubin({image_inputs.SOURCE: grey.encode()}, image_inputs.SOURCE, "sm_90",
                  cache=tmp_path)
    images = IMAGES + [None]
    slots = _slots(np.random.default_rng(3), images, SHAPE)
    meta, taps, weights = image_inputs.tables(images)
    assert meta.dtype == taps.dtype == weights.dtype == np.int32
    assert len(taps) == 337 + 21 + 34      # taps per output of each distinct (from, to) axis
    want = image_inputs.inputs_on_cpu(slots, images, SHAPE, mean, std)
    np.testing.assert_array_equal(_emulate(slots, meta, taps, weights, SHAPE, mean, std), want)
    for i, (h, w, (top, left, bh, bw)) in enumerate(IMAGES):       # padding: the mean, 0
        assert not want[i, :, :top].any() and not want[i, :, top + bh:].any()
        assert not want[i, :, :, :left].any() and not want[i, :, :, left + bw:].any()
    order = image_inputs.tables(images)[0][:, 9].tolist()
    assert order == [0, 0, 1, 0, 0, 0, 0, 1, 0] or bilinear8._pillow_version() < (13, 0)


# The kernel's own source run on the host: CUDA's few names it uses stubbed, and every load
# checked against the bytes it may read (the slot's used bytes, the tables).
_HOST_PRELUDE = r"""
struct Dim3 { int x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __device__
#define __constant__ static
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(n)
static const char* lo[4]; static const char* hi[4]; static int stray;
template <class T> static T __ldg(const T* p) {
    const char* c = (const char*)p;
    bool inside = false;
    for (int i = 0; i < 4; ++i) inside |= c >= lo[i] && c + sizeof(T) <= hi[i];
    if (!inside) { ++stray; return T(); }       // counted, not read (no crash)
    return *p;
}
static float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
"""
_HOST_RUN = r"""
extern "C" int run(const unsigned char* slots, const long long* used, int n, const int* meta,
                   long long n_meta, const int* taps, long long n_taps, const int* weights,
                   long long n_weights, float* input) {
    stray = 0;
    lo[1] = (const char*)meta; hi[1] = (const char*)(meta + n_meta);
    lo[2] = (const char*)taps; hi[2] = (const char*)(taps + n_taps);
    lo[3] = (const char*)weights; hi[3] = (const char*)(weights + n_weights);
    blockDim.x = 256;
    for (int image = 0; image < n; ++image) {
        lo[0] = (const char*)slots + SLOT_BYTES * image; hi[0] = lo[0] + used[image];
        for (int b = 0; b < (PLANE + 255) / 256; ++b)
            for (int t = 0; t < 256; ++t) {
                blockIdx.x = b; blockIdx.y = image; threadIdx.x = t;
                image_inputs(slots, meta, taps, weights, input);
            }
    }
    return stray;
}
"""


@pytest.mark.parametrize("shape", [(3, 21, 34), (1, 9, 5)])
def test_the_kernel_itself_on_the_cpu(tmp_path, shape):
    """templates/image_inputs.cu.j2 compiled as host C++ (g++): its input equals
    `inputs_on_cpu` bit for bit, and it reads nothing outside a slot's used bytes and the
    tables: random decoded sizes up to a slot's limit, random letterbox boxes, ready slots,
    both pass orders, batch n of a network of n + 1 (the last image untouched)."""
    import ctypes
    import shutil
    import subprocess
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    c, height, width = shape
    rng = np.random.default_rng(sum(shape))
    mean, std = check_normalisation(c, list(rng.uniform(0, 200, c)), list(rng.uniform(0.1, 70, c)))
    source = image_inputs.render("host", shape, mean, std).replace('extern "C" __global__',
                                                                    "__global__")
    (tmp_path / "k.cpp").write_text(_HOST_PRELUDE + source + _HOST_RUN)
    subprocess.run([compiler, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o",
                    str(tmp_path / "k.so"), str(tmp_path / "k.cpp")], check=True)
    kernel = ctypes.CDLL(str(tmp_path / "k.so")).run
    limit = slot_bytes(shape)
    orders = set()
    for trial in range(12):
        n = int(rng.integers(1, 5))
        images = []
        for _ in range(n):
            if rng.random() < 0.2:
                images.append(None)
                continue
            while True:
                h, w = int(rng.integers(1, 8 * height + 2)), int(rng.integers(1, 8 * width + 2))
                if h * w * c <= limit:
                    break
            top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
            box = (top, left, int(rng.integers(1, height - top + 1)),
                   int(rng.integers(1, width - left + 1))) if rng.random() < 0.5 \
                else (0, 0, height, width)
            images.append((h, w, box))
            orders.add(bilinear8.vertical_first((h, w), box[2:]))
        slots = rng.integers(0, 256, (n, limit), dtype=np.uint8)
        for i, image in enumerate(images):
            if image is None:
                input_view(slots[i], shape)[...] = rng.normal(size=shape)
        meta, taps, weights = image_inputs.tables(images)
        used = np.array([4 * c * height * width if im is None else im[0] * im[1] * c
                         for im in images], np.int64)
        got = np.full((n + 1,) + shape, np.nan, np.float32)
        pointer = (lambda a: a.ctypes.data_as(ctypes.c_void_p))
        stray = kernel(pointer(slots), pointer(used), n, pointer(meta),
                       ctypes.c_longlong(meta.size), pointer(taps), ctypes.c_longlong(taps.size),
                       pointer(weights), ctypes.c_longlong(weights.size), pointer(got))
        assert stray == 0, f"{stray} loads outside the slots' used bytes and the tables"
        np.testing.assert_array_equal(got[:n], image_inputs.inputs_on_cpu(slots, images, shape,
                                                                           mean, std))
        assert np.isnan(got[n]).all()
    assert orders == {False, True} or bilinear8._pillow_version() < (13, 0)


def test_read_decoded_falls_back_to_the_cpus_resize(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray((rng.integers(0, 256, (40, 50)) * 257).astype(np.uint16)).save(
        tmp_path / "deep.png")
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(tmp_path / "g.png")
    pixels, size, decoded = read_decoded(tmp_path / "a.png", 3, (21, 34), "letterbox", 2000)
    assert decoded and size == (40, 50) and pixels.shape == (40, 50, 3)
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(tmp_path / "a.png")))
    for path, limit in (("a.png", 1999), ("deep.png", 10 ** 6)):     # too large; 16-bit
        pixels, size, decoded = read_decoded(tmp_path / path, 3, (21, 34), "letterbox", limit)
        want, _ = read_pixels(tmp_path / path, 3, (21, 34), "letterbox")
        assert not decoded and pixels.dtype == np.float32
        np.testing.assert_array_equal(pixels, want)
        assert pixels.shape[:2] == fit_box((40, 50), (21, 34), "letterbox")[2:]
    pixels, _, decoded = read_decoded(tmp_path / "g.png", 1, (21, 34), "stretch", 10 ** 6)
    assert decoded and pixels.shape == (30, 20, 1)
    pixels, _ = read_pixels(tmp_path / "g.png", 1, (21, 34))      # grey: h x w x 1 as well
    assert pixels.shape == (21, 34, 1)


def test_queue_refuses_what_the_kernel_cannot_read():
    inputs = image_inputs.ImageInputs.__new__(image_inputs.ImageInputs)
    inputs.shape, inputs.slot_bytes = SHAPE, slot_bytes(SHAPE)
    inputs.net = type("Net", (), {"batch": 4})()
    ok = np.zeros((1, inputs.slot_bytes), np.uint8)
    with pytest.raises(squeezegen.SqueezegenError, match="5 images for a network of batch 4"):
        inputs.queue(np.zeros((5, inputs.slot_bytes), np.uint8), [None] * 5)
    with pytest.raises(squeezegen.SqueezegenError, match="contiguous uint8"):
        inputs.queue(ok.view(np.float32), [None])
    with pytest.raises(squeezegen.SqueezegenError, match="do not fit a slot"):
        inputs.queue(ok, [(85, 68, (0, 0, 21, 34))])
    for box in [(0, 0, 0, 34), (0, 1, 21, 34), (-1, 0, 21, 34), (20, 0, 2, 34)]:
        with pytest.raises(squeezegen.SqueezegenError, match="is not inside the 21 x 34"):
            inputs.queue(ok, [(10, 10, box)])


@needs_gpu
@pytest.mark.parametrize("channels", [3, 1])
def test_gpu_inputs_equal_inputs_on_cpu(tmp_path, channels):
    (tmp_path / "m.yaml").write_text(ODDSEG.replace("[3, 21, 34]", f"[{channels}, 21, 34]"))
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    shape = (channels, 21, 34)
    mean, std = check_normalisation(channels, [100.0, 110.5, 120.0][:channels] or [1.0],
                                    [60.0, 1.0, 0.3][:channels])
    rng = np.random.default_rng(8)
    images = [IMAGES[0], None, IMAGES[7]]                      # batch 3 of a batch-4 network
    with squeezegen.compile(graph, random_weights(graph, 2), batch=4) as net:
        inputs = image_inputs.ImageInputs(net, mean, std)
        try:
            for _ in range(2):                  # the buffers are reused: new pixels each time
                slots = _slots(rng, images, shape)
                want = image_inputs.inputs_on_cpu(slots, images, shape, mean, std)
                with net.forward_from(inputs.queue(slots, images)):
                    pass
                got = net.tensor(graph.input.name)[:3]
                np.testing.assert_array_equal(got, want)
            scores = net(want)
            with net.forward_from(inputs.queue(slots, images)):
                pass
            np.testing.assert_array_equal(net.tensor(graph.outputs[0])[:3], scores[:3])
            everything = list(IMAGES[:4])                       # all decoded, the full batch
            slots = _slots(rng, everything, shape)
            with net.forward_from(inputs.queue(slots, everything)):
                pass
            np.testing.assert_array_equal(net.tensor(graph.input.name),
                                          image_inputs.inputs_on_cpu(slots, everything, shape,
                                                                     mean, std))
        finally:
            inputs.close()


def _photos(folder, count: int, seed: int = 0) -> None:
    """JPEGs of mixed sizes (some drafted, some too large for a slot), a grey one, a 16-bit
    PNG and a truncated file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w = int(rng.integers(60, 400))
        h = int(rng.integers(40, 300))
        yy, xx = np.mgrid[0:h, 0:w]
        pic = np.stack([xx * 255 // w, yy * 255 // h, (3 * xx + yy) % 256], axis=2)
        pic = np.clip(pic + rng.normal(0, 20, pic.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pic).save(folder / f"{i:03d}.jpg", quality=90)
    Image.fromarray(pic[..., 0]).save(folder / "grey.jpg")
    Image.fromarray(pic[..., 1].astype(np.uint16) * 257).save(folder / "deep.png")
    (folder / "cut.jpg").write_bytes((folder / "000.jpg").read_bytes()[:300])


def test_where_the_resize_runs():
    from squeezegen.segmentation import _resize_on_gpu
    assert _resize_on_gpu("auto", "cuda", True, False, None)
    assert not _resize_on_gpu("cpu", "cuda", True, False, None)
    for kind, processes, scores, ray in [("numpy", True, False, None), ("cuda", False, False, None),
                                         ("cuda", True, True, None), ("ray", False, False, "auto")]:
        assert not _resize_on_gpu("auto", kind, processes, scores, ray)
        with pytest.raises(squeezegen.SqueezegenError, match="resizing on the GPU needs"):
            _resize_on_gpu("gpu", kind, processes, scores, ray)


def test_when_two_batches_are_in_flight():
    """overlap's default (None) is on wherever a local GPU makes the masks, off elsewhere; True
    where it cannot be is refused; False is off."""
    from squeezegen.segmentation import _overlap
    assert _overlap(None, "cuda", False, None) and _overlap(True, "cuda", False, None)
    assert not _overlap(False, "cuda", False, None)
    for kind, scores, ray in [("numpy", False, None), ("cuda", True, None), ("ray", False, "auto")]:
        assert not _overlap(None, kind, scores, ray) and not _overlap(False, kind, scores, ray)
    for scores, ray in [(True, None), (False, "auto")]:
        with pytest.raises(squeezegen.SqueezegenError, match="overlap is for the masks made on"):
            _overlap(True, "cuda", scores, ray)


def test_resize_on_gpu_needs_a_gpu_pipeline(tmp_path):
    (tmp_path / "m.yaml").write_text(ODDSEG)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    _photos(tmp_path / "in", 1)
    with pytest.raises(squeezegen.SqueezegenError, match="resizing on the GPU needs the cuda"):
        squeezegen.segment(tmp_path / "m.yaml", random_weights(graph, 1), tmp_path / "in",
                           tmp_path / "out", backend="numpy", resize_on="gpu", progress=False)
    with pytest.raises(squeezegen.SqueezegenError, match="overlap is for the masks made on"):
        squeezegen.segment(tmp_path / "m.yaml", random_weights(graph, 1), tmp_path / "in",
                           tmp_path / "out", backend="numpy", scores=True, overlap=True,
                           progress=False)
    with pytest.raises(squeezegen.SqueezegenError, match="resize_on must be auto, gpu or cpu"):
        squeezegen.segment(tmp_path / "m.yaml", random_weights(graph, 1), tmp_path / "in",
                           tmp_path / "out", backend="numpy", resize_on="tpu", progress=False)


@needs_gpu
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_gpu_resize_writes_the_masks_the_cpus_resize_does(tmp_path, resize):
    """`segment` end to end on the GPU, with its defaults (the decoded images resized on the GPU,
    two batches in flight; Pillow decoding the JPEGs: test_nvjpeg.py compares nvJPEG's) and
    with the CPU workers resizing, one batch at a time: the same PNGs, byte for byte, and the
    same failures."""
    import os
    if (os.cpu_count() or 1) < 2:
        pytest.skip("worker processes need 2 CPUs")
    (tmp_path / "m.yaml").write_text(ODDSEG)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    weights = random_weights(graph, 6)
    _photos(tmp_path / "in", 40)
    outs = {}
    for where in ("gpu", "cpu"):
        s = squeezegen.segment(tmp_path / "m.yaml", weights, tmp_path / "in",
                               tmp_path / where, batch=8, resize=resize,
                               **({"jpeg_on": "cpu"} if where == "gpu"
                                  else {"resize_on": "cpu", "overlap": False}),
                               mean=[100.0, 110.5, 120.0], std=[60.0, 1.0, 0.3],
                               decoders="processes", workers=2, progress=False)
        assert (s.written, s.failed) == (42, 1), s.failures
        assert s.resized_on == where and f"resized on the {where.upper()}" in s.text()
        assert s.overlapped == (where == "gpu")
        assert ("two batches in flight" in s.text()) == (where == "gpu")
        outs[where] = {p.name: p.read_bytes() for p in (tmp_path / where).rglob("*.png")}
    assert len(outs["gpu"]) == 42 and outs["gpu"] == outs["cpu"]
