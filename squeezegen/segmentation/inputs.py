"""What `squeezegen segment` reads: images, folders (recursive), globs and .txt lists of paths.

Each image becomes an `Item`: its path and its output name, the path relative to where it was
found (a folder: relative to the folder; a glob: to the glob's folder before the first wildcard;
a single image: its file name; a list: see `list_name`, which depends on the entry and the
list's folder alone, so that editing a list never renames the other entries' outputs). The
output PNG is `OUT_DIR/<name>.png` (`a/b.jpg` -> `a/b.jpg.png`, so `b.jpg` and `b.png` side by
side do not clash); two inputs that would still write the same file are refused. Folders are
walked through symbolic links, each real folder once (no loops); a subfolder that cannot be
read is reported and listed among the failures, the rest of the walk goes on.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..errors import InputError, printable
from ..images import IMAGE_SUFFIXES, is_image

MAGIC = ("*", "?", "[")
UP = "__"                 # a list entry's '..' in its output name (`list_name`)


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


class _Found:
    """What `collect` gathers besides the images: the folders it could not read (path, why)."""

    def __init__(self, skip: str | None, failures: list | None, log):
        self.skip = skip
        self.failures = failures if failures is not None else []
        self.log = log or (lambda m: None)

    def unreadable(self, folder: str, exc: OSError) -> None:
        why = f"cannot read the folder: {exc.strerror or exc}"
        self.failures.append((folder, why))
        self.log(f"squeezegen: skipped {printable(folder)}: {printable(why)}")


def collect(inputs: list[str], out_dir=None, failures: list | None = None,
            log=None) -> list[Item]:
    """Every image of `inputs`, in order, without duplicates; InputError for an input that does
    not exist, matches nothing, or clashes with another over an output name, and when every
    image found lies inside OUT_DIR. A subfolder that cannot be read goes into `failures`
    ((path, why)) and is reported through `log` in one line."""
    if not inputs:
        raise InputError("no inputs given (images, folders, globs or .txt lists)")
    skip = os.path.realpath(out_dir) if out_dir is not None else None
    found = _Found(skip, failures, log)
    items: list[Item] = []
    for text in inputs:
        more = _expand(str(text), found)
        if not more:
            raise InputError("no images found (looked for " + ", ".join(
                s.lstrip(".") for s in IMAGE_SUFFIXES) + ")", file=str(text))
        items.extend(more)
    return _unique(items, out_dir, found.log)


def _expand(text: str, found: _Found) -> list[Item]:
    path = Path(text)
    if path.is_dir():
        return _walk(path, path, found, given=True)
    if path.is_file():
        if path.suffix.lower() == ".txt":
            return _read_list(path)
        return [Item(str(path), path.name)]
    if any(m in text for m in MAGIC):
        return _glob(text, found)
    raise InputError("input not found", file=text)


def _walk(folder: Path, root: Path, found: _Found, given: bool = False) -> list[Item]:
    """The images under `folder` (named relative to `root`), through symbolic links, each
    real folder once (a link back up would loop; one to a sibling would give its images
    twice); OUT_DIR and hidden folders are not entered. A folder the user named that cannot be
    read is an InputError; a subfolder, a failure of its own."""
    seen = {os.path.realpath(folder)}
    errors: list[OSError] = []
    items = []
    for here, dirs, files in os.walk(folder, onerror=errors.append, followlinks=True):
        keep = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(here, d))
            if d.startswith(".") or real == found.skip or real in seen:
                continue
            seen.add(real)
            keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            if is_image(f) and not f.startswith("."):
                full = os.path.join(here, f)
                items.append(Item(full, Path(os.path.relpath(full, root)).as_posix()))
    for exc in errors:
        where = str(exc.filename) if exc.filename is not None else str(folder)
        if given and os.path.realpath(where) == os.path.realpath(folder):
            raise InputError(f"cannot read the folder: {exc.strerror or exc}", file=str(folder))
        found.unreadable(where, exc)
    return items


def _glob(pattern: str, found: _Found) -> list[Item]:
    parts = Path(pattern).parts
    fixed = parts[:next(i for i, p in enumerate(parts) if any(m in p for m in MAGIC))]
    root = Path(*fixed) if fixed else Path(".")
    items = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        m = Path(match)
        if m.is_dir():
            items.extend(_walk(m, root, found))
        elif m.is_file() and is_image(m):
            items.append(Item(match, Path(os.path.relpath(match, root)).as_posix()))
    return items


def list_name(entry: str) -> str:
    """The output name of a list entry, from the entry and the list's folder alone (never from
    the other entries, so editing a list does not rename what was done): a relative entry keeps
    its path relative to the list's folder, each leading '..' written as `UP` ('__'), so
    `../col/a.png` is `__/col/a.png`; an absolute one its whole path without the root
    (`/data/a.png` is `data/a.png`). The path is normalised as text (`a/./b/../c.png` is
    `a/c.png`); symbolic links are not resolved."""
    path = PurePath(os.path.normpath(entry))
    if path.is_absolute():
        parts = path.parts[1:]
    else:
        parts = tuple(UP if p == ".." else p for p in path.parts)
    return PurePath(*parts).as_posix() if parts else ""


def _read_list(path: Path) -> list[Item]:
    """One path a line (text after a tab is ignored, so failed.txt can be given back); relative
    paths are relative to the list's folder; blank lines, '#' comments and a UTF-8 byte-order
    mark at the start are skipped. Each entry's output name is `list_name`'s."""
    try:      # file names are bytes: undecodable ones come back as os.fsdecode gives them
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise InputError(f"cannot read the list of images: {exc.strerror or exc}",
                         file=str(path)) from None
    items = []
    for line in text.removeprefix("\ufeff").split("\n"):
        entry = line.split("\t", 1)[0].strip()    # (a trailing \r too: lists from Windows)
        if entry and not entry.startswith("#"):
            p = Path(entry)
            items.append(Item(str(p if p.is_absolute() else path.parent / p), list_name(entry)))
    return items


def _unique(items: list[Item], out_dir, log) -> list[Item]:
    """Each image once; never one inside OUT_DIR (a previous run's output, or an input that
    would be overwritten: said in one line, and an InputError when that leaves nothing); an
    output name that would leave OUT_DIR (a glob reaching up with '..') is refused."""
    seen_paths: set[str] = set()
    owners: dict[str, str] = {}
    unique = []
    inside = os.path.realpath(out_dir) + os.sep if out_dir is not None else None
    in_out_dir = 0
    for item in items:
        real = os.path.abspath(item.path)
        if real in seen_paths:
            continue
        seen_paths.add(real)
        if inside is not None and os.path.realpath(item.path).startswith(inside):
            in_out_dir += 1
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
    if in_out_dir and not unique:
        raise InputError(f"every image found ({in_out_dir:,}) lies inside the output folder, "
                         "where segment never reads (its outputs go there): give another -o",
                         file=str(out_dir))
    if in_out_dir:
        log(f"squeezegen: {in_out_dir:,} of the images found lie inside the output folder "
            f"{printable(out_dir)} and are not read")
    return unique
