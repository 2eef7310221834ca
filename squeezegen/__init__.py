"""squeezegen: a graph compiler from YAML CNN descriptions to readable, specialised CUDA C.

    graph = squeezegen.load_model("models/squeezeseg.yaml")
    weights = squeezegen.load_weights("w.npz")
    y = squeezegen.reference(graph, weights)(x)       # the NumPy oracle
    with squeezegen.compile(graph, weights, batch=8) as net:
        y = net(x)                                     # the generated CUDA (PyCUDA)
    summary = squeezegen.segment(model, weights, ["photos/"], "masks/")   # many images
"""
from .errors import SqueezegenError
from .frontend import load_model, parse_model
from .reference import reference
from .weights import init_weights, load_weights, save_weights

__version__ = "0.1.0"


def compile(model, weights, batch: int = 1, use_graph: bool = True, tune: bool = False,
            precision: str = "fp32"):
    """Build, compile and load a model onto the GPU: `net(x)` runs it (needs PyCUDA). With
    `tune`, the autotuner's tiles for this GPU (tuned and cached on first use)."""
    from .runtime.network import compile as compile_network
    return compile_network(model, weights, batch=batch, use_graph=use_graph, tune=tune,
                           precision=precision)


def segment(model, weights, inputs, out_dir, **options):
    """Segment every image of `inputs` (images, folders, globs, .txt lists) into
    out_dir/<name>.png at each image's original size, on every GPU (or the NumPy reference);
    returns the SegmentSummary. The options are those of `squeezegen segment`: batch,
    precision, gpus, resize, mean, std, scores, overwrite, backend, workers, ray, progress
    (see `squeezegen.segmentation.segment`)."""
    from .segmentation import segment as run_segment
    return run_segment(model, weights, inputs, out_dir, **options)


__all__ = ["SqueezegenError", "compile", "segment", "load_model", "parse_model", "reference",
           "load_weights", "save_weights", "init_weights", "__version__"]
