"""Segmentation masks on the GPU (runtime/masks.py, templates/segment_masks.cu.j2): the scores
resized back to each image's size and reduced to the argmax class on the device.

On the CPU: the kernel compiles with nvcc -Werror, and the sampling tables the host hands it,
walked in NumPy exactly as the kernel walks them, give `resample.bilinear` bit for bit (odd
sizes, shrinking and growing, letterbox boxes). On a GPU: the kernel's masks equal the argmax of
`bilinear` exactly, for batch 3 in a batch-4 network and for squeezeseg's 21 classes, and agree
with PyTorch's `interpolate(bilinear)` argmax to within the pixels where two classes nearly tie.
"""
from __future__ import annotations

import numpy as np
import pytest

import squeezegen
from helpers import ODDSEG, needs_gpu, random_weights
from squeezegen.runtime import masks
from squeezegen.runtime.compile import compile_cubin
from squeezegen.segmentation.resample import argmax_classes, bilinear, sampling

# (size, box): stretched, letterboxed (top/left padding), shrunk below the score size, one pixel
CASES = [((37, 61), (0, 0, 21, 34)), ((5, 3), (0, 0, 21, 34)), ((100, 41), (0, 7, 21, 17)),
         ((19, 90), (6, 0, 8, 34)), ((1, 1), (0, 0, 21, 34)), ((64, 48), (3, 5, 11, 20))]


def _emulate(scores: np.ndarray, meta, idx, frac, total: int) -> np.ndarray:
    """What the kernel computes, in NumPy: per image and output pixel, the two rows and columns
    from the tables, columns then rows in float32, the first maximum."""
    out = np.full(total, 255, np.uint8)
    for n, (offset, h, w, row, col) in enumerate(meta.tolist()):
        r = idx[row:row + h]
        c = idx[col:col + w]
        fy, fx = frac[row:row + h][:, None], frac[col:col + w][None, :]
        s = scores[n]
        top = s[:, r[:, 0]][:, :, c[:, 0]] * (1 - fx) + s[:, r[:, 0]][:, :, c[:, 1]] * fx
        bottom = s[:, r[:, 1]][:, :, c[:, 0]] * (1 - fx) + s[:, r[:, 1]][:, :, c[:, 1]] * fx
        full = top * (1 - fy) + bottom * fy
        out[offset:offset + h * w] = argmax_classes(full).reshape(-1)
    return out


def test_the_kernel_compiles_and_its_tables_reproduce_bilinear(tmp_path):
    src = masks.render("oddseg", (7, 10, 16))
    assert "#define CLASSES 7" in src and "#define SCORE_H 10" in src and "oddseg" in src
    assert "__fmul_rn" in src and "segment_masks" in src
    compile_cubin({masks.SOURCE: src.encode()}, masks.SOURCE, "sm_90", cache=tmp_path)
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(len(CASES), 7, 10, 16)).astype(np.float32)
    sizes = [c[0] for c in CASES]
    meta, idx, frac, total = masks.tables([sampling((7, 10, 16), size, box, (21, 34))
                                           for size, box in CASES])
    assert total == sum(h * w for h, w in sizes) and meta[-1, 0] + 64 * 48 == total
    assert idx.dtype == np.int32 and frac.dtype == np.float32
    assert idx.min() >= 0 and idx[:, 0].max() < 16 and (idx[:, 1] >= idx[:, 0]).all()
    flat = _emulate(scores, meta, idx, frac, total)
    for n, (size, box) in enumerate(CASES):
        want = argmax_classes(bilinear(scores[n], size, box, (21, 34)))
        o = int(meta[n, 0])
        np.testing.assert_array_equal(flat[o:o + size[0] * size[1]].reshape(size), want,
                                      err_msg=f"{size} {box}")


def test_more_classes_than_a_mask_holds_is_refused():
    with pytest.raises(squeezegen.SqueezegenError, match="classes 0 to 255"):
        masks.render("big", (300, 4, 4))


@needs_gpu
@pytest.mark.parametrize("model,batch", [(ODDSEG, 4), ("models/squeezeseg.yaml", 3)])
def test_gpu_masks_equal_the_argmax_of_bilinear(tmp_path, model, batch):
    torch = pytest.importorskip("torch")
    if model == ODDSEG:
        (tmp_path / "m.yaml").write_text(model)
        model = tmp_path / "m.yaml"
    graph = squeezegen.load_model(model)
    weights = random_weights(graph, 11)
    hw = graph.input.type.shape[1:]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3,) + graph.input.type.shape).astype(np.float32)
    sizes = [(37, 61), (480, 353), (1, 1)] if model != "models/squeezeseg.yaml" else \
        [(375, 500), (227, 227), (101, 733)]
    boxes = [(0, 0) + tuple(hw), (2, 3, hw[0] - 4, hw[1] - 7), (0, 0) + tuple(hw)]
    with squeezegen.compile(graph, weights, batch=batch) as net:
        scores = net(x)
        got = masks.ClassMasks(net)(x, sizes, boxes)
        again = masks.ClassMasks(net)(x[:1], sizes[:1])        # n < batch, default box
    np.testing.assert_array_equal(again[0], got[0])
    for n, (size, box) in enumerate(zip(sizes, boxes)):
        want = argmax_classes(bilinear(scores[n], size, box, hw))
        assert got[n].shape == size and got[n].dtype == np.uint8
        np.testing.assert_array_equal(got[n], want, err_msg=f"image {n}")
        if box == (0, 0) + tuple(hw):                 # PyTorch: the whole output stretched
            up = torch.nn.functional.interpolate(torch.from_numpy(scores[n:n + 1]), size=size,
                                                 mode="bilinear", align_corners=False)
            differ = (up[0].argmax(0).numpy() != got[n]).mean()
            assert differ <= 1e-4, f"image {n}: {differ:.2%} differ from PyTorch"


@needs_gpu
def test_gpu_masks_into_page_locked_shared_memory(tmp_path):
    """segment's route: the masks copied into a slot of a shared, page-locked file (`out`),
    the input read from one; the same masks as into a new array, views into the slot, and a
    slot too small for the batch left alone (a new array instead). The input is not scanned
    for NaN with check_values=False (NaN in, no warning)."""
    import warnings
    from squeezegen.runtime.device import PinnedHost
    (tmp_path / "m.yaml").write_text(ODDSEG)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    rng = np.random.default_rng(4)
    sizes = [size for size, _ in CASES[:3]]
    boxes = [box for _, box in CASES[:3]]
    total = sum(h * w for h, w in sizes)
    import os
    import tempfile
    shm = tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else tmp_path)
    x = np.memmap(f"{shm}/x.f32", np.float32, "w+", shape=(4,) + graph.input.type.shape)
    x[:] = rng.normal(size=x.shape)
    slots = np.memmap(f"{shm}/masks.u8", np.uint8, "w+", shape=(2, total + 5))
    with squeezegen.compile(graph, random_weights(graph, 3), batch=4) as net:
        pins = [PinnedHost(x, net.device), PinnedHost(slots, net.device)]
        try:
            make = masks.ClassMasks(net)
            want = make(x[:3], sizes, boxes)
            got = make(x[:3], sizes, boxes, out=slots[1])
            small = make(x[:3], sizes, boxes, out=slots[0, :total - 1])
            x[3] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                make(x, sizes + [(2, 2)], boxes + [None], check_values=False)
            with pytest.warns(RuntimeWarning, match="non-finite"):
                make(x, sizes + [(2, 2)], boxes + [None])
        finally:
            for pin in pins:
                pin.close()
            import shutil
            shutil.rmtree(shm)
    offset = 0
    for w, g, s in zip(want, got, small):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(s, w)
        assert np.shares_memory(g, slots[1]) and not np.shares_memory(s, slots)
        np.testing.assert_array_equal(slots[1, offset:offset + w.size], w.ravel())
        offset += w.size
    assert not slots[0].any()                         # the small slot was not written


def test_samplings_are_remembered_per_axis_and_read_only():
    """segment asks for a batch's samplings on the network's thread: an axis seen before (a
    height or width shared by many photos) is not computed again, and nobody can change it."""
    rows, cols = sampling((7, 10, 16), (37, 61), (0, 0, 21, 34), (21, 34))
    again_rows, other_cols = sampling((7, 10, 16), (37, 99), (0, 0, 21, 34), (21, 34))
    assert again_rows[0] is rows[0] and other_cols[0] is not cols[0]
    with pytest.raises(ValueError, match="read-only"):
        rows[0][0, 0] = 3
    with pytest.raises(ValueError, match="read-only"):
        cols[1][0] = 0.5
