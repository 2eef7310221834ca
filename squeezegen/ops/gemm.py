"""Convolution and linear layers: implicit GEMMs (PyTorch's Conv2d, and Linear on the input
flattened in C,H,W order). Their kernels take fused epilogues (ReLU, a skip add) and, for a conv,
a fused max pool; their weights are packed K-major so that a tile reads consecutive outputs."""
from __future__ import annotations

from math import prod

import numpy as np

from ..codegen.tiles import GEMV_MAX_BATCH, ConvTile, gemm_tile_fields, shared_bytes
from ..ir.graph import TensorType
from .arrays import CHUNK_ELEMENTS, pad, windows
from .base import Field, OpInfo, ShapeError, need_image, pool_window, with_bias
from .pool import maxpool

CONV_FIELDS = {"out": Field("pos_int", required=True), "kernel": Field("pos_pair", required=True),
               "stride": Field("pos_pair", default=1), "pad": Field("pad", default=0),
               "dilation": Field("pos_pair", default=1), "groups": Field("pos_int", default=1),
               "relu": Field("bool", default=False), "bias": Field("bool", default=True),
               "input": Field("ref")}
LINEAR_FIELDS = {"out": Field("pos_int", required=True), "relu": Field("bool", default=False),
                 "bias": Field("bool", default=True), "input": Field("ref")}


# ---------------------------------------------------------------- conv
# A conv's attributes: out, kernel, stride, pad (top, left), bias; and, only where they are not
# the default (so that plain convs read as before): pad_end (bottom, right: asymmetric padding),
# dilation, groups. A fused max pool adds pool.
def geometry(attrs):
    """(kernel, stride, pad top/left, pad bottom/right, dilation, groups) of a conv."""
    return (attrs["kernel"], attrs["stride"], attrs["pad"], attrs.get("pad_end", attrs["pad"]),
            attrs.get("dilation", (1, 1)), attrs.get("groups", 1))


def conv_from_yaml(values, ins, given):
    top, left, bottom, right = values["pad"]
    attrs = dict(out=values["out"], kernel=values["kernel"], stride=values["stride"],
                 pad=(top, left), bias=values["bias"])
    if (bottom, right) != (top, left):
        attrs["pad_end"] = (bottom, right)
    if values["dilation"] != (1, 1):
        attrs["dilation"] = values["dilation"]
    if values["groups"] != 1:
        attrs["groups"] = values["groups"]
    return attrs


def conv_out(size, kernel, stride, begin, end, dilation):
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def conv_shape(attrs, ins):
    c, h, w = need_image(ins[0], "conv")
    (kh, kw), (sh, sw), (pt, pl), (pb, pr), (dh, dw), groups = geometry(attrs)
    if c % groups or attrs["out"] % groups:
        raise ShapeError(f"groups {groups} must divide the {c} input and {attrs['out']} output "
                         "channels", field="groups")
    ho, wo = conv_out(h, kh, sh, pt, pb, dh), conv_out(w, kw, sw, pl, pr, dw)
    if ho < 1 or wo < 1:
        reach = f" dilated by {dh}x{dw}" if (dh, dw) != (1, 1) else ""
        raise ShapeError(f"kernel {kh}x{kw}{reach} does not fit the {h}x{w} input with pad "
                         f"{pt}x{pl} (output would be {ho}x{wo})", field="kernel")
    if "pool" in attrs:              # a max pool fused by the fuse_pool pass (whole windows)
        ph, pw = attrs["pool"]
        ho, wo = ho // ph, wo // pw
    return TensorType((attrs["out"], ho, wo))


def conv_params(attrs, ins):
    per_group = ins[0].channels // attrs.get("groups", 1)
    return with_bias({"weight": (attrs["out"], per_group) + tuple(attrs["kernel"])}, attrs)


def conv_flops(attrs, ins, out):
    per_group = ins[0].channels // attrs.get("groups", 1)
    return (2 * per_group * prod(attrs["kernel"]) + 1) * out.numel * pool_window(attrs) \
        - out.numel


def conv(attrs, inputs, params):
    """im2col + matmul (per group), in batch chunks of bounded memory."""
    x = inputs[0]
    w = params["weight"]
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (pt, pl), (pb, pr), (dh, dw), groups = geometry(attrs)
    ho, wo = conv_out(h, kh, sh, pt, pb, dh), conv_out(wd, kw, sw, pl, pr, dw)
    out_ch, cg = w.shape[0], c // groups
    og = out_ch // groups
    if (kh, kw, sh, sw, pt, pl, pb, pr, groups) == (1, 1, 1, 1, 0, 0, 0, 0, 1):
        y = np.matmul(w.reshape(out_ch, c), x.reshape(n, c, h * wd)).reshape(n, out_ch, h, wd)
    else:
        xp = pad(x, pt, pl, pb, pr)
        span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)        # a dilated window's extent
        per_image = c * kh * kw * ho * wo
        step = max(1, CHUNK_ELEMENTS // max(1, per_image))
        y = np.empty((n, out_ch, ho, wo), np.float32)
        for start in range(0, n, step):
            win = windows(xp[start:start + step], span, (sh, sw), (ho, wo))[..., ::dh, ::dw]
            for g in range(groups):
                cols = win[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(
                    -1, cg * kh * kw)
                wmat = w[g * og:(g + 1) * og].reshape(og, cg * kh * kw).T
                y[start:start + step, g * og:(g + 1) * og] = (cols @ wmat).reshape(
                    -1, ho, wo, og).transpose(0, 3, 1, 2)
    if "bias" in params:
        y = y + params["bias"].reshape(1, -1, 1, 1)
    if "pool" in attrs:             # fused max pool (fuse_pool pass): whole windows, no padding
        y = maxpool({"kernel": attrs["pool"], "stride": attrs["pool"], "pad": (0, 0),
                     "ceil_mode": False}, [y], {})
    return y.astype(np.float32, copy=False)


def torch_conv(torch, attrs, args, params):
    F = torch.nn.functional
    _, stride, (pt, pl), (pb, pr), dilation, groups = geometry(attrs)
    x = args[0]
    if (pt, pl) != (pb, pr):
        x, (pt, pl) = F.pad(x, (pl, pr, pt, pb)), (0, 0)
    y = F.conv2d(x, params["weight"], params.get("bias"), stride, (pt, pl), dilation, groups)
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
def lower_direct(ctx, node):
    """conv_direct.cu.j2, for grouped and depthwise convolutions: one thread per output, summing
    its group's input channels (no GEMM padded with zeros)."""
    (kh, kw), (sh, sw), (ph, pw), _, (dh, dw), groups = geometry(node.attrs)
    consts = dict(ctx.consts(node), KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, DH=dh, DW=dw,
                  G=groups)
    return ctx.kernel(node, "conv_direct.cu.j2", ctx.grid(ctx.pixels(node) * node.type.channels),
                      consts, {"bias": node.attrs["bias"]})


def lower_gemm(ctx, node):
    """conv_gemm (narrow), conv_gemm_wide or conv_gemm_tc, by the scheduled tile; a linear layer
    is a 1x1 convolution of its flattened (C*H*W, 1, 1) input, or linear_gemv at small batches;
    a grouped conv runs conv_direct."""
    if node.attrs.get("groups", 1) > 1:
        return lower_direct(ctx, node)
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
                  BK=tile.bk, TM=tile.tm, TN=tile.tn, SPLITK=tile.splitk,
                  SMEM_BYTES=shared_bytes(tile))
    if node.attrs.get("dilation", (1, 1)) != (1, 1):        # taps DH rows, DW columns apart
        consts.update(DH=node.attrs["dilation"][0], DW=node.attrs["dilation"][1])
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
    return None if node.attrs.get("groups", 1) > 1 else "gemm"


def linear_tiles(node, batch):
    return None if batch is not None and gemv(node, batch) else "gemm"


OPS = [
    OpInfo("conv", 1, CONV_FIELDS, conv_shape, conv, lower_gemm, torch_conv,
           params=conv_params, flops=conv_flops, epilogues=("activation", "add"),
           from_yaml=conv_from_yaml, tile_kind=conv_tiles,
           packed=lambda attrs, batch: None if attrs.get("groups", 1) > 1 else
           "K-major [CI*KH*KW][CO]", scale_axis=0),
    OpInfo("linear", 1, LINEAR_FIELDS, lambda a, i: TensorType((a["out"],)), linear, lower_gemm,
           torch_linear, params=linear_params,
           flops=lambda a, i, o: 2 * i[0].numel * a["out"], epilogues=("activation", "add"),
           tile_kind=linear_tiles,
           packed=lambda attrs, batch: None if batch <= GEMV_MAX_BATCH else "K-major [IN][OUT]",
           scale_axis=0),
]
