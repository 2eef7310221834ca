"""The IR: frozen tensors, nodes and graphs. Passes never mutate; they build new graphs.

A `Graph` is a list of `Node`s in topological order (the order of the YAML, which must only refer
backwards). Each node produces one tensor named like the node. Shapes are per image (C, H, W) or
(K,) for vectors; the batch is chosen at build time and is not part of the IR.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Callable, Iterator


class Attrs(Mapping):
    """An immutable, hashable, ordered mapping of op attributes (kernel, stride, ...). Like a dict,
    two Attrs with the same items are equal in any order, and so are their hashes."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping | None = None, **kwargs):
        merged = dict(items or {})
        merged.update(kwargs)
        object.__setattr__(self, "_items", tuple(merged.items()))

    def __getitem__(self, key):
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items, key=lambda item: item[0])))

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}={v}" for k, v in self._items) + "}"

    def replace(self, **changes) -> "Attrs":
        return Attrs(dict(self), **changes)


@dataclass(frozen=True)
class TensorType:
    """The per-image shape of a tensor: (C, H, W) or (K,). Always float32 in the IR."""
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def spatial(self) -> tuple[int, int]:
        return (self.shape[1], self.shape[2]) if len(self.shape) == 3 else (1, 1)

    def __str__(self) -> str:
        return "x".join(str(d) for d in self.shape)


@dataclass(frozen=True)
class EpilogueStep:
    """One step applied to a kernel's output before it is stored: an activation, `add` of a
    tensor, or a per-channel step with weights of its own (a batchnorm, affine or prelu that
    could not be folded into the weights before it)."""
    kind: str                      # "add", or an op: "relu", "hardswish", "batchnorm", ...
    operand: str | None = None     # the tensor added (one of the node's inputs) for "add"
    attrs: Attrs = Attrs()         # the op's attributes (leaky_relu's negative_slope, eps)
    param_prefix: str | None = None  # a per-channel step's weights: `<param_prefix>.weight`, ...

    def __str__(self) -> str:
        if self.kind == "add":
            return f"add({self.operand})"
        weights = f"({self.param_prefix})" if self.param_prefix else ""
        return self.kind + weights + (f"{self.attrs}" if self.attrs else "")

    def replace(self, **changes) -> "EpilogueStep":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class OutView:
    """The node writes its output into channels [offset, offset + C) of tensor `into`."""
    into: str
    channel_offset: int


@dataclass(frozen=True)
class Constant:
    """A weight a pass derives from others (the constants store): `name` = fn(*inputs), computed
    in float64 and stored as float32 when the weights meet the graph (`ir.ops.resolve_weights`),
    so the reference, the packer and the blob all see the result. `fn` is a module-level
    function or a functools.partial of one (picklable)."""
    name: str                                       # the weight made: `conv1+bn1.weight`
    shape: tuple[int, ...]
    inputs: tuple[tuple[str, tuple[int, ...]], ...]  # (weight name, shape) it is made from
    fn: Callable
    note: str                                       # what it is: "conv1.weight with bn1 folded"


@dataclass(frozen=True)
class Node:
    name: str                          # unique, a validated C identifier
    op: str                            # a key of ir.ops.OPS
    inputs: tuple[str, ...]            # the op's operands (epilogue operands are in `epilogue`)
    attrs: Attrs
    type: TensorType
    layer: str                         # the YAML layer this node implements (part of)
    line: int | None = None            # the YAML line of that layer
    param_prefix: str | None = None    # weights are `<param_prefix>.weight` / `.bias`
    epilogue: tuple[EpilogueStep, ...] = ()
    out_view: OutView | None = None    # set by the fire-concat pass
    fused: tuple[str, ...] = ()        # names of nodes folded into this one by passes

    def replace(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)

    @property
    def reads(self) -> tuple[str, ...]:
        """Every tensor the node reads: its operands, then its epilogue's operands."""
        return self.inputs + tuple(s.operand for s in self.epilogue if s.operand is not None)


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]           # the output tensors (node names), in order
    source: str | None = None          # the model file
    source_hash: str | None = None     # sha256 of the model file's content
    passes: tuple[str, ...] = ()       # the passes applied so far, in order
    layer_ops: tuple[tuple[str, str], ...] = ()   # (YAML layer, YAML op), in file order
    output_names: tuple[str, ...] = ()  # the YAML layer name of each output
    constants: tuple[Constant, ...] = ()  # weights passes derived from the user's (in order)
    _index: dict = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {n.name: n for n in self.nodes})

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: str) -> bool:
        return name in self._index

    @property
    def input(self) -> Node:
        return self.nodes[0]

    def replace(self, **changes) -> "Graph":
        return dataclasses.replace(self, **changes)

    @property
    def output_labels(self) -> tuple[str, ...]:
        """What to call each output: its YAML layer name (the tensor name if unknown)."""
        return self.output_names or self.outputs

    def consumers(self) -> dict[str, list[str]]:
        """For each tensor, the nodes that read it (in order); graph outputs count as readers."""
        users: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.reads:
                if n.name not in users[i]:
                    users[i].append(n.name)
        return users
