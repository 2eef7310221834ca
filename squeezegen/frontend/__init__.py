"""YAML model files -> IR graphs."""
from .parse import INPUT_NAME, load_model, parse_model

__all__ = ["INPUT_NAME", "load_model", "parse_model"]
