"""Read a YAML document safely, keeping the line of every mapping key and list item.

PyYAML composes the document into a node tree (no Python objects are constructed there); we walk
that tree ourselves, so that
- only plain YAML types exist (maps, lists, str, int, float, bool, null); any other tag, such as
  `!!python/object`, is refused;
- anchors and aliases are refused (no alias bombs, no shared structure);
- a key given twice is an error naming both lines;
- every value keeps its line, for error messages.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from ..errors import ModelError

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
MAX_DOCUMENT_BYTES = 4 << 20
MAX_DEPTH = 32
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")          # what an int may look like here
_PLAIN_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"
                          r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


class LocatedMap(dict):
    """A dict from YAML with `line` (of the mapping) and `key_lines` (line of each key)."""
    line: int
    key_lines: dict


class LocatedList(list):
    """A list from YAML with `line` (of the list) and `item_lines` (line of each item)."""
    line: int
    item_lines: list


@dataclass(frozen=True)
class _Ctx:
    file: str


def _line(node) -> int:
    return node.start_mark.line + 1


def _convert(node, ctx: _Ctx, seen: set, field: str | None = None):
    if id(node) in seen:
        raise ModelError("YAML anchors and aliases are not supported in model files",
                         file=ctx.file, line=_line(node))
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            raise ModelError(f"YAML tag '{node.tag}' is not allowed (plain YAML only)",
                             file=ctx.file, line=_line(node))
        out = LocatedMap()
        out.line, out.key_lines = _line(node), {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ModelError("YAML merge keys ('<<') are not supported in model files",
                                 file=ctx.file, line=_line(key_node))
            key = _convert(key_node, ctx, seen)
            if not isinstance(key, str):
                raise ModelError(f"mapping keys must be strings, got {key!r}",
                                 file=ctx.file, line=_line(key_node))
            if key in out:
                raise ModelError(f"duplicate key '{key}' (first given on line {out.key_lines[key]})",
                                 file=ctx.file, line=_line(key_node), field=key)
            out.key_lines[key] = _line(key_node)
            out[key] = _convert(value_node, ctx, seen, key)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            raise ModelError(f"YAML tag '{node.tag}' is not allowed (plain YAML only)",
                             file=ctx.file, line=_line(node))
        out = LocatedList()
        out.line, out.item_lines = _line(node), []
        for item in node.value:
            out.item_lines.append(_line(item))
            out.append(_convert(item, ctx, seen, field))
        return out
    if node.tag not in _SCALAR_TAGS:
        raise ModelError(f"YAML tag '{node.tag}' is not allowed (plain YAML only)",
                         file=ctx.file, line=_line(node), field=field)
    _check_number_form(node, ctx, field)
    return yaml.constructor.SafeConstructor().construct_object(node)


def _check_number_form(node, ctx: _Ctx, field: str | None) -> None:
    """Refuse YAML 1.1's other ways of writing numbers: 010 (octal 8), 0x10, 0b10, 1_000 and
    1:30 (base 60, 90) read as numbers nobody meant; only plain decimals are numbers here."""
    if node.tag == _INT_TAG and not node.style and not _PLAIN_INT.fullmatch(node.value):
        raise ModelError(f"'{node.value}' is not a plain decimal integer (YAML 1.1 would read it "
                         f"as {yaml.constructor.SafeConstructor().construct_object(node)}); "
                         f"write the number in decimal digits", file=ctx.file,
                         line=_line(node), field=field)
    if node.tag == _FLOAT_TAG and not node.style and not _PLAIN_FLOAT.fullmatch(node.value):
        raise ModelError(f"'{node.value}' is not a plain decimal number; write it as digits "
                         f"with an optional '.' and exponent", file=ctx.file, line=_line(node),
                         field=field)


def _check_depth(text: str, file: str) -> None:
    """Refuse absurd nesting before composing (which recurses once per level)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ModelError(f"YAML is nested more than {MAX_DEPTH} levels deep", file=file,
                                 line=event.start_mark.line + 1)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load_yaml(text: str, file: str):
    """Parse one YAML document into LocatedMap/LocatedList/scalars; ModelError on any problem."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ModelError(f"model file is {len(text)} bytes, more than the {MAX_DOCUMENT_BYTES} allowed",
                         file=file)
    try:
        _check_depth(text, file)
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except RecursionError:
        raise ModelError("YAML is nested too deeply", file=file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ModelError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise ModelError(f"invalid YAML: {exc}", file=file) from None
    if len(documents) != 1 or documents[0] is None:
        raise ModelError(f"expected exactly one YAML document, found {len(documents)}", file=file)
    if not isinstance(documents[0], yaml.MappingNode):
        raise ModelError("a model file must be a YAML mapping with name, input, layers and output",
                         file=file, line=_line(documents[0]))
    try:
        return _convert(documents[0], _Ctx(file), set())
    except RecursionError:
        raise ModelError("YAML is nested too deeply", file=file) from None
    except (ValueError, OverflowError, yaml.YAMLError) as exc:
        raise ModelError(f"invalid YAML value: {exc}", file=file) from None
