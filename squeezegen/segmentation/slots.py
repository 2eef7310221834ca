"""The byte slots that carry one image each from the decoders to the GPU (`segment` with the
GPU resizing, `runtime.image_inputs`): room for decoded 8-bit pixels up to SLOT_PIXELS times
the model's input pixels, or, in the first bytes, the float32 input the CPU made."""
from __future__ import annotations

import numpy as np

SLOT_PIXELS = 8       # a JPEG decoded in draft mode is below twice the input on each side,
                      # unless one side already was: 8 leaves room for most of those too


def slot_bytes(shape: tuple) -> int:
    """The bytes of a slot for a model input of shape (C, H, W) (at least one float32 input)."""
    return SLOT_PIXELS * int(np.prod(shape))


def fits(source_hw: tuple, shape: tuple) -> bool:
    """Whether decoded pixels of source_hw (height, width) fit a slot of an input of shape."""
    return 0 < source_hw[0] * source_hw[1] * shape[0] <= slot_bytes(shape)


def input_view(slot: np.ndarray, shape: tuple) -> np.ndarray:
    """A byte slot's first bytes as a float32 input of shape (C, H, W)."""
    return slot[:4 * int(np.prod(shape))].view(np.float32).reshape(shape)
