"""What runs the network in `segment`: a callable that takes a float32 N,C,H,W batch (N at most
its `batch`) and returns the scores N,K,h,w; one that also has `classes` makes the masks itself
(the GPU's). One per GPU (`squeezegen.compile(..., device=i)`),
or the NumPy reference on the CPU. Each is created and called in its own worker thread.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError


class NumpyBackend:
    """The NumPy reference executor (the CPU, any batch)."""

    def __init__(self, graph, weights: dict, batch: int):
        from ..reference import ReferenceExecutor
        self.run = ReferenceExecutor(graph, weights)
        self.batch = batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)

    def close(self) -> None:
        pass


class CudaBackend:
    """The generated network on GPU `device`, compiled for a fixed batch and precision. Besides
    the scores, it makes the masks on the GPU (`classes`): the scores resized to each image's
    size and their argmax, so that only the masks come back to the host."""

    def __init__(self, graph, weights: dict, batch: int, precision: str, device: int):
        import squeezegen
        self.net = squeezegen.compile(graph, weights, batch=batch, precision=precision,
                                      device=device)
        self.batch = batch
        self._masks = None
        self._inputs = None
        self._overlap = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.net(x)

    def classes(self, x: np.ndarray, sizes: list, boxes: list, out: np.ndarray | None = None,
                decoded: list | None = None, normalisation: tuple | None = None) -> list:
        """A (height, width) uint8 mask per image of `sizes`, each image having covered its
        box (top, left, height, width) of the input; in `out` where it has room (as
        `ClassMasks`). x holds decoded images, which cannot be NaN: not scanned for them.
        With `decoded` (per image None, or the (height, width, box) of the decoded pixels that
        its slot of x holds instead of its input), the GPU makes the input from x's slots
        (`ImageInputs`, normalised with normalisation = (mean, std))."""
        if self._masks is None:
            from ..runtime.masks import ClassMasks
            self._masks = ClassMasks(self.net)
        if decoded is None:
            return self._masks(x, sizes, boxes, out=out, check_values=False)
        if self._inputs is None:
            from ..runtime.image_inputs import ImageInputs
            self._inputs = ImageInputs(self.net, *normalisation)
        slots = x.reshape(len(x), -1).view(np.uint8)
        return self._masks(None, sizes, boxes, out=out,
                           make_input=self._inputs.queue(slots, decoded))

    def submit(self, x: np.ndarray, sizes: list, boxes: list, out: np.ndarray | None = None,
               decoded: list | None = None, normalisation: tuple | None = None):
        """`classes`, queued with two batches in flight (`runtime.overlap`): returns a ticket
        for `collect`. Submit batch k + 1 before collecting batch k, so that its copies
        overlap batch k's kernels; x (and `out`) stay untouched until collected."""
        if self._overlap is None:
            from ..runtime.masks import ClassMasks
            from ..runtime.overlap import OverlappedMasks
            self._masks = self._masks or ClassMasks(self.net)
            self._overlap = OverlappedMasks(self.net, self._masks)
        if decoded is not None and self._overlap.inputs is None:
            from ..runtime.image_inputs import ImageInputs
            self._inputs = self._inputs or ImageInputs(self.net, *normalisation)
            self._overlap.inputs = self._inputs
        samplings = [self._masks.sampling(size, box) for size, box in zip(sizes, boxes)]
        if decoded is None:
            return self._overlap.submit(samplings, out, x=x)
        return self._overlap.submit(samplings, out, slots=x.reshape(len(x), -1).view(np.uint8),
                                    images=decoded)

    def failures(self) -> list:
        """(slot, why) of the images of the batch just given to `classes` or `submit` that
        turned out unreadable on the GPU (a JPEG neither nvJPEG nor Pillow could decode):
        their masks are not to be written."""
        return list(self._inputs.failures) if self._inputs is not None else []

    def collect(self, ticket) -> list:
        """The masks of a `submit`ted batch (waiting for them)."""
        return self._overlap.result(ticket)

    def pin(self, array: np.ndarray):
        """`array`'s memory page-locked (a `PinnedHost`, to close when done with it)."""
        from ..runtime.device import PinnedHost
        return PinnedHost(array, self.net.device)

    def close(self) -> None:
        """Close the helpers, then the network, each even if one before it failed (the first
        failure is raised at the end)."""
        failure = None
        for helper in (self._overlap, self._masks, self._inputs):
            if helper is not None:
                try:
                    helper.close()
                except Exception as exc:
                    failure = failure or exc
        self.net.close()
        if failure is not None:
            raise failure


@dataclass(frozen=True)
class BackendSpec:
    label: str                       # "cuda:0", "numpy"
    make: Callable[[], object]       # called in the worker thread that will use it
    device: int | None = None        # the GPU it runs on


def gpu_count() -> int:
    """The CUDA devices this process sees; GPUError (saying what is missing) if none can run."""
    from ..runtime.device import driver
    return driver().Device.count()


def choose_backend(requested: str, log=None) -> str:
    """auto -> cuda where a GPU is usable, else numpy (saying so in one line, like `run`)."""
    if requested not in ("auto", "cuda", "numpy"):
        raise InputError(f"backend must be auto, cuda or numpy, got '{requested}'")
    if requested != "auto":
        return requested
    from ..runtime.network import gpu_available
    if gpu_available():
        return "cuda"
    (log or (lambda m: print(m, file=sys.stderr)))(
        "squeezegen: no usable GPU (or PyCUDA): running on the numpy backend")
    return "numpy"


def _gpu_request(gpus):
    """--gpus as "all", a count (int) or a list of ids, its form checked (a count of at least 1,
    ids of 0 or more, each once); a list or tuple of ids is taken as such."""
    if isinstance(gpus, (list, tuple)):
        text = ",".join(str(g) for g in gpus) + ("," if len(gpus) == 1 else "")
    else:
        text = str(gpus).strip()
    if text == "all":
        return "all"
    usage = (f"--gpus takes all, a count like 2, or ids like 0,2, each once (one id: 3,); "
             f"got '{text}'")
    if isinstance(gpus, bool):
        raise InputError(usage)
    try:
        if "," in text:
            ids = [int(t) for t in text.split(",") if t.strip()]
            if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
                raise ValueError
            return ids
        n = int(text)
    except ValueError:
        raise InputError(usage) from None
    if n < 1:
        raise InputError(usage)
    return n


def check_gpus(gpus) -> None:
    """`gpus`' form, before the GPUs are counted: the numpy backend ignores the option, but a
    typo in it is still an error."""
    _gpu_request(gpus)


def parse_gpus(gpus, count: int) -> list[int]:
    """--gpus: `all`, a count N (the first N GPUs), or ids with a comma (`0,2`; one id: `3,`)
    or in a list."""
    request = _gpu_request(gpus)
    if request == "all":
        return list(range(count))
    if isinstance(request, list):
        if max(request) >= count:
            raise InputError(f"--gpus {gpus}: this machine has GPUs 0 to {count - 1}, each "
                             "named once")
        return request
    if request > count:
        raise InputError(f"--gpus {request}: this machine has {count} GPU(s)")
    return list(range(request))


def backend_specs(kind: str, graph, weights: dict, batch: int, precision: str = "fp32",
                  gpus="all", per_gpu: int = 1) -> list[BackendSpec]:
    """The networks to run: one NumPy reference, or `per_gpu` networks on each chosen GPU."""
    if kind == "numpy":
        return [BackendSpec("numpy", lambda: NumpyBackend(graph, weights, batch))]
    ids = parse_gpus(gpus, gpu_count())
    return [BackendSpec(f"cuda:{i}" + (f"#{j}" if per_gpu > 1 else ""),
                        lambda i=i: CudaBackend(graph, weights, batch, precision, i), i)
            for i in ids for j in range(per_gpu)]
