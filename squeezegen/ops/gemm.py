"""Convolution and linear layers: implicit GEMMs (PyTorch's Conv2d, and Linear on the input
flattened in C,H,W order). Their kernels take fused epilogues (ReLU, a skip add) and, for a conv,
a fused max pool; their weights are packed K-major so that a tile reads consecutive outputs."""
from __future__ import annotations

from math import prod

import numpy as np

from ..codegen.tiles import GEMV_MAX_BATCH, ConvTile, gemm_tile_fields
from ..ir.graph import TensorType
from .arrays import CHUNK_ELEMENTS, pad, windows
from .base import (Field, OpInfo, conv_out_size, pool_window, window_shape, with_bias)
from .pool import maxpool

CONV_FIELDS = {"out": Field("pos_int", required=True), "kernel": Field("pos_pair", required=True),
               "stride": Field("pos_pair", default=1), "pad": Field("nonneg_pair", default=0),
               "relu": Field("bool", default=False), "bias": Field("bool", default=True),
               "input": Field("ref")}
LINEAR_FIELDS = {"out": Field("pos_int", required=True), "relu": Field("bool", default=False),
                 "bias": Field("bool", default=True), "input": Field("ref")}


# ---------------------------------------------------------------- conv
def conv_shape(attrs, ins):
    ho, wo, _ = window_shape(attrs, ins[0], "conv", conv_out_size)
    if "pool" in attrs:              # a max pool fused by the fuse_pool pass (whole windows)
        ph, pw = attrs["pool"]
        ho, wo = ho // ph, wo // pw
    return TensorType((attrs["out"], ho, wo))


def conv_params(attrs, ins):
    return with_bias({"weight": (attrs["out"], ins[0].channels) + tuple(attrs["kernel"])}, attrs)


def conv_flops(attrs, ins, out):
    return (2 * ins[0].channels * prod(attrs["kernel"]) + 1) * out.numel * pool_window(attrs) \
        - out.numel


def conv(attrs, inputs, params):
    """im2col + matmul, in batch chunks of bounded memory."""
    x = inputs[0]
    w = params["weight"]
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["pad"]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out_ch = w.shape[0]
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        y = np.matmul(w.reshape(out_ch, c), x.reshape(n, c, h * wd)).reshape(n, out_ch, h, wd)
    else:
        xp = pad(x, ph, pw, ph, pw)
        wmat = w.reshape(out_ch, c * kh * kw).T
        per_image = c * kh * kw * ho * wo
        step = max(1, CHUNK_ELEMENTS // max(1, per_image))
        y = np.empty((n, out_ch, ho, wo), np.float32)
        for start in range(0, n, step):
            win = windows(xp[start:start + step], (kh, kw), (sh, sw), (ho, wo))
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
            y[start:start + step] = (cols @ wmat).reshape(-1, ho, wo, out_ch).transpose(0, 3, 1, 2)
    if "bias" in params:
        y = y + params["bias"].reshape(1, -1, 1, 1)
    if "pool" in attrs:             # fused max pool (fuse_pool pass): whole windows, no padding
        y = maxpool({"kernel": attrs["pool"], "stride": attrs["pool"], "pad": (0, 0),
                     "ceil_mode": False}, [y], {})
    return y.astype(np.float32, copy=False)


def torch_conv(torch, attrs, args, params):
    F = torch.nn.functional
    y = F.conv2d(args[0], params["weight"], params.get("bias"), attrs["stride"], attrs["pad"])
    return F.max_pool2d(y, attrs["pool"], attrs["pool"]) if "pool" in attrs else y


# ---------------------------------------------------------------- linear
def linear_params(attrs, ins):
    return with_bias({"weight": (attrs["out"], ins[0].numel)}, attrs)


def linear(attrs, inputs, params):
    x = inputs[0].reshape(inputs[0].shape[0], -1)
    y = x @ params["weight"].T
    if "bias" in params:
        y = y + params["bias"]
    return y.astype(np.float32, copy=False)


def torch_linear(torch, attrs, args, params):
    return torch.nn.functional.linear(args[0].flatten(1), params["weight"], params.get("bias"))


def gemv(node, batch: int) -> bool:
    """Whether a linear layer runs as a matrix-vector kernel at this batch."""
    return node.op == "linear" and batch <= GEMV_MAX_BATCH


# ---------------------------------------------------------------- lowering
def lower_gemm(ctx, node):
    """conv_gemm (narrow), conv_gemm_wide or conv_gemm_tc, by the scheduled tile; a linear layer
    is a 1x1 convolution of its flattened (C*H*W, 1, 1) input, or linear_gemv at small batches."""
    consts = ctx.consts(node)
    if gemv(node, ctx.batch):
        consts.update(IN=ctx.graph[node.inputs[0]].type.numel, WARPS=ctx.block // 32)
        grid = (-(-node.type.channels // (ctx.block // 32)), 1, 1)
        return ctx.kernel(node, "linear_gemv.cu.j2", grid, consts, {"bias": node.attrs["bias"]})
    if node.op == "conv":
        (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["pad"]
    else:
        (kh, kw), (sh, sw), (ph, pw) = (1, 1), (1, 1), (0, 0)
        consts.update(CI=ctx.graph[node.inputs[0]].type.numel, HI=1, WI=1)
    tile: ConvTile = ctx.tile(node)
    consts.update(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, BM=tile.bm, BN=tile.bn,
                  BK=tile.bk, TM=tile.tm, TN=tile.tn, SPLITK=tile.splitk)
    extra = {"pool": None}
    pixels = ctx.pixels(node)
    if "pool" in node.attrs:       # fused max pool: GEMM rows are the windows' pixels
        consts.update(PKH=node.attrs["pool"][0], PKW=node.attrs["pool"][1])
        extra["pool"] = tuple(node.attrs["pool"])
        pixels *= pool_window(node.attrs)
    grid = (-(-pixels // tile.bm), -(-node.type.channels // tile.bn), tile.splitk)
    template = ("conv_gemm_tc.cu.j2" if tile.mma else
                "conv_gemm_wide.cu.j2" if tile.wide else "conv_gemm.cu.j2")
    extra.update(mma=tile.mma, bias=node.attrs["bias"], tile=gemm_tile_fields(tile))
    if tile.splitk > 1:
        extra["partials"] = f"arena + {ctx.plan.scratch[node.name]}LL"
        extra["counters"] = f"arena + {ctx.plan.counters[node.name]}LL"
    return ctx.kernel(node, template, grid, consts, extra)


def conv_tiles(node, batch):
    return "gemm"


def linear_tiles(node, batch):
    return None if batch is not None and gemv(node, batch) else "gemm"


OPS = [
    OpInfo("conv", 1, CONV_FIELDS, conv_shape, conv, lower_gemm, torch_conv,
           params=conv_params, flops=conv_flops, epilogues=("activation", "add"), tile_kind=conv_tiles,
           packed=lambda attrs, batch: "K-major [CI*KH*KW][CO]", scale_axis=0),
    OpInfo("linear", 1, LINEAR_FIELDS, lambda a, i: TensorType((a["out"],)), linear, lower_gemm,
           torch_linear, params=linear_params,
           flops=lambda a, i, o: 2 * i[0].numel * a["out"], epilogues=("activation", "add"),
           tile_kind=linear_tiles,
           packed=lambda attrs, batch: None if batch <= GEMV_MAX_BATCH else "K-major [IN][OUT]",
           scale_axis=0),
]
