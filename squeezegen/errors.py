"""One error type for everything a user can get wrong.

A `SqueezegenError` carries where the problem is (file, YAML line, layer, field) and renders
as one line, `models/net.yaml:12: layer 'conv1', field 'kernel': must be a positive integer`,
which is what the CLI prints (without a traceback) before exiting non-zero.
"""
from __future__ import annotations


def printable(text) -> str:
    """`text` for one line of a terminal: a control character (a line break, a tab) or an
    undecodable byte of a file name is shown as its escape, `\\n`, `\\udcff`."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


class SqueezegenError(Exception):
    """A user-facing error: bad model, bad weights, bad input, bad option, failed build."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 layer: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.layer = layer
        self.field = field

    def where(self) -> str:
        place = ""
        if self.file:
            place = printable(self.file) + (f":{self.line}" if self.line else "")
        elif self.line:
            place = f"line {self.line}"
        parts = []
        if self.layer:
            parts.append(f"layer '{printable(self.layer)}'")
        if self.field:
            parts.append(f"field '{printable(self.field)}'")
        what = ", ".join(parts)
        return ": ".join(p for p in (place, what) if p)

    def __str__(self) -> str:
        where = self.where()
        text = printable(" ".join(self.message.split("\n")))   # names quoted in it are user text
        return f"{where}: {text}" if where else text

    def located(self, **where) -> "SqueezegenError":
        """The same error with missing location fields filled in (existing ones win)."""
        for key, value in where.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        return self


class ModelError(SqueezegenError):
    """The model file is invalid (YAML, schema, graph or shapes)."""


class WeightsError(SqueezegenError):
    """The weights file is unreadable or does not fit the model."""


class InputError(SqueezegenError):
    """An input array does not fit the model."""


class BuildError(SqueezegenError):
    """Code generation, output writing or compilation failed."""


class GPUError(SqueezegenError):
    """The GPU, its driver or PyCUDA failed or is missing (out of memory, launch error, no device)."""
