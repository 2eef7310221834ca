"""squeezegen: a graph compiler from YAML CNN descriptions to readable, specialised CUDA C.

    graph = squeezegen.load_model("models/squeezeseg.yaml")
    weights = squeezegen.load_weights("w.npz")
    y = squeezegen.reference(graph, weights)(x)       # the NumPy oracle
    files = squeezegen.build(graph, batch=8).files     # the .cu, .h, manifest: no GPU needed
    squeezegen.build(graph, batch=8, write="generated")   # ... written to generated/<model>/
    with squeezegen.compile(graph, weights, batch=8) as net:
        y = net(x)                                     # the generated CUDA (PyCUDA)
    summary = squeezegen.segment(model, weights, ["photos/"], "masks/")   # many images
"""
__version__ = "0.1.0"                  # first: the modules below read it

from .build import build  # noqa: E402  (the function: it shadows the module squeezegen.build)
from .errors import SqueezegenError  # noqa: E402
from .frontend import load_model, parse_model  # noqa: E402
from .reference import reference  # noqa: E402
from .weights import init_weights, load_weights, save_weights  # noqa: E402


def compile(model, weights, batch: int = 1, use_graph: bool = True, tune: bool = False,
            precision: str = "fp32", device: int = 0):
    """Build, compile and load a model onto GPU `device`: `net(x)` runs it, from any thread
    (needs PyCUDA). With `tune`, the autotuner's tiles for this GPU (tuned and cached on first
    use)."""
    from .runtime.network import compile as compile_network
    return compile_network(model, weights, batch=batch, use_graph=use_graph, tune=tune,
                           precision=precision, device=device)


def segment(model, weights, inputs, out_dir, **options):
    """Segment every image of `inputs` (images, folders, globs, .txt lists) into
    out_dir/<name>.png at each image's original size, on every GPU (or the NumPy reference);
    returns the SegmentSummary. The options are those of `squeezegen segment`: batch,
    precision, gpus, resize, mean, std, scores, overwrite, backend, workers, ray, progress
    (see `squeezegen.segmentation.segment`)."""
    from .segmentation import segment as run_segment
    return run_segment(model, weights, inputs, out_dir, **options)


__all__ = ["SqueezegenError", "build", "compile", "segment", "load_model", "parse_model",
           "reference", "load_weights", "save_weights", "init_weights", "__version__"]
