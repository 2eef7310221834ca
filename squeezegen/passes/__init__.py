"""Graph passes: fusion, in-place concat, memory planning."""
from .pipeline import PIPELINE, run_passes

__all__ = ["PIPELINE", "run_passes"]
