"""What user-controlled text may reach generated C, and in what form.

Two gates, used by every template through the Jinja environment (`emit.environment`):
- `comment(text)`: any free text (file names, paths, layer names, tensor descriptions) made safe
  inside a `//` or `/* */` comment. Nothing in it can end the comment or the line: characters that
  are not printable (every line break: \\n, \\r, \\f, \\v, U+0085, U+2028, U+2029; every other
  control or format character, bidirectional overrides included) are written as visible escapes
  (`\\n`, `\\u2028`), `*/` and `/*` are split, a trigraph `??/` is broken, and the text never ends
  in a backslash (which would splice the next line into the comment).
- `identifier(name)`: a name that becomes a C identifier, a macro or a file name (the model, its
  nodes and kernels) must be a plain identifier; anything else is a BuildError, so a graph built
  or edited from Python cannot carry `../`, spaces or C into symbols or file names.
"""
from __future__ import annotations

import re

from ..errors import BuildError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f", "\v": "\\v"}


def _visible(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def comment(text) -> str:
    """`text` as one line that is safe anywhere inside a C comment."""
    text = str(text)
    out = "".join(ch if ch.isprintable() else _visible(ch) for ch in text)
    out = out.replace("*/", "* /").replace("/*", "/ *")
    out = re.sub(r"\?(?=\?)", "? ", out)          # no two ?s in a row: no trigraph (??/)
    if out.rstrip().endswith("\\"):
        out = out.rstrip()[:-1] + "\\x5c"
    return out


def identifier(name) -> str:
    """`name` itself if it is a plain C identifier; otherwise a BuildError naming it."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise BuildError(f"{name!r} cannot be emitted: generated code only takes "
                         "names made of letters, digits and _ (not starting with a digit)")
    return name
