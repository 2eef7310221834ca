"""Writing one image's results: OUT_DIR/<name>.png (the classes in the VOC palette) and, when
asked, OUT_DIR/<name>.npy (the scores), both at the image's original size, both atomic. The PNG
comes last, so its presence means the image is done (what a rerun checks to resume). A run
stopped by SIGKILL leaves the temp file of each output it was writing; the next run removes
them (`sweep_temp_files`), which is safe because a run holds OUT_DIR's lock (`out_dir_lock`):
no other run is writing there."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_write, temp_prefix
from ..images import is_image, save_classes
from .inputs import output_path
from .resample import argmax_classes, classes_at, resize_scores

PNG_LEVEL = 1              # deflate level of the PNGs: masks compress well, level 1 is fast


def is_done(out_dir, name: str, with_scores: bool = False) -> bool:
    """Whether a previous run wrote this image's outputs (with_scores: the .npy too)."""
    try:
        png = output_path(out_dir, name)
        return png.exists() and (not with_scores or output_path(out_dir, name, ".npy").exists())
    except OSError:               # a name too long, a folder we cannot read: not done; writing
        return False              # it will fail for that image alone, in one line


def write_outputs(out_dir, name: str, scores: np.ndarray, size: tuple, box: tuple,
                  input_hw: tuple, with_scores: bool = False) -> None:
    """scores: the network's (classes, h, w) for an image of `size` (height, width) that
    covered `box` (top, left, height, width) of the model's `input_hw`."""
    if with_scores:
        full = resize_scores(scores, size, box, input_hw)
        atomic_write(output_path(out_dir, name, ".npy"), lambda f: np.save(f, full))
        classes = argmax_classes(full).astype(np.uint8)
    else:
        classes = classes_at(scores, size, box, input_hw)
    save_classes(output_path(out_dir, name), classes, compress_level=PNG_LEVEL)


# atomic_write's temp files (fsutil: mkstemp(prefix=temp_prefix(name), suffix=".tmp")): ".",
# the name (cut when too long, `temp_prefix`), ".", then tempfile's 8 random characters
_TEMP = re.compile(r"\.(?P<final>.+)\.[a-z0-9_]{8}\.tmp\Z", re.DOTALL)


def left_by_a_run(file_name: str, cut: frozenset = frozenset()) -> bool:
    """Whether `file_name` is the temp file of an output that segment writes: an image's
    `<name>.png` or `<name>.npy`, or failed.txt, which a run stopped by SIGKILL (or a second
    signal) can leave. `cut`: the temp prefixes of the outputs (of this folder) whose names
    are too long to be whole in their temp file's (`cut_prefixes`); the name in such a temp
    file is only the start of one of theirs, so it is recognised by that prefix alone."""
    match = _TEMP.match(file_name)
    if match is None:
        return False
    final = match["final"]
    if f".{final}." in cut:
        return True
    return final == "failed.txt" or (final[-4:] in (".png", ".npy") and is_image(final[:-4]))


def cut_prefixes(file_names) -> frozenset:
    """The temp prefixes (`fsutil.temp_prefix`) of those `file_names` that the prefix cuts."""
    return frozenset(p for p in map(temp_prefix, file_names) if p[1:-1] not in file_names)


def sweep_plan(out_dir, items) -> dict:
    """{folder: `cut_prefixes` of its outputs} for OUT_DIR and every folder in it that an
    output of `items` goes to (each image's .png, and its .npy, which a killed run with
    --scores may have been writing): what `sweep_temp_files` looks through."""
    names: dict[Path, set] = {Path(out_dir): set()}
    for item in items:
        png = output_path(out_dir, item.name)
        names.setdefault(png.parent, set()).update({png.name, png.name[:-4] + ".npy"})
    return {folder: cut_prefixes(files) for folder, files in sorted(names.items())}


def sweep_temp_files(plan: dict) -> int:
    """Remove the temp files that segment's outputs left in the folders of `plan`
    (`sweep_plan`; `left_by_a_run`); returns how many. A folder that cannot be listed is
    skipped (writing there will fail, and say so, for its images alone)."""
    removed = 0
    for folder, cut in plan.items():
        try:
            with os.scandir(folder) as entries:
                stale = [e.path for e in entries if left_by_a_run(e.name, cut)
                         and e.is_file(follow_symlinks=False)]
        except OSError:
            continue
        for path in stale:
            try:
                os.unlink(path)
                removed += 1
            except OSError:                # gone meanwhile, or not ours to remove: left as it is
                pass
    return removed


LOCK = ".squeezegen-segment.lock"


@contextlib.contextmanager
def out_dir_lock(out_dir, log):
    """OUT_DIR/.squeezegen-segment.lock held (flock, exclusive) for as long as the run: a second
    run into the same OUT_DIR stops at once with a one-line InputError, before its sweep could
    take the first one's temp files in progress for a killed run's. The file stays (removing it
    would let a third run lock a new file while the second holds the old one); it is no image,
    so neither an input nor an output. Where the file system cannot lock, one line says so and
    the run goes on."""
    try:
        import fcntl
    except ImportError:                      # Windows: no flock
        yield
        return
    path = Path(out_dir) / LOCK
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | nofollow, 0o644)
        except PermissionError:              # another user's lock file: flock needs no writing
            fd = os.open(path, os.O_RDONLY | nofollow)
    except OSError as exc:
        raise InputError(f"cannot create segment's lock file: {exc.strerror or exc}",
                         file=str(path)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another segment run is writing into this output folder (it "
                             f"holds {LOCK}): wait for it to end, or give another -o",
                             file=str(out_dir)) from None
        except OSError as exc:              # ENOLCK, EOPNOTSUPP: a file system without locks
            log(f"squeezegen: warning: cannot lock {path} ({exc.strerror or exc}): make sure "
                f"no other run writes into {out_dir} meanwhile")
        yield
    finally:
        os.close(fd)                        # and the lock with it
