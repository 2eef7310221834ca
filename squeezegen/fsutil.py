"""Atomic file writes (a temp file in the target's folder, then rename; never half a file), and
folders that squeezegen keeps for itself (caches), private to the user."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from .errors import BuildError, SqueezegenError


def atomic_write(path, write: Callable, error: type[SqueezegenError] = BuildError) -> None:
    """Create `path` by calling write(binary_file) on a temp file, then renaming it into place."""
    path = Path(path)
    tmp = _staged(path, write, error)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        what = "it is a folder" if path.is_dir() else exc.strerror or exc
        raise error(f"cannot write: {what}", file=str(path)) from None


def _staged(path: Path, write: Callable, error: type[SqueezegenError]) -> str:
    """The name of a temp file beside `path` holding what write(binary_file) wrote (mode
    0644); nothing left behind and `error` when that fails."""
    fd, tmp = _temp_beside(path, error)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise error(f"cannot write: {exc.strerror or exc}", file=str(path)) from None
        raise
    return tmp


def refuse_overwriting(targets, sources: dict, error: type[SqueezegenError]) -> None:
    """Refuse to write any of `targets` over one of `sources` ({what: path}, e.g. {"the model":
    "m.yaml"}): a command must never replace the files it reads."""
    def same(a, b) -> bool:
        try:
            return os.path.samefile(a, b)
        except (OSError, ValueError):
            return os.path.realpath(a) == os.path.realpath(b)
    for target in targets:
        for what, source in sources.items():
            if source is not None and isinstance(source, (str, os.PathLike)) \
                    and same(target, source):
                raise error(f"would overwrite {what} ({source}); write elsewhere",
                            file=str(target))


def check_writable(path, error: type[SqueezegenError] = BuildError) -> None:
    """Refuse, before any work, a file `atomic_write` could not create: one that is a folder,
    or whose folder is a file or not writable."""
    path = Path(path)
    if path.is_dir():
        raise error("cannot write: it is a folder", file=str(path))
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise error(f"cannot write: {blocker} is a file, not a folder", file=str(path))
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"cannot write: {existing} is not writable", file=str(path))


MAX_NAME_BYTES = 255              # a file name's limit on Linux, macOS and Windows file systems


def temp_prefix(name: str) -> str:
    """The prefix of the temp file `atomic_write` writes `name` through: `.<name>.`, the name
    cut so that the temp file's name (prefix, 8 random characters, `.tmp`) stays within
    MAX_NAME_BYTES where the final name does."""
    room = MAX_NAME_BYTES - len(".") - len(".") - 8 - len(".tmp")
    cut = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return f".{cut}."


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` (itself included) when it is not a folder."""
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def _temp_beside(path: Path, error: type[SqueezegenError]) -> tuple[int, str]:
    """A new temp file (descriptor, name) in `path`'s folder, made if needed; `error` naming
    `path` and what stands in the way when that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        blocker = _file_in_the_way(path.parent)
        if blocker is not None:
            raise error(f"cannot write: {blocker} is a file, not a folder",
                        file=str(path)) from None
        raise error(f"cannot write: {exc.strerror or exc}", file=str(path)) from None
    except ValueError:                         # a NUL in the path
        raise error("cannot write: a path cannot hold a NUL character", file=str(path)) from None


def atomic_write_all(files: dict, error: type[SqueezegenError] = BuildError) -> None:
    """Write a set of files ({path: bytes}) as one: every file goes to a temp file first, and
    only when all are written are they renamed into place, so a failure (a full disk, a
    folder in the way) leaves the old set, not a mix of old and new files."""
    staged = []
    try:
        for path, content in files.items():
            path = Path(path)
            if path.is_dir():
                raise error("cannot write: it is a folder", file=str(path))
            staged.append((_staged(path, lambda f, c=content: f.write(c), error), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str, error: type[SqueezegenError] = BuildError) -> None:
    atomic_write(path, lambda f: f.write(text.encode()), error)


def private_dir(path, what: str, error: type[SqueezegenError] = BuildError) -> Path:
    """`path` as a folder only this user can write (created 0700 if missing). One that another
    user owns, or that others can write to, is refused: anyone who can write into a cache could
    plant code that squeezegen then loads (a cubin) or trusts."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise error(f"cannot create the {what}: {exc.strerror or exc}", file=str(path)) from None
    if not stat.S_ISDIR(info.st_mode):
        raise error(f"the {what} is not a folder", file=str(path))
    if info.st_uid != os.getuid():
        raise error(f"the {what} belongs to another user (uid {info.st_uid}), so squeezegen will "
                    "not use it; set SQUEEZEGEN_CACHE to a folder of your own", file=str(path))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise error(f"the {what} can be written by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):o}), so squeezegen will not use it; make it "
                    f"private (chmod 700) or set SQUEEZEGEN_CACHE to another folder",
                    file=str(path))
    return path


def npy_overclaim(f, available: int) -> str | None:
    """What is wrong with the .npy array at the position of binary file `f` when its header
    declares more data than the `available` bytes there hold (a truncated or forged file, which
    numpy would first try to allocate in full), else None; `f` is left where it was."""
    import numpy as np
    start = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
        header = f.tell() - start
    except Exception:              # not an .npy header numpy can read: np.load says why
        return None
    finally:
        f.seek(start)
    if dtype.hasobject:            # a pickle, of any size: np.load refuses it and says why
        return None
    count = 1
    for n in shape:
        count *= int(n)
    declared = count * dtype.itemsize
    if declared > available - header:
        return (f"truncated or corrupt: its header declares a {list(shape)} {dtype} array "
                f"({declared:,} bytes), the file holds {max(0, available - header):,}")
    return None
