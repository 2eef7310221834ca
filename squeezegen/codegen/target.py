"""The GPU a build is for: what the scheduler's heuristics and the generated file depend on.

A build for a GPU it does not know uses `H200`, the GPU squeezegen is tuned on; the runtime
fills a `Target` from the GPU it runs on (`runtime.device.device_target`), so that the number of
SMs the heuristics fill and the architecture nvcc compiles for are that GPU's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BuildError


@dataclass(frozen=True)
class Target:
    name: str                    # the GPU's name, as the driver reports it
    arch: str                    # nvcc's name of its architecture: sm_90
    sms: int                     # streaming multiprocessors: the waves the heuristics fill
    smem_per_block: int = 48 * 1024   # static shared memory a block may use (CUDA's limit)

    def __post_init__(self):
        if not re.fullmatch(r"sm_\d{2,3}a?", self.arch):
            raise BuildError(f"bad GPU architecture '{self.arch}' (expected like sm_90)",
                             field="target")
        if not isinstance(self.sms, int) or self.sms < 1:
            raise BuildError(f"a target needs at least one SM, got {self.sms!r}", field="target")


H200 = Target("NVIDIA H200", "sm_90", 132)
