"""Two batches in flight on one network (runtime/overlap.py): segment's GPU side with the
copies overlapping the kernels. On a GPU, from page-locked memory (where copies run
asynchronously, so batch k + 1's copies really are queued while batch k runs): batches
submitted one ahead of their collection give the masks that `ClassMasks` gives one batch at a
time, bit for bit, from float32 inputs and from decoded images (`ImageInputs`), batches of
different sizes and images, into `out` and through the staging buffer; a third batch before
the first is collected is refused; once grown, the sets' buffers are reused (no new device
allocations). (The pipeline's use of it is tested without a GPU in test_segment.py, with a
NumPy stand-in.)"""
from __future__ import annotations

import numpy as np
import pytest

import squeezegen
from helpers import ODDSEG, needs_gpu, random_weights
from squeezegen.images import check_normalisation
from squeezegen.runtime.image_inputs import ImageInputs
from squeezegen.runtime.masks import ClassMasks
from squeezegen.runtime.overlap import OverlappedMasks
from squeezegen.segmentation.slots import slot_bytes

SHAPE = (3, 21, 34)


def _locked(array: np.ndarray, pins: list, device: int) -> np.ndarray:
    """A page-locked copy of array (its own mmap'd pages), its pin added to pins."""
    from squeezegen.runtime.device import PinnedHost, page_aligned
    copy = page_aligned(array.shape, array.dtype)
    copy[...] = array
    pins.append(PinnedHost(copy, device))
    return copy


def _batch(rng, n: int, decoded: bool):
    """n images: sizes, boxes, and either a float32 input or byte slots of decoded pixels."""
    sizes = [tuple(int(v) for v in rng.integers(1, 90, 2)) for _ in range(n)]
    boxes = [(0, 0, 21, 34) if i % 2 else (3, 2, 15, 30) for i in range(n)]
    if not decoded:
        return sizes, boxes, rng.normal(size=(n,) + SHAPE).astype(np.float32), None
    slots = np.zeros((n, slot_bytes(SHAPE)), np.uint8)
    images = []
    for i in range(n):
        if i == 1:                                   # a ready input, as the CPU makes it
            slots[i, :4 * int(np.prod(SHAPE))].view(np.float32)[:] = rng.normal(
                size=int(np.prod(SHAPE)))
            images.append(None)
            continue
        h, w = (int(v) for v in rng.integers(5, 60, 2))
        slots[i, :h * w * 3] = rng.integers(0, 256, h * w * 3, dtype=np.uint8)
        images.append((h, w, boxes[i]))
    return sizes, boxes, slots, images


@needs_gpu
@pytest.mark.parametrize("decoded", [False, True])
def test_overlapped_batches_give_the_masks_of_one_at_a_time(tmp_path, decoded):
    (tmp_path / "m.yaml").write_text(ODDSEG)
    graph = squeezegen.load_model(tmp_path / "m.yaml")
    mean, std = check_normalisation(3, [100.0, 110.5, 120.0], [60.0, 1.0, 0.3])
    rng = np.random.default_rng(9)
    batches = [_batch(rng, n, decoded) for n in (4, 3, 4, 1, 4, 2)]
    pins = []
    with squeezegen.compile(graph, random_weights(graph, 4), batch=4) as net:
        masks = ClassMasks(net)
        inputs = ImageInputs(net, mean, std)
        overlap = OverlappedMasks(net, masks, inputs)
        try:
            want = []
            for sizes, boxes, data, images in batches:          # one at a time
                if images is None:
                    want.append(masks(data, sizes, boxes))
                else:
                    want.append(masks(None, sizes, boxes,
                                      make_input=inputs.queue(data, images)))
            locked = [_locked(data, pins, net.device) for _, _, data, _ in batches]
            outs = [_locked(np.zeros(4 * 90 * 90, np.uint8), pins, net.device)
                    for _ in batches]
            for rounds in range(2):               # the second round: the buffers are grown
                allocations = len(net._allocations)
                got, tickets = [], []
                for k, (sizes, boxes, _, images) in enumerate(batches):
                    samplings = [masks.sampling(s, b) for s, b in zip(sizes, boxes)]
                    out = outs[k] if k % 3 else None          # into `out`, and staged
                    if images is None:
                        tickets.append(overlap.submit(samplings, out, x=locked[k]))
                    else:
                        tickets.append(overlap.submit(samplings, out, slots=locked[k],
                                                      images=images))
                    if k == 1:
                        with pytest.raises(squeezegen.SqueezegenError, match="two batches"):
                            overlap.submit(samplings, x=np.zeros((1,) + SHAPE, np.float32))
                    if k >= 1:                                     # collect one behind
                        got.append(overlap.result(tickets[k - 1]))
                got.append(overlap.result(tickets[-1]))
                for k, (g, w) in enumerate(zip(got, want, strict=True)):
                    for i, (a, b) in enumerate(zip(g, w, strict=True)):
                        np.testing.assert_array_equal(a, b, err_msg=f"round {rounds} batch {k} "
                                                                    f"image {i}")
                        assert np.shares_memory(a, outs[k]) == bool(k % 3)
                if rounds:
                    assert len(net._allocations) == allocations
        finally:
            overlap.close()
            inputs.close()
            masks.close()
            for pin in pins:
                pin.close()
