"""A network's input batch made on its GPU from decoded 8-bit images: resized into each image's
box with Pillow's bilinear filter to the bit (`segmentation.bilinear8`,
templates/image_inputs.cu.j2) and normalised, so that the CPU only decodes.

The batch arrives in byte slots (`segmentation.slots`), one an image: a slot holds either the
image's decoded pixels (src_h x src_w x C uint8, when they fit) or, in its first bytes, a
float32 input the CPU made (`ready`: 16-bit images, larger ones, unreadable ones as zeros), or
a JPEG file's bytes, which nvJPEG's hardware decoder (`runtime.nvjpeg`) decodes on the GPU into
the slot's device copy, at the scale Pillow's draft mode would (`images.gpu_jpeg`). Only the
bytes an image uses are copied to the GPU. A JPEG that nvJPEG refuses is decoded by Pillow
here instead (the same pixels the CPU's decoders would give).

    inputs = ImageInputs(net, mean, std)
    with net.forward_from(inputs.queue(slots, images)) as net: ...
"""
from __future__ import annotations

import io

import numpy as np

from ..codegen.emit import environment
from ..errors import InputError
from ..ops.activation import c_float
from ..segmentation.bilinear8 import axis_table, resize, vertical_first
from ..segmentation.slots import fits, input_view, slot_bytes
from .buffers import GrowingBuffers
from .compile import compile_cubin
from .device import device_arch

THREADS = 256                 # per block; the template's __launch_bounds__
SOURCE = "image_inputs.cu"
KIND_READY, KIND_DECODED = 0, 1
META = 10


def render(network: str, shape: tuple, mean, std) -> str:
    channels, height, width = (int(v) for v in shape)
    return environment().get_template("image_inputs.cu.j2").render(
        network=network, channels=channels, height=height, width=width,
        slot_bytes=slot_bytes(shape), mean=[c_float(v) for v in np.ravel(mean)],
        std=[c_float(v) for v in np.ravel(std)])


def jpeg_of(image) -> tuple | None:
    """An `images` entry's JPEG (its bytes, its draft scale) when its slot holds a JPEG file's
    bytes (an entry of four), else None."""
    return image[3] if image is not None and len(image) > 3 else None


def tables(images: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's tables for one batch. images: per slot None (ready) or (source height,
    source width, box (top, left, height, width)[, jpeg]). Returns meta (int32, slots x 10),
    taps (int32, 3 an output row or column: first source pixel, count, first weight) and
    weights (int32); an axis table that several images share is there once."""
    meta = np.zeros((max(1, len(images)), META), np.int32)
    taps, weights, where = [], [], {}
    n_taps = n_weights = 0

    def axis(n_in: int, n_out: int) -> int:
        nonlocal n_taps, n_weights
        if (n_in, n_out) not in where:
            first, count, fixed = axis_table(n_in, n_out)
            offsets = n_weights + fixed.shape[1] * np.arange(n_out, dtype=np.int32)
            taps.append(np.stack([first, count, offsets], axis=1))
            weights.append(fixed.ravel())
            where[(n_in, n_out)] = n_taps
            n_taps += n_out
            n_weights += fixed.size
        return where[(n_in, n_out)]

    for i, image in enumerate(images):
        if image is None:
            meta[i, 0] = KIND_READY
            continue
        src_h, src_w, (top, left, bh, bw) = image[:3]
        meta[i] = (KIND_DECODED, src_h, src_w, top, left, bh, bw, axis(src_h, bh),
                   axis(src_w, bw), vertical_first((src_h, src_w), (bh, bw)))
    cat = (lambda parts: np.ascontiguousarray(np.concatenate(parts), np.int32) if parts
           else np.zeros(3, np.int32))
    return meta, cat(taps), cat(weights)


def decode_jpeg_slot(slot: np.ndarray, jpeg: tuple, decoded_hw: tuple) -> np.ndarray:
    """Pillow's decoding of the JPEG whose `jpeg` = (bytes, scale) lie at the start of `slot`,
    at that draft scale: decoded_hw x 3 uint8 (ValueError if the size differs)."""
    from PIL import Image
    nbytes, scale = jpeg
    with Image.open(io.BytesIO(slot[:nbytes].tobytes())) as im:
        im.draft("RGB", (max(1, im.width // scale), max(1, im.height // scale)))  # -> scale
        pixels = np.asarray(im.convert("RGB"))
    if pixels.shape[:2] != tuple(decoded_hw):
        raise ValueError(f"a JPEG decoded to {pixels.shape[:2]}, expected {tuple(decoded_hw)}")
    return pixels


def inputs_on_cpu(slots: np.ndarray, images: list, shape: tuple, mean: np.ndarray,
                  std: np.ndarray) -> np.ndarray:
    """What the kernel makes, in NumPy (the oracle of its tests): (n, *shape) float32 from
    the same slots and images as `ImageInputs.queue`."""
    c = shape[0]
    x = np.zeros((len(images),) + tuple(shape), np.float32)
    for i, image in enumerate(images):
        if image is None:
            x[i] = input_view(slots[i], shape)
            continue
        src_h, src_w, (top, left, bh, bw) = image[:3]
        if jpeg_of(image):                      # a JPEG's bytes: decoded as the CPU would
            pixels = decode_jpeg_slot(slots[i], jpeg_of(image), (src_h, src_w))
        else:
            pixels = slots[i, :src_h * src_w * c].reshape(src_h, src_w, c)
        resized = resize(pixels, bh, bw).transpose(2, 0, 1).astype(np.float32)
        x[i, :, top:top + bh, left:left + bw] = (resized - mean) / std
    return x


class ImageInputs:
    """Makes `net`'s input from slots of decoded images (see the module); normalised with
    `mean` and `std` ((C, 1, 1) float32, as `images.check_normalisation` gives)."""

    def __init__(self, net, mean: np.ndarray, std: np.ndarray):
        self.net = net
        self.shape = tuple(net.graph.input.type.shape)
        if len(self.shape) != 3 or self.shape[0] not in (1, 3):
            raise InputError(f"image inputs need a (1 or 3, height, width) input; "
                             f"'{net.graph.name}' takes {self.shape}")
        self.slot_bytes = slot_bytes(self.shape)
        self._ready_bytes = 4 * int(np.prod(self.shape))
        source = render(net.graph.name, self.shape, mean, std)
        cubin = compile_cubin({SOURCE: source.encode()}, SOURCE, device_arch(net.device))
        with net.active() as drv:
            self._module = drv.module_from_buffer(cubin)
            self._kernel = self._module.get_function("image_inputs")
            self._kernel.prepare("PPPPP")
        self._buffers = GrowingBuffers(net, "the image inputs'")
        self._decoders: dict = {}           # nvJPEG's, one a set of device buffers
        self.failures: list = []            # (slot, why) of the last copy_in's unreadable JPEGs
        self.fallbacks = 0                  # JPEGs nvJPEG refused that Pillow decoded here

    def prepare(self, slots: np.ndarray, images: list) -> tuple:
        """The tables of a batch (`tables`) and the bytes each slot uses; InputError for what
        the kernel cannot read."""
        n = len(images)
        if not 1 <= n <= self.net.batch:
            raise InputError(f"{n} images for a network of batch {self.net.batch}")
        if slots.dtype != np.uint8 or slots.shape != (n, self.slot_bytes) \
                or not slots.flags.c_contiguous:
            raise InputError(f"the slots must be a contiguous uint8 array of shape "
                             f"({n}, {self.slot_bytes}), got {slots.dtype} {slots.shape}")
        _, height, width = self.shape
        for image in images:
            if image is None:
                continue
            if not fits(image[:2], self.shape):
                raise InputError(f"decoded pixels of {image[0]} x {image[1]} do not fit a slot")
            top, left, bh, bw = image[2]
            if not (bh >= 1 and bw >= 1 and 0 <= top <= height - bh and 0 <= left <= width - bw):
                raise InputError(f"box {tuple(image[2])} (top, left, height, width) is not inside "
                                 f"the {height} x {width} input")
        for jpeg in filter(None, map(jpeg_of, images)):
            if self.shape[0] != 3 or not 0 < jpeg[0] <= self.slot_bytes or \
                    jpeg[1] not in (1, 2, 4, 8):
                raise InputError(f"a JPEG slot of {jpeg} (bytes, scale) for a "
                                 f"{self.shape[0]}-channel input of {self.slot_bytes}-byte slots")
        used = [self._ready_bytes if image is None else
                0 if jpeg_of(image) else image[0] * image[1] * self.shape[0]
                for image in images]
        return tables(images) + (used, images)

    def copy_in(self, drv, stream, buffers: GrowingBuffers, slots: np.ndarray, prepared):
        """Queue the copies of the used bytes of `slots` and the tables on `stream`, into
        `buffers`; returns the device buffers (slots, meta, taps, weights)."""
        meta, taps, weights, used, images = prepared
        self.failures = []
        d_slots = buffers.get("slots", slots.nbytes)
        d_tables = [buffers.get(what, a.nbytes) for what, a in
                    (("meta", meta), ("taps", taps), ("weights", weights))]
        for i, nbytes in enumerate(used):                # the bytes each image uses
            if nbytes:
                drv.memcpy_htod_async(int(d_slots) + i * self.slot_bytes, slots[i, :nbytes],
                                      stream)
        for dst, src in zip(d_tables, (meta, taps, weights)):
            drv.memcpy_htod_async(dst, src, stream)
        jpegs = [(i, image) for i, image in enumerate(images) if jpeg_of(image)]
        if jpegs:
            self._decode_jpegs(drv, stream, buffers, slots, int(d_slots), jpegs)
        return (d_slots, *d_tables)

    def _decode_jpegs(self, drv, stream, buffers, slots: np.ndarray, d_slots: int,
                      jpegs: list) -> None:
        """Queue nvJPEG's decoding of the JPEG slots on `stream`, each into its device slot
        (one decoder a set of buffers: the overlapped batches use two, and a set is reused
        only once its last batch is done). A batch that nvJPEG refuses for a JPEG in it is
        tried an image at a time (waiting for the stream before each: a decode state is not
        reused while a failed call's work may run); what it refuses alone, Pillow decodes
        here and the pixels are copied (`decode_jpeg_slot`); what Pillow cannot read either
        goes to `failures` (its slot zeros). Any other nvJPEG failure is raised."""
        from .nvjpeg import JPEG_STATUSES, JpegDecoder, NvJpegError
        key = id(buffers)
        if key not in self._decoders:
            self._decoders[key] = JpegDecoder(self.net.batch)
        decoder = self._decoders[key]

        def queue(part: list) -> None:
            decoder.decode([(slots[i].ctypes.data, image[3][0]) for i, image in part],
                           [(d_slots + i * self.slot_bytes, 3 * image[1]) for i, image in part],
                           stream.handle, 3, [image[3][1] for _, image in part])
        try:
            queue(jpegs)
            return
        except NvJpegError as exc:
            if exc.status not in JPEG_STATUSES:
                raise
        for i, image in jpegs:
            stream.synchronize()
            try:
                queue([(i, image)])
                continue
            except NvJpegError as exc:
                if exc.status not in JPEG_STATUSES:
                    raise
            self.fallbacks += 1
            stream.synchronize()
            try:
                pixels = decode_jpeg_slot(slots[i], image[3], image[:2]).reshape(-1)
            except Exception as exc:                    # unreadable for Pillow too
                self.failures.append((i, " ".join(str(exc).split()) or type(exc).__name__))
                pixels = np.zeros(image[0] * image[1] * 3, np.uint8)
            slots[i, :pixels.size] = pixels
            drv.memcpy_htod_async(d_slots + i * self.slot_bytes, slots[i, :pixels.size],
                                  stream)

    def launch(self, stream, device_buffers, n: int, d_input) -> None:
        """Queue the kernel on `stream`: n images' input into d_input from what `copy_in`
        put on the device."""
        plane = self.shape[1] * self.shape[2]
        self._kernel.prepared_async_call(((plane + THREADS - 1) // THREADS, n), (THREADS, 1, 1),
                                         stream, *(int(d) for d in device_buffers),
                                         int(d_input))

    def queue(self, slots: np.ndarray, images: list):
        """What `net.forward_from` takes: queue the copy of `slots` (uint8, images x slot
        bytes; page-locked memory copies fastest) and the kernel that makes the input from
        them. images: per slot None (ready) or (source height, source width, box), those of
        a JPEG slot followed by (its bytes, its draft scale)."""
        prepared = self.prepare(slots, images)

        def queue_input(drv, stream, d_input) -> None:
            self.launch(stream, self.copy_in(drv, stream, self._buffers, slots, prepared),
                        len(images), d_input)
        return queue_input

    def close(self) -> None:
        """Unload the kernel and free the buffers, in this thread, before the network's close."""
        module, self._module, self._kernel = self._module, None, None
        if module is None:
            return
        with self.net.active():
            for decoder in self._decoders.values():
                decoder.close()
            self._decoders = {}
            self._buffers.free()
            del module
