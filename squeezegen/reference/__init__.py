"""The NumPy reference executor: the oracle of every test."""
from .executor import ReferenceExecutor, check_input, reference

__all__ = ["ReferenceExecutor", "check_input", "reference"]
