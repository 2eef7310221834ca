"""The `squeezegen` command: build | summary | run | segment | check | bench | tune | import |
init-weights.

Every user error ends as one line on stderr (`squeezegen: error: FILE:LINE: layer 'x', field
'y': what is wrong`) and exit status 1; bad command-line usage exits 2. No tracebacks, unless
SQUEEZEGEN_DEBUG=1 is set.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import __version__
from .codegen.schedule import PRECISIONS
from .errors import InputError, SqueezegenError, WeightsError
from .frontend import load_model
from .fsutil import atomic_write, check_writable, npy_overclaim, refuse_overwriting
from .ir.printer import format_summary, summarize
from .reference.executor import check_input


def _cmd_summary(args) -> int:
    summary = summarize(load_model(args.model))
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def _cmd_init_weights(args) -> int:
    from .weights import init_weights, save_weights
    graph = load_model(args.model)
    refuse_overwriting([args.output], {"the model": args.model}, WeightsError)
    weights = init_weights(graph, args.seed)
    save_weights(args.output, weights)
    count = sum(v.size for v in weights.values())
    print(f"wrote {args.output}: {len(weights)} tensors, {count:,} parameters "
          f"(He-initialised, seed {args.seed})")
    return 0


def _load_input(path: str, graph, args) -> np.ndarray:
    from .images import IMAGE_SUFFIXES, is_image, load_image
    if is_image(path):
        return load_image(path, graph.input.type.shape, args.mean, args.std)
    magic = None
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            f.seek(0)
            forged = npy_overclaim(f, os.fstat(f.fileno()).st_size)
        if forged:
            raise InputError(forged, file=path)
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("input file not found", file=path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a .npy array", file=path) from None
    except (ValueError, OSError, EOFError) as exc:
        # numpy takes anything without the .npy magic for a pickle and suggests allow_pickle;
        # squeezegen never unpickles, so it never gives that advice
        if magic is not None and magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
            raise InputError(f"not a .npy array (np.save writes one) nor an image "
                             f"({', '.join(IMAGE_SUFFIXES)})", file=path) from None
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputError("holds Python objects (object arrays need pickle, which squeezegen "
                             "never loads); save a float32 array", file=path) from None
        raise InputError(f"not a readable .npy array ({exc})", file=path) from None
    if not isinstance(data, np.ndarray):
        data.close()
        raise InputError("is an .npz archive; give the input as one .npy array", file=path)
    return data


def _choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    from .runtime.network import gpu_available
    if gpu_available():
        return "cuda"
    print("squeezegen: no usable GPU (or PyCUDA): running on the numpy backend", file=sys.stderr)
    return "numpy"


def _check_output(path: str, graph) -> None:
    """Refuse an --output whose extension does not name what `_write_outputs` writes there."""
    suffix = Path(path).suffix.lower()
    labels = graph.output_labels
    if suffix == ".npy" and len(labels) > 1:
        raise InputError(f"model '{graph.name}' has {len(labels)} outputs ({', '.join(labels)}): "
                         "give an .npz output, which holds one array per output, keyed by its "
                         "layer name", file=path)
    if suffix not in (".npy", ".npz", ".png"):
        raise InputError(f"cannot write a '{suffix or path}' output: give .npy (one output), .npz "
                         "(arrays keyed by layer name) or .png (the argmax classes in the VOC "
                         "palette, with the arrays beside it)", file=path)
    if suffix == ".png":
        from .images import MAX_PNG_CLASSES
        shape = graph[graph.outputs[0]].type.shape
        if len(shape) != 3:
            raise InputError(f"a .png output holds the argmax classes of a (classes, H, W) "
                             f"output; '{labels[0]}' has shape {list(shape)}: give .npy or .npz",
                             file=path)
        if shape[0] > MAX_PNG_CLASSES:
            raise InputError(f"a palette PNG holds at most {MAX_PNG_CLASSES} classes; "
                             f"'{labels[0]}' has {shape[0]}: give .npy or .npz", file=path)


def _output_files(path: str, graph) -> list[Path]:
    """The files `_write_outputs` writes for --output `path`: a .png has its arrays beside it."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        return [target]
    return [target, target.with_suffix(".npy" if len(graph.output_labels) == 1 else ".npz")]


def _write_outputs(path: str, graph, outputs: tuple) -> list[str]:
    """A .png of the first output's classes (and the arrays beside it), an .npy of the one
    output, or an .npz of every output keyed by its layer name."""
    from .images import save_segmentation
    written = []
    target = Path(path)
    if target.suffix.lower() == ".png":
        save_segmentation(target, outputs[0])
        written.append(str(target))
        target = target.with_suffix(".npy" if len(outputs) == 1 else ".npz")
    if target.suffix.lower() == ".npy":
        atomic_write(target, lambda f: np.save(f, outputs[0]), InputError)
    else:
        named = dict(zip(graph.output_labels, outputs))
        atomic_write(target, lambda f: np.savez(f, **named), InputError)
    return written + [str(target)]


@contextmanager
def _warned_once(x: np.ndarray):
    """Around a backend, after check_input warned of the input's NaN/Inf: that one warning is
    all the user gets (not the backend's own check again, nor numpy's 'invalid value')."""
    with warnings.catch_warnings():
        if not np.isfinite(x).all():
            warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _run_backend(backend: str, graph, weights, x):
    if backend == "cuda":
        from .runtime.network import compile as compile_network
        with compile_network(graph, weights, batch=x.shape[0]) as net:
            return net(x)
    from .reference import reference
    return reference(graph, weights)(x)


def _cmd_run(args) -> int:
    from .frontend import load_model as _load
    graph = _load(args.model)
    _check_output(args.output, graph)
    refuse_overwriting(_output_files(args.output, graph), {
        "the model": args.model, "the weights": args.weights, "the input": args.input}, InputError)
    x = _load_input(args.input, graph, args)
    try:
        x = check_input(graph, x)
    except InputError as exc:
        raise exc.located(file=args.input)
    backend = _choose_backend(args.backend)
    try:
        with _warned_once(x):
            y = _run_backend(backend, graph, args.weights, x)
    except InputError as exc:
        raise exc.located(file=args.input)
    outputs = y if isinstance(y, tuple) else (y,)
    written = _write_outputs(args.output, graph, outputs)
    shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
    print(f"backend {backend}: output {shapes}; wrote {', '.join(written)}")
    return 0


def _cmd_segment(args) -> int:
    from .segmentation import segment
    if args.json:
        check_writable(args.json, InputError)
    summary = segment(args.model, args.weights, args.inputs, args.output, batch=args.batch,
                      precision=args.precision, gpus=args.gpus, resize=args.resize,
                      mean=args.mean, std=args.std, scores=args.scores,
                      overwrite=args.overwrite, backend=args.backend, workers=args.workers,
                      per_gpu=args.per_gpu, progress=not args.quiet, ray=args.ray,
                      decoders=args.decoders, resize_on=args.resize_on, jpeg_on=args.jpeg_on,
                      overlap=args.overlap)
    print(summary.text())
    if args.json:
        atomic_write(args.json, lambda f: f.write((json.dumps(summary.as_dict(), indent=1)
                                                   + "\n").encode()))
    return 0


def _cmd_check(args) -> int:
    from .runtime.check import check_kernels, format_checks
    from .runtime.network import compile as compile_network
    graph = load_model(args.model)
    if args.input:
        x = _load_input(args.input, graph, args)
    else:
        x = np.random.default_rng(args.seed).uniform(-1, 1, (args.batch,) + graph.input.type.shape)
        x = x.astype(np.float32)
    try:
        x = check_input(graph, x)
    except InputError as exc:
        raise exc.located(file=args.input)
    with compile_network(graph, args.weights, batch=x.shape[0], use_graph=False) as net, \
            _warned_once(x):
        rows = check_kernels(net, x, args.tolerance)
    print(format_checks(rows, graph.source, args.tolerance))
    return 0 if all(r.ok for r in rows) else 1


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _cmd_build(args) -> int:
    from .build import build, stale_files, write_outputs
    from .ir.printer import format_graph

    def dump(name, graph):
        print(f"\n=== IR after {name} ===\n{format_graph(graph)}")

    if args.dump_ir:
        print(f"=== IR as parsed ===\n{format_graph(load_model(args.model))}")
    result = build(args.model, args.batch, args.weights, args.precision,
                   on_pass=dump if args.dump_ir else None)
    if args.dump_ir:
        print(f"\n=== IR after plan_memory ===\n{format_graph(result.fused, result.plan)}\n")
    folder = Path(args.output) / result.graph.name
    if args.check:
        options = (f" --precision {args.precision}" if args.precision != "fp32" else "") + (
            f" --weights {args.weights}" if args.weights else "")
        rebuild = (f"(build with: squeezegen build {args.model} --batch {args.batch}{options} -o "
                   f"{args.output})")
        if not folder.is_dir():
            raise SqueezegenError(f"no generated code: the folder does not exist {rebuild}",
                                  file=str(folder))
        missing, differ = stale_files(result.output, folder)
        stale = ([f"{_listing(missing)} {'is' if len(missing) == 1 else 'are'} missing"]
                 if missing else [])
        if differ:
            stale.append(f"{_listing(differ)} {'differs' if len(differ) == 1 else 'differ'} from "
                         f"what {args.model} gives")
        if stale:
            raise SqueezegenError(f"generated code is stale: {'; '.join(stale)} {rebuild}",
                                  file=str(folder))
        print(f"{folder}: up to date ({len(result.output.files)} files)")
        return 0
    written = write_outputs(result.output, folder)
    plan = result.plan
    print(f"{result.graph.name}: batch {args.batch}, {len(result.output.kernels)} kernels "
          f"(passes: {', '.join(result.fused.passes)}, plan_memory)")
    op_width = max([8] + [len(k.node.op) for k in result.output.kernels])
    for k in result.output.kernels:
        mma = k.extra.get("mma")
        print(f"  {k.name:32s} {k.node.op:{op_width}s} -> {str(k.node.type):14s} "
              f"grid {k.grid_text:12s}"
              f"{f' tensor cores ({mma})' if mma else ''}".rstrip())
    if args.precision != "fp32":
        on = sum(1 for k in result.output.kernels if k.extra.get("mma"))
        print(f"tensor cores: {on} of {len(result.output.kernels)} kernels ({args.precision} "
              "inputs, fp32 accumulation); the others run in fp32")
    print(f"arena: {plan.arena_bytes:,} bytes ({plan.unshared_bytes:,} without sharing, "
          f"{plan.arena_bytes / max(1, plan.unshared_bytes):.0%})")
    for path in written:
        print(f"wrote {path}")
    return 0


COMPARE_VARIANTS = ("eager", "graph", "compile", "fp16", "numpy")


def compare_variants(text: str, precision: str = "fp32") -> list[str]:
    """`--compare`'s list: `torch` is every PyTorch variant that fits the build's precision
    (eager, eager + CUDA graph and torch.compile; fp16 channels_last too in fp16 builds);
    `none` is nothing."""
    names = [] if text == "none" else [n.strip() for n in text.split(",") if n.strip()]
    torch = ["eager", "graph", "compile"] + (["fp16"] if precision == "fp16" else [])
    expanded = [v for n in names for v in (torch if n == "torch" else [n])]
    unknown = sorted(set(expanded) - set(COMPARE_VARIANTS))
    if unknown or not (names or text == "none"):
        raise SqueezegenError(f"--compare takes torch, {', '.join(COMPARE_VARIANTS)} or none "
                              f"(comma-separated), got '{text}'", field="compare")
    return list(dict.fromkeys(expanded))


def _cmd_bench(args) -> int:
    from .runtime.bench import bench, format_bench
    if args.json:
        check_writable(args.json, InputError)
    compare = compare_variants(args.compare, args.precision)
    weights = args.weights
    if weights is None:
        from .weights import init_weights
        weights = init_weights(load_model(args.model), 0)
    result = bench(args.model, weights, args.batch, compare, args.per_layer, args.iters,
                   tune=not args.no_tune, log=lambda m: print(m, file=sys.stderr, flush=True),
                   precision=args.precision)
    print(format_bench(result))
    if args.json:
        atomic_write(args.json, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
        print(f"wrote {args.json}")
    return 0


def _cmd_tune(args) -> int:
    from .runtime.autotune import autotune, tuning_file
    from .runtime.network import cuda
    cuda()                                  # no GPU: one clear error before any work
    for batch in args.batch:
        print(f"batch {batch}:")
        chosen = autotune(args.model, batch, force=args.force, log=lambda m: print("  " + m),
                          precision=args.precision)
        print(f"  {len(chosen)} tiles chosen")
    print(f"cache: {tuning_file()}")
    return 0


def _cmd_import(args) -> int:
    from .frontend.onnx_import import write_import
    yaml_out = Path(args.output)
    weights_out = Path(args.weights_out) if args.weights_out else yaml_out.with_suffix(".npz")
    graph, weights = write_import(args.model, yaml_out, weights_out)
    fires = sum(1 for _, op in graph.layer_ops if op == "fire")
    count = sum(v.size for v in weights.values())
    print(f"wrote {yaml_out}: model '{graph.name}', input {list(graph.input.type.shape)}, "
          f"{len(graph.layer_ops)} layers" + (f" ({fires} fire modules)" if fires else ""))
    print(f"wrote {weights_out}: {len(weights)} tensors, {count:,} parameters")
    for line in yaml_out.read_text().splitlines():      # layouts squeezegen changed
        if line.startswith("# ONNX ") and "channels-last" in line:
            print("note: " + line[2:])
    print(f"next: squeezegen build {yaml_out} --weights {weights_out}")
    return 0


def _option(convert, ok, want: str, rule: str, many: bool = False):
    """An argparse type: `convert` each comma-separated value (one, unless `many`), and check it
    with `ok`; the errors say what was expected (`want`) or which `rule` was broken."""
    def parse(text: str):
        try:
            values = [convert(v) for v in text.split(",")] if many else [convert(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got '{text}'") from None
        if not all(ok(v) for v in values):
            raise argparse.ArgumentTypeError(f"{rule}, got '{text}'")
        return values if many else values[0]
    return parse


_batches = _option(int, lambda v: v >= 1, "batch sizes like 1,8,32",
                   "batch sizes must be at least 1", many=True)
_positive_int = _option(int, lambda v: v >= 1, "a positive integer", "must be at least 1")
_non_negative_int = _option(int, lambda v: v >= 0, "an integer", "must be 0 or more")
_floats = _option(float, lambda v: bool(np.isfinite(v)), "numbers separated by commas",
                  "expected finite numbers", many=True)
_tolerance = _option(float, lambda v: bool(np.isfinite(v)) and v > 0, "a number",
                     "must be a positive number")


def _image_options(s) -> None:
    s.add_argument("--mean", type=_floats, default=[128.0], metavar="M[,M,M]",
                   help="image inputs: the mean subtracted from 0..255 pixels, one value or one "
                        "per channel, comma-separated (--mean 123.7,116.3,103.5) [128]")
    s.add_argument("--std", type=_floats, default=[1.0], metavar="S[,S,S]",
                   help="image inputs: the divisor after the mean, one value or one per "
                        "channel, comma-separated [1]")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="squeezegen",
                                description="Compile YAML CNN descriptions to specialised CUDA C.")
    p.add_argument("--version", action="version", version=f"squeezegen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("summary", help="print the layers, shapes, parameters and FLOPs")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_cmd_summary)

    s = sub.add_parser("build", help="generate the CUDA C, C header and manifest of a model")
    s.add_argument("model")
    s.add_argument("--batch", type=_positive_int, default=1, help="fixed batch size [1]")
    s.add_argument("-o", "--output", default="generated",
                   help="output folder; files go to OUTPUT/<model>/ [generated]")
    s.add_argument("--weights", help=".npz weights: also write <model>.weights.bin for the C API")
    s.add_argument("--precision", default="fp32", metavar="{" + ",".join(PRECISIONS) + "}",
                   help="fp32 (strict), or tf32 / fp16: GEMMs on tensor cores with fp32 "
                        "accumulation and storage, where they pay (pooled convs, small layers "
                        "and linear layers at batch <= 8 stay fp32; the listing shows which "
                        "kernels run on tensor cores) [fp32]")
    s.add_argument("--dump-ir", action="store_true", help="print the IR before and after each pass "
                                                          "(plan_memory: where each tensor lives)")
    s.add_argument("--check", action="store_true",
                   help="write nothing; fail if the files in OUTPUT are stale")
    s.set_defaults(func=_cmd_build)

    s = sub.add_parser("run", help="run a model on an input array")
    s.add_argument("model")
    s.add_argument("--weights", required=True, help=".npz weights file")
    s.add_argument("--input", required=True,
                   help=".npy float32 array N,C,H,W, or a PNG/JPEG image")
    s.add_argument("--output", required=True,
                   help=".npy (one output), .npz (every output, keyed by layer name), or .png: "
                        "the argmax classes in the VOC palette (+ the .npy or .npz)")
    s.add_argument("--backend", choices=["auto", "cuda", "numpy"], default="auto",
                   help="cuda where a GPU is present, else numpy [auto]")
    _image_options(s)
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("segment", help="segment images (files, folders, globs, .txt lists of "
                                       "paths) into VOC-palette PNGs at their original size")
    s.add_argument("model")
    s.add_argument("--weights", required=True, help=".npz weights file")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="an image, a folder (recursive), a glob, or a .txt file of paths")
    s.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="writes OUT_DIR/<path relative to its input>.png (failed.txt: the "
                        "images that could not be read)")
    s.add_argument("--batch", type=_positive_int, default=32, help="images per network call [32]")
    s.add_argument("--precision", choices=["fp32", "tf32", "fp16"], default="fp32",
                   help="the cuda backend's precision (see build) [fp32]")
    s.add_argument("--gpus", default="all",
                   help="all, a count N (the first N), or ids like 0,2 (one id: 3,); with "
                        "--ray, every GPU of the cluster [all]")
    s.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch",
                   help="stretch to the model's input, or keep the aspect ratio and pad "
                        "[stretch]")
    s.add_argument("--scores", action="store_true",
                   help="also write the class scores at the original size (.npy, float32)")
    s.add_argument("--overwrite", action="store_true",
                   help="redo images whose PNG exists (otherwise they are skipped: resume)")
    s.add_argument("--backend", choices=["auto", "cuda", "numpy"], default="auto",
                   help="cuda where a GPU is present, else numpy [auto]")
    s.add_argument("--workers", type=_positive_int, default=None,
                   help="decoders (processes or threads), and as many encode threads [the CPU count]")
    s.add_argument("--decoders", choices=["auto", "processes", "threads"], default="auto",
                   help="decode in worker processes or threads [auto: processes with a GPU and "
                        "4 CPUs or more]")
    s.add_argument("--resize-on", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where the decoded images are resized and normalised: the CPU workers, "
                        "or the GPU (Pillow's arithmetic, the same pixels; the CPUs only "
                        "decode); auto: the GPU where the decoders are processes feeding the "
                        "cuda backend, without --scores or --ray [auto]")
    s.add_argument("--jpeg-on", choices=["cpu", "gpu", "auto"], default="cpu",
                   help="where baseline JPEGs are decoded: the CPU workers (Pillow), or the "
                        "GPU's JPEG engines (nvJPEG; the CPUs only read the files; pixels "
                        "within a few levels of Pillow's; experimental: not yet run on a GPU); "
                        "auto: the GPU where it resizes and nvJPEG's hardware decoder starts "
                        "[cpu]")
    s.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="keep two batches in flight per GPU network, the copies overlapping the "
                        "kernels [on wherever a local GPU makes the masks: not with --scores "
                        "or --ray]")
    s.add_argument("--per-gpu", type=_positive_int, default=1, metavar="N",
                   help="networks per GPU, each on its own stream and thread (2 overlaps one's "
                        "copies with the other's kernels) [1]")
    s.add_argument("--ray", metavar="ADDRESS",
                   help="run on Ray Data: auto (the running cluster, else a local one) or a "
                        "cluster address (needs: pip install 'squeezegen[ray]')")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", metavar="FILE", help="also write the summary here, as JSON")
    _image_options(s)
    s.set_defaults(func=_cmd_segment)

    s = sub.add_parser("check", help="run the generated network kernel by kernel against the "
                                     "reference and point at the first kernel that diverges")
    s.add_argument("model")
    s.add_argument("--weights", required=True, help=".npz weights file")
    s.add_argument("--input", help=".npy or image input [random uniform(-1, 1)]")
    s.add_argument("--batch", type=_positive_int, default=1, help="batch of the random input [1]")
    s.add_argument("--seed", type=_non_negative_int, default=0)
    s.add_argument("--tolerance", type=_tolerance, default=1e-4,
                   help="max abs error relative to the tensor's max magnitude [1e-4]")
    _image_options(s)
    s.set_defaults(func=_cmd_check)

    s = sub.add_parser("bench", help="time the generated network (and PyTorch) on the GPU")
    s.add_argument("model")
    s.add_argument("--weights", help=".npz weights [He-initialised, seed 0]")
    s.add_argument("--batch", type=_batches, default=[1, 8, 32, 128], help="[1,8,32,128]")
    s.add_argument("--compare", default="eager,graph",
                   help="what to time beside: PyTorch eager, graph, compile (fp32), fp16 "
                        "(channels_last + graph), or torch (all of them that fit --precision); "
                        "numpy (the CPU reference); or none [eager,graph]")
    s.add_argument("--per-layer", action="store_true", help="time every kernel alone too")
    s.add_argument("--iters", type=_positive_int, default=50, help="timed runs per batch [50]")
    s.add_argument("--json", help="write the results (with GPU, driver, commit, date) here")
    s.add_argument("--no-tune", action="store_true",
                   help="use the heuristic's tiles, not the autotuner's")
    s.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (strict), or tensor-core GEMMs with tf32/fp16 inputs [fp32]")
    s.set_defaults(func=_cmd_bench)

    s = sub.add_parser("tune", help="time every candidate tile of every layer on the GPU and "
                                    "cache the fastest (bench and compile(tune=True) use it)")
    s.add_argument("model")
    s.add_argument("--batch", type=_batches, default=[1], help="batch sizes to tune for [1]")
    s.add_argument("--force", action="store_true", help="re-time layers already in the cache")
    s.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="tune the tiles of this precision [fp32]")
    s.set_defaults(func=_cmd_tune)

    s = sub.add_parser("import", help="convert an ONNX model into a model YAML and .npz weights "
                                      "(needs the onnx extra: pip install 'squeezegen[onnx]')")
    s.add_argument("model", help="the .onnx file")
    s.add_argument("-o", "--output", required=True,
                   help="the model YAML to write, e.g. models/NAME.yaml")
    s.add_argument("--weights-out", metavar="NPZ",
                   help="the .npz weights to write [the YAML path with .npz]")
    s.set_defaults(func=_cmd_import)

    s = sub.add_parser("init-weights", help="write reproducible He-initialised weights")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, help=".npz file to write")
    s.add_argument("--seed", type=_non_negative_int, default=0)
    s.set_defaults(func=_cmd_init_weights)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    debug = os.environ.get("SQUEEZEGEN_DEBUG") == "1"
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"squeezegen: warning: {msg}\n"
    try:
        return args.func(args)
    except SqueezegenError as exc:
        if debug:
            raise
        print(f"squeezegen: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        if debug:
            raise
        print("squeezegen: error: out of host memory: this run's arrays (the model's tensors "
              "at this batch, its weights or its input) do not fit in the RAM available",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # a second Ctrl-C while the process exits must not kill it mid-way (Python's own
        # handler is gone during its shutdown: the signal's default would end it, status -2);
        # only as the program itself (argv None), not for a caller's main([...])
        if argv is None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("squeezegen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                    # `squeezegen ... | head`
        sys.stderr.close()
        return 0
    except Exception as exc:        # a bug in squeezegen: still one line, with a way to see more
        if debug:
            raise
        print(f"squeezegen: internal error: {type(exc).__name__}: {exc} "
              "(set SQUEEZEGEN_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
