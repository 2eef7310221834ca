"""What `squeezegen segment` reads: images, folders (recursive), globs and .txt lists of paths.

Each image becomes an `Item`: its path and its output name, the path relative to where it was
found (a folder: relative to the folder; a glob: to the glob's folder before the first wildcard;
a list: to the deepest folder common to its paths; a single image: its file name). The output
PNG is `OUT_DIR/<name>.png` (`a/b.jpg` -> `a/b.jpg.png`, so `b.jpg` and `b.png` side by side
do not clash); two inputs that would still write the same file are refused.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..images import IMAGE_SUFFIXES, is_image

MAGIC = ("*", "?", "[")


@dataclass(frozen=True, slots=True)
class Item:
    path: str            # where the image is read from
    name: str            # its output name relative to OUT_DIR, '/'-separated, image suffix kept


def output_path(out_dir, name: str, suffix: str = ".png") -> Path:
    if not _stays_inside(name):                        # `collect` never makes one: a last guard
        raise InputError(f"output name {name!r} would leave the output folder")
    return Path(out_dir) / (name + suffix)


def _stays_inside(name: str) -> bool:
    """A relative name with no '..' part and no empty one: OUT_DIR/name is inside OUT_DIR. A
    backslash is a separator only where the OS says so (Windows); elsewhere a name's character."""
    parts = name.replace("\\", "/").split("/") if "\\" in (os.sep, os.altsep) else name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def collect(inputs: list[str], out_dir=None) -> list[Item]:
    """Every image of `inputs`, in order, without duplicates; InputError for an input that does
    not exist, matches nothing, or clashes with another over an output name."""
    skip = os.path.realpath(out_dir) if out_dir is not None else None
    items: list[Item] = []
    for text in inputs:
        found = _expand(str(text), skip)
        if not found:
            raise InputError("no images found (looked for " + ", ".join(
                s.lstrip(".") for s in IMAGE_SUFFIXES) + ")", file=str(text))
        items.extend(found)
    return _unique(items, out_dir)


def _expand(text: str, skip: str | None) -> list[Item]:
    path = Path(text)
    if path.is_dir():
        return _walk(path, path, skip)
    if path.is_file():
        if path.suffix.lower() == ".txt":
            return _read_list(path)
        return [Item(str(path), path.name)]
    if any(m in text for m in MAGIC):
        return _glob(text, skip)
    raise InputError("input not found", file=text)


def _walk(folder: Path, root: Path, skip: str | None) -> list[Item]:
    items = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(here, d)) != skip)
        for f in sorted(files):
            if is_image(f) and not f.startswith("."):
                full = os.path.join(here, f)
                items.append(Item(full, Path(os.path.relpath(full, root)).as_posix()))
    return items


def _glob(pattern: str, skip: str | None) -> list[Item]:
    parts = Path(pattern).parts
    fixed = parts[:next(i for i, p in enumerate(parts) if any(m in p for m in MAGIC))]
    root = Path(*fixed) if fixed else Path(".")
    items = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        m = Path(match)
        if m.is_dir():
            items.extend(_walk(m, root, skip))
        elif m.is_file() and is_image(m):
            items.append(Item(match, Path(os.path.relpath(match, root)).as_posix()))
    return items


def _read_list(path: Path) -> list[Item]:
    """One path a line (text after a tab is ignored, so failed.txt can be given back); relative
    paths are relative to the list's folder; blank lines and '#' comments are skipped."""
    try:      # file names are bytes: undecodable ones come back as os.fsdecode gives them
        lines = path.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    except OSError as exc:
        raise InputError(f"cannot read the list of images: {exc}", file=str(path)) from None
    paths = []
    for line in lines:
        entry = line.split("\t", 1)[0].strip()    # (a trailing \r too: lists from Windows)
        if entry and not entry.startswith("#"):
            p = Path(entry)
            paths.append(str(p if p.is_absolute() else path.parent / p))
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [Item(p, Path(os.path.relpath(os.path.abspath(p), root)).as_posix()) for p in paths]


def _unique(items: list[Item], out_dir) -> list[Item]:
    """Each image once; never one inside OUT_DIR (a previous run's output, or an input that
    would be overwritten); an output name that would leave OUT_DIR (a glob or list reaching up
    with '..') is refused."""
    seen_paths: set[str] = set()
    owners: dict[str, str] = {}
    unique = []
    inside = os.path.realpath(out_dir) + os.sep if out_dir is not None else None
    for item in items:
        real = os.path.abspath(item.path)
        if real in seen_paths:
            continue
        seen_paths.add(real)
        if inside is not None and os.path.realpath(item.path).startswith(inside):
            continue
        if not _stays_inside(item.name):
            raise InputError(f"its output name {item.name!r} would leave the output folder "
                             "(name the images' folder without '..')", file=item.path)
        key = item.name
        if key in owners:
            target = output_path(out_dir or ".", item.name)
            raise InputError(f"{owners[key]} and {item.path} would both write {target} "
                             "(segment them in separate runs or rename one)")
        owners[key] = item.path
        unique.append(item)
    return unique
