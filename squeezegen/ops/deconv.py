"""Transposed convolution (PyTorch's ConvTranspose2d), decomposed into stride phases; grouped
(and depthwise) ones gather per output element (deconv_direct)."""
from __future__ import annotations

from math import prod

import numpy as np

from ..codegen.tiles import (ConvTile, DeconvMmaTile, deconv_mma_shared_bytes, deconv_row,
                             gemm_tile_fields, phase_grid, shared_bytes)
from ..ir.graph import TensorType
from .base import (Field, OpInfo, ShapeError, deconv_out_size, he_init, need_image,
                   with_bias)

FIELDS = {"out": Field("pos_int", required=True), "kernel": Field("pos_pair", required=True),
          "stride": Field("pos_pair", default=1), "pad": Field("nonneg_pair", default=0),
          "output_padding": Field("nonneg_pair", default=0), "groups": Field("pos_int", default=1),
          "bias": Field("bool", default=True), "input": Field("ref")}


def extra_rows(attrs) -> tuple[int, int]:
    """output_padding: rows and columns added at the bottom and right of the output (an IR
    attribute only where it is not 0)."""
    return attrs.get("output_padding", (0, 0))


def groups(attrs) -> int:
    """Channel groups (an IR attribute only where it is not 1): group g's C / G input channels
    make its out / G output channels."""
    return attrs.get("groups", 1)


def deconv_from_yaml(values, ins, given):
    attrs = {k: v for k, v in values.items() if k not in ("input", "output_padding", "groups")}
    if values["output_padding"] != (0, 0):
        attrs["output_padding"] = values["output_padding"]
    if values["groups"] != 1:
        attrs["groups"] = values["groups"]
    return attrs


def shape(attrs, ins):
    c, h, w = need_image(ins[0], "deconv")
    if c % groups(attrs) or attrs["out"] % groups(attrs):
        raise ShapeError(f"groups {groups(attrs)} must divide the {c} input and {attrs['out']} "
                         "output channels", field="groups")
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    (oph, opw) = extra_rows(attrs)
    if oph >= sh or opw >= sw:
        raise ShapeError(f"output_padding {oph}x{opw} must be smaller than the stride {sh}x{sw}",
                         field="output_padding")
    ho, wo = deconv_out_size(h, kh, sh, ph) + oph, deconv_out_size(w, kw, sw, pw) + opw
    if ho < 1 or wo < 1:
        raise ShapeError(f"pad {ph}x{pw} crops the whole {h}x{w} transposed-convolution output "
                         f"(output would be {ho}x{wo})", field="pad")
    return TensorType((attrs["out"], ho, wo))


def params(attrs, ins):
    return with_bias({"weight": (ins[0].channels, attrs["out"] // groups(attrs))
                      + tuple(attrs["kernel"])}, attrs)


def deconv(attrs, inputs, params):
    """matmul + col2im, per group."""
    g = groups(attrs)
    if g > 1:
        x, w = inputs[0], params["weight"]              # (in, out / G, kh, kw)
        cg = x.shape[1] // g
        parts = [deconv(dict(attrs, groups=1), [x[:, i * cg:(i + 1) * cg]],
                        {"weight": w[i * cg:(i + 1) * cg]}) for i in range(g)]
        y = np.concatenate(parts, axis=1)
        if "bias" in params:
            y = y + params["bias"].reshape(1, -1, 1, 1)
        return np.ascontiguousarray(y, dtype=np.float32)
    x = inputs[0]
    w = params["weight"]                                    # (in, out, kh, kw)
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    (oph, opw) = extra_rows(attrs)
    out_ch = w.shape[1]
    cols = np.matmul(w.reshape(c, -1).T, x.reshape(n, c, h * wd))
    cols = cols.reshape(n, out_ch, kh, kw, h, wd)
    # the full scatter, plus the output_padding rows and columns (which only the taps reach)
    full = np.zeros((n, out_ch, (h - 1) * sh + kh + oph, (wd - 1) * sw + kw + opw), np.float32)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i: i + (h - 1) * sh + 1: sh, j: j + (wd - 1) * sw + 1: sw] += cols[:, :, i, j]
    ho, wo = (h - 1) * sh - 2 * ph + kh + oph, (wd - 1) * sw - 2 * pw + kw + opw
    y = full[:, :, ph: ph + ho, pw: pw + wo]
    if "bias" in params:
        y = y + params["bias"].reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=np.float32)


def torch_deconv(torch, attrs, args, params):
    return torch.nn.functional.conv_transpose2d(args[0], params["weight"], params.get("bias"),
                                                attrs["stride"], attrs["pad"], extra_rows(attrs),
                                                groups(attrs))


def lower_direct(ctx, node):
    """deconv_direct.cu.j2, for grouped and depthwise transposed convolutions: one thread per
    output element, gathering the taps that reach it from its group's input channels."""
    (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
    consts = dict(ctx.consts(node), KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw,
                  G=groups(node.attrs))
    return ctx.kernel(node, "deconv_direct.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      consts, {"bias": node.attrs["bias"]})


def lower(ctx, node):
    """deconv_tc (a GEMM tile on tensor cores), deconv_mma (fp16 rectangles of a stride phase)
    or deconv (fp32), by the scheduled tile; a grouped one runs deconv_direct."""
    if groups(node.attrs) > 1:
        return lower_direct(ctx, node)
    (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
    consts = dict(ctx.consts(node), KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw)
    tile = ctx.tile(node)
    extra = {"bias": node.attrs["bias"]}
    phase_pixels = ctx.batch * -(-node.type.spatial[0] // sh) * -(-node.type.spatial[1] // sw)
    if isinstance(tile, ConvTile):
        consts.update(BM=tile.bm, BN=tile.bn, BK=tile.bk, TM=tile.tm, TN=tile.tn,
                      SMEM_BYTES=shared_bytes(tile))
        grid = (-(-phase_pixels // tile.bm) * sh * sw, -(-node.type.channels // tile.bn), 1)
        return ctx.kernel(node, "deconv_tc.cu.j2", grid, consts,
                          {"mma": tile.mma, **extra, "tile": gemm_tile_fields(tile)})
    if isinstance(tile, DeconvMmaTile):
        ci = ctx.graph[node.inputs[0]].type.channels
        consts.update(R=tile.r, C=tile.c, BN=tile.bn, SMEM_BYTES=deconv_mma_shared_bytes(
            tile, ci, (-(-kh // sh), -(-kw // sw))))
        rows, cols = phase_grid(node)
        tiles = -(-rows // tile.r) * -(-cols // tile.c)     # rectangles of a phase's pixels
        grid = (ctx.batch * tiles * sh * sw, -(-node.type.channels // tile.bn), 1)
        tile_fields = {"r": tile.r, "c": tile.c, "bn": tile.bn, "mma": "fp16"}
        return ctx.kernel(node, "deconv_mma.cu.j2", grid, consts,
                          {"mma": "fp16", **extra, "tile": tile_fields})
    taps = -(-kh // sh) * -(-kw // sw)
    row = deconv_row(tile.cob, taps)
    consts.update(COB=tile.cob, COBP=row, CIB=tile.cib, PX=tile.px,
                  SMEM_BYTES=4 * tile.cib * taps * row)
    grid = (ctx.grid(-(-phase_pixels // tile.px))[0] * sh * sw, node.type.channels // tile.cob, 1)
    return ctx.kernel(node, "deconv.cu.j2", grid, consts,
                      {**extra, "tile": {"cob": tile.cob, "cib": tile.cib, "px": tile.px}})


def init(attrs, name, shape, rng):
    """He's init with the fan-in of a transposed convolution: each output sums
    in_ch / groups * kh * kw / (sh * sw) products."""
    if name != "weight":
        return he_init(attrs, name, shape, rng)
    (sh, sw) = attrs["stride"]
    return he_init(attrs, name, shape, rng,
                   max(1.0, shape[0] // groups(attrs) * shape[2] * shape[3] / (sh * sw)))


def deconv_tiles(node, batch):
    return None if groups(node.attrs) > 1 else "deconv"


OPS = [
    OpInfo("deconv", 1, FIELDS, shape, deconv, lower, torch_deconv, params=params,
           flops=lambda a, i, o: 2 * i[0].numel * a["out"] // groups(a) * prod(a["kernel"]),
           epilogues=("activation", "add"), tile_kind=deconv_tiles, init=init,
           scale_axis=1, from_yaml=deconv_from_yaml),
]
