"""Atomic file writes: a temp file in the target's folder, then rename; never half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import BuildError, SqueezegenError


def atomic_write(path, write: Callable, error: type[SqueezegenError] = BuildError) -> None:
    """Create `path` by calling write(binary_file) on a temp file, then renaming it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"cannot write: {exc.strerror or exc}", file=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise error(f"cannot write: {exc.strerror or exc}", file=str(path)) from None
        raise


def write_text(path, text: str, error: type[SqueezegenError] = BuildError) -> None:
    atomic_write(path, lambda f: f.write(text.encode()), error)
