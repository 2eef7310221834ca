"""The tiles kernels are cut into, and the layout arithmetic that the scheduler, the lowering
and the templates must agree on (computed here once and handed to the templates as constants).

Nothing here decides which tile a layer gets: that is `schedule.py`, for a `Target`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Node

BLOCK = 256                      # threads per block, every kernel
GEMV_MAX_BATCH = 8               # linear layers up to this batch use a matrix-vector kernel


@dataclass(frozen=True)
class ConvTile:
    """Implicit-GEMM tile: BM pixels x BN channels per block, BK-deep K slices; a block is
    always 256 threads.
    narrow (conv_gemm.cu.j2): a thread owns TM x TN outputs, BM = 32 * TM, BN = 8 * TN, any TN
    (fits few channels), split-K;
    wide (conv_gemm_wide.cu.j2): a thread owns TM x TN outputs, BM = 16 * TM, BN = 16 * TN, TM
    and TN multiples of 4, float4 shared-memory reads and double buffering (for large layers);
    tensor cores (conv_gemm_tc.cu.j2, deconv_tc.cu.j2; `mma` is the precision): a warp owns
    TM x TN 16x16 fragments, 4 x 2 warps, BM = 64 * TM, BN = 32 * TN, no split-K."""
    tm: int
    tn: int
    bk: int = 16
    splitk: int = 1
    wide: bool = False
    mma: str = ""                 # "tf32" | "fp16": tensor cores (conv_gemm_tc.cu.j2), where
                                  # tm x tn are 16x16 fragments per warp, 4 x 2 warps per block

    @property
    def bm(self) -> int:
        return 64 * self.tm if self.mma else (16 if self.wide else 32) * self.tm

    @property
    def bn(self) -> int:
        return 32 * self.tn if self.mma else (16 if self.wide else 8) * self.tn

    def blocks(self, pixels: int, channels: int) -> int:
        return -(-pixels // self.bm) * -(-channels // self.bn)


@dataclass(frozen=True)
class DeconvTile:
    """Phase-decomposed transposed convolution: a thread computes COB output channels of PX
    pixels; a block keeps the taps of CIB input channels x COB output channels in shared memory."""
    cob: int
    cib: int
    px: int = 1

    def blocks(self, phase_pixels: int, channels: int, phases: int) -> int:
        return -(-phase_pixels // (BLOCK * self.px)) * (channels // self.cob) * phases



DECONV_SMEM_FLOATS = 10240       # 40 KiB of weights per deconv block


DECONV_MAX_ACC = 96              # accumulators per deconv thread (PX x the padded COB row) that
                                 # the tuner tries; the heuristic stays at 64 (about 128 registers)


def deconv_row(cob: int, taps: int) -> int:
    """Floats per (input channel, tap) row of the deconv's shared weights: COB rounded up to 4,
    so that a thread reads 4 channels' weights at once (float4), where shared memory holds it."""
    padded = -(-cob // 4) * 4
    return padded if taps * padded <= DECONV_SMEM_FLOATS else cob



@dataclass(frozen=True)
class DeconvMmaTile:
    """fp16 tensor-core transposed convolution (deconv_mma.cu.j2): a block of 8 warps computes
    an R x C rectangle of one stride phase's pixels (R * C a multiple of 128, so that each warp
    owns whole 16-pixel fragments) for BN output channels (a multiple of 8), with the input patch
    those pixels read and the phase's weights staged in shared memory as fp16."""
    r: int
    c: int
    bn: int

    def blocks(self, batch: int, phase_grid: tuple[int, int], channels: int, phases: int) -> int:
        rows, cols = phase_grid
        return batch * -(-rows // self.r) * -(-cols // self.c) * phases * -(-channels // self.bn)




# this many columns wide
DECONV_MMA_PIXELS = (128, 256, 512)
DECONV_MMA_COLS = (8, 16, 32, 64, 128)


def deconv_mma_shared_bytes(tile: DeconvMmaTile, ci: int, taps: tuple[int, int]) -> int:
    """Static shared memory of deconv_mma: the fp16 input patch and the phase's weights, both
    with rows of LDK halves (KC input channels padded to an odd number of 16-byte units)."""
    kc = 32 if ci >= 32 else -(-ci // 8) * 8
    ldk = kc if (kc // 8) % 2 else kc + 8
    th, tw = taps
    return 2 * ldk * ((tile.r + th - 1) * (tile.c + tw - 1) + th * tw * tile.bn)


def phase_grid(node: Node) -> tuple[int, int]:
    """Rows and columns of a transposed convolution's largest stride phase."""
    (sh, sw) = node.attrs["stride"]
    return -(-node.type.spatial[0] // sh), -(-node.type.spatial[1] // sw)



Tile = ConvTile | DeconvTile | DeconvMmaTile


def gemm_tile_fields(tile: ConvTile) -> dict:
    """A GEMM tile as the manifest and the kernel comment show it."""
    return {"bm": tile.bm, "bn": tile.bn, "bk": tile.bk, "tm": tile.tm, "tn": tile.tn,
            "splitk": tile.splitk, **({"mma": tile.mma} if tile.mma else {})}


def shared_bytes(tile: ConvTile) -> int:
    """Static shared memory of a GEMM tile (the wide and tensor-core ones double-buffer; the
    tensor-core one reuses its buffers for the C tile)."""
    if tile.mma:
        elem = 2 if tile.mma == "fp16" else 4          # rows padded by 16 bytes
        pad = 16 // elem
        return max(2 * tile.bk * (tile.bm + tile.bn + 2 * pad) * elem, tile.bn * (tile.bm + 4) * 4)
    return (2 if tile.wide else 1) * tile.bk * (tile.bm + tile.bn) * 4
