"""squeezegen: a graph compiler from YAML CNN descriptions to readable, specialised CUDA C.

    graph = squeezegen.load_model("models/squeezeseg.yaml")
    weights = squeezegen.load_weights("w.npz")
    y = squeezegen.reference(graph, weights)(x)       # the NumPy oracle
"""
from .errors import SqueezegenError
from .frontend import load_model, parse_model
from .reference import reference
from .weights import init_weights, load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["SqueezegenError", "load_model", "parse_model", "reference", "load_weights",
           "save_weights", "init_weights", "__version__"]
