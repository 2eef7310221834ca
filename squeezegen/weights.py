"""Weight files: `.npz` archives keyed `<layer>.weight` / `<layer>.bias` in PyTorch's layouts.

Read without pickle, checked against what the model needs (missing and extra keys listed, shapes
exact, values finite), and written atomically. `init_weights` makes a reproducible He-initialised
set for a model.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from math import prod

import numpy as np

from .errors import WeightsError
from .fsutil import atomic_write, npy_overclaim
from .ir.graph import Graph
from .ir.ops import OPS, node_params, param_specs, source_specs, weights_under


MAX_INIT_FLOATS = 1 << 30
# a compressed archive may inflate to at most this many times its size, past 256 MiB (weights
# are noise and hardly compress; a file that inflates 1000:1 is a zip bomb)
MAX_INFLATION, INFLATION_FREE_BYTES = 16, 256 << 20
# state_dict entries that are not weights: a BatchNorm's step counter
IGNORED_SUFFIXES = (".num_batches_tracked",)


def load_weights(path) -> dict[str, np.ndarray]:
    """Read an .npz weights file into {key: float32 array}; WeightsError when it is unreadable."""
    if isinstance(path, dict):
        return dict(path)
    if not isinstance(path, (str, os.PathLike)):
        raise WeightsError(f"weights are an .npz path or a dict of arrays, got "
                           f"{type(path).__name__}")
    file = str(path)
    try:
        with open(file, "rb") as f:
            if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):     # a zip; an empty one
                raise WeightsError("not an .npz archive (a .npz is a zip of .npy arrays, as "
                                   "np.savez writes)", file=file)
            f.seek(0)
            with np.load(f, allow_pickle=False) as archive:
                _check_inflation(archive.zip, f.seek(0, 2), file)
                names = set(archive.zip.namelist())
                for key in archive.files:
                    name = f"{key}.npy" if f"{key}.npy" in names else key
                    with archive.zip.open(name) as member:
                        forged = npy_overclaim(member, archive.zip.getinfo(name).file_size)
                    if forged:
                        raise WeightsError(f"'{key}' is {forged}", file=file)
                return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise WeightsError("weights file not found", file=file) from None
    except IsADirectoryError:
        raise WeightsError("is a folder, not an .npz weights file", file=file) from None
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise WeightsError("holds Python objects (object arrays need pickle, which squeezegen "
                               "never loads); save plain float arrays", file=file) from None
        raise WeightsError(f"not a readable .npz weights file ({exc})", file=file) from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WeightsError(f"not a readable .npz weights file (truncated or corrupt: {exc})",
                           file=file) from None
    except (RuntimeError, NotImplementedError) as exc:   # encrypted, or an unknown compression
        raise WeightsError(f"not a readable .npz weights file ({exc})", file=file) from None


def _check_inflation(archive: zipfile.ZipFile, size: int, file: str) -> None:
    """Refuse an archive whose members declare far more bytes than the file holds (a zip
    bomb), before any is inflated: a member never inflates past its declared size."""
    declared = sum(info.file_size for info in archive.infolist())
    if declared > INFLATION_FREE_BYTES and declared > MAX_INFLATION * size:
        raise WeightsError(f"its arrays would inflate to {declared:,} bytes from a {size:,}-byte "
                           f"file ({declared / max(size, 1):,.0f}:1; weights hardly compress, "
                           f"squeezegen reads at most {MAX_INFLATION}:1 past "
                           f"{INFLATION_FREE_BYTES >> 20} MiB)", file=file)


def check_weights(graph: Graph, weights: dict, file: str | None = None) -> dict[str, np.ndarray]:
    """The weights the user supplies for the graph (`source_specs`: for a graph after passes,
    those of the model it came from), as C-contiguous float32 arrays in graph order; keys ending
    in .num_batches_tracked (a BatchNorm's step counter in PyTorch's state_dict) are ignored.

    WeightsError lists missing and extra keys (or names the prefix they all carry, `module.`
    or `model.`), names a key with the wrong shape (expected/got), a non-float dtype or a
    non-finite value.
    """
    file = file or "weights"
    if not isinstance(weights, dict):
        raise WeightsError(f"weights are a dict of arrays or an .npz path, got "
                           f"{type(weights).__name__}", file=file)
    odd = [k for k in weights if not isinstance(k, str)]
    if odd:
        raise WeightsError(f"weight names are strings, got {odd[0]!r}", file=file)
    specs = source_specs(graph)
    missing = [k for k in specs if k not in weights]
    extra = sorted(k for k in weights if k not in specs and not k.endswith(IGNORED_SUFFIXES))
    if missing or extra:
        def listing(keys):
            shown = ", ".join(keys[:8])
            return shown + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        why = f"the weights do not fit model '{graph.name}': "
        prefix = _wrapper_prefix(missing, extra)
        if prefix:
            example = next(k for k in extra if k[len(prefix):] == missing[0])
            raise WeightsError(why + f"the keys start with '{prefix}' ('{example}' for "
                               f"'{missing[0]}', as in the state_dict of a wrapping module): save "
                               f"{{k.removeprefix('{prefix}'): v for k, v in ...}} instead",
                               file=file)
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {listing(missing)}")
        if extra:
            parts.append(f"unexpected {len(extra)} tensor(s): {listing(extra)}")
        if not weights:
            parts.append("the archive holds no tensors at all")
        raise WeightsError(why + "; ".join(parts), file=file)
    out = {}
    for key, shape in specs.items():
        value = weights[key]
        layer = key.split(".")[0]
        if not isinstance(value, np.ndarray):
            value = np.asarray(value)
        if value.dtype.kind != "f":
            raise WeightsError(f"'{key}' has dtype {value.dtype}; weights must be floating point",
                               file=file, layer=layer)
        if tuple(value.shape) != tuple(shape):
            raise WeightsError(f"'{key}' has shape {tuple(value.shape)}, expected {tuple(shape)}",
                               file=file, layer=layer)
        bad = ~np.isfinite(value)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise WeightsError(f"'{key}' holds {int(bad.sum())} non-finite value(s) (NaN/Inf), "
                               f"first at index {where}", file=file, layer=layer)
        if value.dtype.itemsize > 4:                 # float64 values beyond float32's range
            big = np.abs(value) > np.finfo(np.float32).max
            if big.any():
                where = tuple(int(i) for i in np.argwhere(big)[0])
                raise WeightsError(f"'{key}' holds {int(big.sum())} value(s) beyond float32's "
                                   f"range (the kernels compute in float32), first "
                                   f"{value[where]:g} at index {where}", file=file, layer=layer)
        value = np.ascontiguousarray(value, dtype=np.float32)
        out[key] = value
    _check_values(graph, out, file)
    return out


def _check_values(graph: Graph, weights: dict, file: str) -> None:
    """Each node's and epilogue step's own check of its weights' values (OpInfo.check_params)."""
    owners = [(n.op, n.attrs, n.param_prefix) for n in graph.nodes if n.param_prefix]
    owners += [(s.kind, s.attrs, s.param_prefix) for n in graph.nodes for s in n.epilogue
               if s.param_prefix]
    for op, attrs, prefix in owners:
        params = weights_under(weights, prefix)
        problem = OPS[op].check_params(attrs, params) if params else None
        if problem:
            raise WeightsError(problem, file=file, layer=prefix)


WRAPPER_PREFIXES = ("module.", "model.")      # nn.DataParallel / DDP, Lightning and co.


def _wrapper_prefix(missing: list[str], extra: list[str]) -> str | None:
    """The prefix of a wrapping module (`module.conv1.weight` for `conv1.weight`) when every
    unexpected key carries it and, without it, they are the missing ones."""
    for prefix in WRAPPER_PREFIXES:
        if missing and all(k.startswith(prefix) for k in extra) and \
                set(missing) <= {k[len(prefix):] for k in extra}:
            return prefix
    return None


def init_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised weights (normal, std sqrt(2 / fan_in)), zero biases; same seed, same set."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WeightsError(f"seed must be a non-negative integer, got {seed!r}")
    total = sum(prod(s) for s in param_specs(graph).values())
    if total > MAX_INIT_FLOATS:
        raise WeightsError(f"model '{graph.name}' has {total:,} parameters "
                           f"({4 * total / 2**30:.1f} GiB); init-weights makes at most "
                           f"{MAX_INIT_FLOATS:,}", file=graph.source)
    rng = np.random.default_rng(seed)
    out = {}
    for node in graph.nodes:
        if not node.param_prefix:
            continue
        for key, shape in node_params(graph, node).items():
            name = key[len(node.param_prefix) + 1:]
            out[key] = np.asarray(OPS[node.op].init(node.attrs, name, shape, rng), np.float32)
    return out


def save_weights(path, weights: dict[str, np.ndarray]) -> None:
    """Write an .npz atomically (temp file in the same folder, then rename), without pickle:
    keys are names (letters, digits, '_', '.', '-', ':'), values real numeric arrays."""
    arrays = _savable(weights, path)
    atomic_write(path, lambda f: _write_npz(f, arrays), WeightsError)


def npz_bytes(weights: dict[str, np.ndarray], path) -> bytes:
    """The bytes `save_weights` writes to `path`, for a caller that writes them together with
    other files (`fsutil.atomic_write_all`)."""
    arrays = _savable(weights, path)
    buffer = io.BytesIO()
    _write_npz(buffer, arrays)
    return buffer.getvalue()


def _savable(weights, path) -> dict[str, np.ndarray]:
    """`weights` as contiguous arrays; WeightsError for what an .npz must not hold."""
    if not isinstance(weights, dict):
        raise WeightsError(f"weights must be a dict of arrays, got {type(weights).__name__}",
                           file=str(path))
    arrays = {}
    for key, value in weights.items():
        if not isinstance(key, str) or not _WEIGHT_KEY.fullmatch(key):
            raise WeightsError(f"bad weight name {key!r} (letters, digits, '_', '.', '-', ':')",
                               file=str(path))
        array = np.ascontiguousarray(value)
        if array.dtype.kind not in "fiub":
            raise WeightsError(f"'{key}' holds {array.dtype} values; weights are real numbers",
                               file=str(path))
        arrays[key] = array
    return arrays


def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """What np.savez writes (a stored zip of `<key>.npy`), never pickling."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


_WEIGHT_KEY = re.compile(r"[A-Za-z0-9_.:\-]+")
