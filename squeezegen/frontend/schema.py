"""The model language: which fields each YAML op takes, their types and defaults.

docs/model-language.md documents the same table for users; keep the two in step.
Values are checked strictly: `true` is not an int, `"3"` is not an int, 3.0 is not an int.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_DIM = 1 << 20          # no single channel count / spatial size / kernel may exceed this

# C, C++ and CUDA words that layer names may not take (they become C identifiers).
C_RESERVED = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
co_return co_yield decltype default delete do double dynamic_cast else enum explicit export extern
false float for friend goto if inline int long mutable namespace new noexcept not not_eq nullptr
operator or or_eq private protected public register reinterpret_cast requires restrict return short
signed sizeof static static_assert static_cast struct switch template this thread_local throw true
try typedef typeid typename union unsigned using virtual void volatile wchar_t while xor xor_eq
_Bool _Complex _Imaginary NULL main
__global__ __device__ __host__ __shared__ __constant__ __managed__ __restrict__ __forceinline__
__noinline__ __launch_bounds__ threadIdx blockIdx blockDim gridDim warpSize dim3 cudaStream_t
cudaError_t float2 float4 int2 int4 half size_t uint32_t uint64_t int32_t int64_t
""".split())
RESERVED_PREFIXES = ("sg_", "SG_", "squeezegen_", "cuda", "__")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_NAME = 63


def identifier_problem(name: Any) -> str | None:
    """Why `name` cannot be a layer/model name (it becomes a C identifier), or None."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__} {name!r}"
    if not _IDENT.match(name):
        return f"'{name}' is not a valid identifier (letters, digits and _, not starting with a digit)"
    if len(name) > MAX_NAME:
        return f"'{name}' is longer than {MAX_NAME} characters"
    if name in C_RESERVED:
        return f"'{name}' is a reserved word in C/C++/CUDA"
    if name.startswith(RESERVED_PREFIXES):
        return f"'{name}' starts with a prefix reserved for generated code ({', '.join(RESERVED_PREFIXES)})"
    return None


@dataclass(frozen=True)
class Field:
    kind: str                  # pos_int | pos_pair | nonneg_pair | bool | ref | refs
    required: bool = False
    default: Any = None


def _ops() -> dict[str, dict[str, Field]]:
    window = {"kernel": Field("pos_pair", required=True), "stride": Field("pos_pair"),
              "pad": Field("nonneg_pair", default=0), "ceil_mode": Field("bool", default=True),
              "input": Field("ref")}
    return {
        "conv": {"out": Field("pos_int", required=True), "kernel": Field("pos_pair", required=True),
                 "stride": Field("pos_pair", default=1), "pad": Field("nonneg_pair", default=0),
                 "relu": Field("bool", default=False), "bias": Field("bool", default=True),
                 "input": Field("ref")},
        "deconv": {"out": Field("pos_int", required=True),
                   "kernel": Field("pos_pair", required=True),
                   "stride": Field("pos_pair", default=1), "pad": Field("nonneg_pair", default=0),
                   "bias": Field("bool", default=True), "input": Field("ref")},
        "maxpool": dict(window),
        "avgpool": dict(window, kernel=Field("pos_pair"), **{"global": Field("bool", default=False)}),
        "fire": {"squeeze": Field("pos_int", required=True),
                 "expand1x1": Field("pos_int", required=True),
                 "expand3x3": Field("pos_int", required=True), "input": Field("ref")},
        "add": {"inputs": Field("refs", required=True), "relu": Field("bool", default=False)},
        "concat": {"inputs": Field("refs", required=True)},
        "relu": {"input": Field("ref")},
        "linear": {"out": Field("pos_int", required=True), "relu": Field("bool", default=False),
                   "bias": Field("bool", default=True), "input": Field("ref")},
        "softmax": {"input": Field("ref")},
    }


OP_FIELDS: dict[str, dict[str, Field]] = _ops()
COMMON_FIELDS = ("name", "op")
TOP_LEVEL_FIELDS = {"name": True, "input": True, "layers": True, "output": True,
                    "description": False}


def describe(kind: str) -> str:
    return {"pos_int": "a positive integer",
            "pos_pair": "a positive integer or a list [h, w] of two",
            "nonneg_pair": "a non-negative integer or a list [h, w] of two",
            "bool": "true or false",
            "ref": "the name of an earlier layer (or 'input')",
            "refs": "a list of at least two earlier layer names"}[kind]


def check_value(kind: str, value: Any) -> Any:
    """The value normalised (pairs as tuples); ValueError with the expectation when it is wrong."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def bad():
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        return ValueError(f"must be {describe(kind)}, got {shown}"
                          + (" (a string)" if isinstance(value, str) and kind != "ref" else ""))

    if kind in ("pos_int", "pos_pair", "nonneg_pair"):
        low = 0 if kind == "nonneg_pair" else 1
        items = value if (kind != "pos_int" and isinstance(value, list)) else [value]
        if kind != "pos_int" and isinstance(value, list) and len(value) != 2:
            raise bad()
        for v in items:
            if not is_int(v) or v < low:
                raise bad()
            if v > MAX_DIM:
                raise ValueError(f"{v} is absurdly large (the limit is {MAX_DIM})")
        if kind == "pos_int":
            return value
        return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "ref":
        if not isinstance(value, str):
            raise bad()
        return value
    if kind == "refs":
        if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
            raise bad()
        return tuple(value)
    raise AssertionError(kind)
