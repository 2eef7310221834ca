"""The model language: which fields each YAML layer takes (from the op registry), and which
names layers may have.

docs/model-language.md documents the same table for users; keep the two in step.
Values are checked strictly: `true` is not an int, `"3"` is not an int, 3.0 is not an int.
"""
from __future__ import annotations

import re
from typing import Any

from ..ir.ops import OPS
from ..ops.base import MAX_DIM, Field, check_value, describe  # noqa: F401 (the language's types)

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


# The fields of every op are declared with the op (its `OpInfo.fields`, squeezegen/ops/); `fire`
# is the one layer of the language that is not an op: parse.py expands it into convolutions,
# their ReLUs and a concat.
FIRE_FIELDS = {"squeeze": Field("pos_int", required=True),
               "expand1x1": Field("pos_int", required=True),
               "expand3x3": Field("pos_int", required=True), "input": Field("ref")}

# Other names of an op with some fields set: `globalavgpool` is `avgpool` with `global: true`.
ALIASES: dict[str, tuple[str, dict]] = {"globalavgpool": ("avgpool", {"global": True}),
                                        "globalmaxpool": ("maxpool", {"global": True})}

OP_FIELDS: dict[str, dict[str, Field]] = {
    **{name: info.fields for name, info in OPS.items() if info.fields is not None},
    "fire": FIRE_FIELDS, **{alias: {"input": Field("ref")} for alias in ALIASES}}
COMMON_FIELDS = ("name", "op")
TOP_LEVEL_FIELDS = {"name": True, "input": True, "layers": True, "output": True,
                    "description": False}
