"""Mapping ONNX nodes onto squeezegen layers (one method per ONNX op), fire recognition."""
from __future__ import annotations

import math

import numpy as np

from ...ops.activation import SELU_ALPHA, SELU_SCALE
from ...ops.base import pool_out_size
from .common import _INPUT, CHANNELS_LAST_OPS, _f32_decimal, _Layer, _pair_text, _Value


def _clamped(start: int, end: int, size: int) -> tuple[int, int]:
    """ONNX Slice's start and end on an axis of `size`: negatives count from the end, both
    clamped to [0, size]."""
    start += size if start < 0 else 0
    end += size if end < 0 else 0
    return max(0, min(start, size)), max(0, min(end, size))


def _picked(start: int, end: int, step: int, size: int) -> list[int]:
    """The indices ONNX Slice takes on an axis of `size` with a step other than 1 (negative:
    backwards, start clamped to [0, size - 1] and end to [-1, size - 1])."""
    start += size if start < 0 else 0
    end += size if end < 0 else 0
    if step > 0:
        return list(range(max(0, min(start, size)), max(0, min(end, size)), step))
    return list(range(max(0, min(start, size - 1)), max(-1, min(end, size - 1)), step))


def _same_pads(auto: str, size, kernel, stride, dilation) -> list[int]:
    """ONNX's auto_pad SAME_UPPER / SAME_LOWER as explicit pads (top, left, bottom, right): the
    output is ceil(input / stride) per axis; the padding that takes, split in two halves, the
    odd one at the end (UPPER) or at the start (LOWER)."""
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


class OpMapping:
    """Mapping ONNX nodes onto squeezegen layers (one method per ONNX op), fire recognition."""

    def window(self, node, a, kernel, op_word, conv: bool = False, size=None, dilation=(1, 1)):
        """Stride and pads of a conv/pool from ONNX attributes; refuses what cannot map. Pads are
        (top, left) for a pool, (top, left, bottom, right) for a conv (`conv`: dilations are
        the caller's, and pads may differ between the two sides of an axis; a max pool's
        dilations are the caller's too). auto_pad SAME_UPPER / SAME_LOWER pads are computed
        from the input's H, W (`size`) and `dilation`; a deconv's are refused."""
        auto = a.get("auto_pad", "NOTSET")
        same = auto in ("SAME_UPPER", "SAME_LOWER") and size is not None
        if auto not in ("NOTSET", "VALID") and not same:
            raise self.fail(node, f"auto_pad {auto} is not supported for {node.op_type}; "
                                  "re-export with explicit pads (auto_pad NOTSET)", "auto_pad")
        dil = a.get("dilations", [1, 1])
        if not conv and op_word != "maxpool" and any(int(d) != 1 for d in dil):
            raise self.fail(node, f"dilations {list(dil)} are not supported: squeezegen's "
                                  f"{op_word} has no dilation (only 1)", "dilations")
        strides = a.get("strides", [1, 1])
        if len(strides) != 2 or any(int(s) < 1 for s in strides):
            raise self.fail(node, f"strides {list(strides)}: expected two positive values",
                            "strides")
        stride = (int(strides[0]), int(strides[1]))
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if auto != "NOTSET" and any(pads):
            raise self.fail(node, f"auto_pad {auto} with non-zero pads", "pads")
        if len(pads) != 4 or any(p < 0 for p in pads):
            raise self.fail(node, f"pads {pads}: expected four non-negative values "
                                  "(top, left, bottom, right)", "pads")
        if same:
            pads = _same_pads(auto, size, kernel, stride, dilation)
        if conv:
            return stride, (pads[0], pads[1], pads[2], pads[3])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            given = f"auto_pad {auto} gives pads" if same else "asymmetric pads"
            raise self.fail(node, f"{given} {pads} (top, left, bottom, right), which are not "
                                  f"supported: squeezegen's {op_word} pads both sides of an axis "
                                  "equally", "auto_pad" if same else "pads")
        return stride, (pads[0], pads[1])

    # ------------------------------------------------------------------ op mappers
    def conv_spec(self, node):
        a = self.attrs(node, ("auto_pad", "dilations", "group", "kernel_shape", "pads",
                              "strides"))
        x = self.image(node)
        w = self.weight(node, 1, "weight", 4)
        groups = int(a.get("group", 1))
        if groups < 1 or x.sg[0] % groups or int(w.shape[0]) % groups:
            raise self.fail(node, f"group {groups} does not divide the {x.sg[0]} input and "
                                  f"{int(w.shape[0])} output channels", "group")
        kernel = (int(w.shape[2]), int(w.shape[3]))
        if "kernel_shape" in a and tuple(int(k) for k in a["kernel_shape"]) != kernel:
            raise self.fail(node, f"kernel_shape {list(a['kernel_shape'])} does not match the "
                                  f"weight's shape {list(w.shape)}", "kernel_shape")
        dilation = tuple(int(d) for d in a.get("dilations", [1, 1]))
        if len(dilation) != 2 or min(dilation) < 1:
            raise self.fail(node, f"dilations {list(dilation)}: expected two positive values",
                            "dilations")
        more = self.zero_pads.get(node.input[0], (0, 0, 0, 0))       # a Pad folded into it
        size = (x.sg[1] + more[0] + more[2], x.sg[2] + more[1] + more[3])   # what the conv reads
        stride, (top, left, bottom, right) = self.window(node, a, kernel, "conv", conv=True,
                                                         size=size, dilation=dilation)
        top, left, bottom, right = (p + q for p, q in zip((top, left, bottom, right), more))
        self.check_in_channels(node, w, int(w.shape[1]) * groups, x)
        extra = {}                   # what a plain conv does not need (a fire's never do)
        if (bottom, right) != (top, left):
            extra["pad_end"] = (bottom, right)
        if dilation != (1, 1):
            extra["dilation"] = dilation
        if groups != 1:
            extra["groups"] = groups
        return (x, w, self.optional_bias(node, int(w.shape[0])), kernel, stride, (top, left),
                extra)

    def check_in_channels(self, node, w, expected: int, x) -> None:
        if expected != x.sg[0]:
            raise self.fail(node, f"the weight {list(w.shape)} expects {expected} input "
                                  f"channels, the input has {x.sg[0]}")

    def optional_bias(self, node, channels: int):
        """The node's third input, a bias of `channels` values, or None."""
        if len(node.input) <= 2 or not node.input[2]:
            return None
        b = self.weight(node, 2, "bias", 1)
        if b.shape != (channels,):
            raise self.fail(node, f"the bias has shape {list(b.shape)}, expected [{channels}]")
        return b

    def map_conv(self, node):
        if self.match_fire(node):
            return
        x, w, b, kernel, stride, pad, extra = self.conv_spec(node)
        f = dict(out=int(w.shape[0]), kernel=kernel, stride=stride, pad=pad, bias=b is not None,
                 **extra)
        sg = self.shape_of(node, "conv", f, [x.sg])
        weights = {"weight": w} if b is None else {"weight": w, "bias": b}
        index = self.add_layer(_Layer("conv", [x.layer], f, weights, sg, node, relu=False),
                               node.output[0])
        self.fuse_relu(index, node.output[0])

    def match_fire(self, squeeze) -> bool:
        """squeeze conv 1x1 + Relu -> {conv 1x1 + Relu, conv 3x3 pad 1 + Relu} -> Concat."""
        def plain(node, k, p):
            x, w, b, kernel, stride, pad, extra = self.conv_spec(node)
            ok = (kernel == (k, k) and stride == (1, 1) and pad == (p, p) and b is not None
                  and not extra)
            return (x, w, b) if ok else None

        def conv_relu(node, k, p):
            spec = plain(node, k, p)
            relu = self.only_reader(node.output[0], "Relu") if spec else None
            return (spec, relu) if relu is not None and len(relu.output) == 1 else None

        first = conv_relu(squeeze, 1, 0)
        if first is None:
            return False
        (x, ws, bs), srelu = first
        s_out = srelu.output[0]
        if s_out in self.g.outputs:
            return False
        readers = self.data_consumers(s_out)
        if len(readers) != 2 or any(r.op_type != "Conv" or list(r.input).count(s_out) != 1
                                    or list(r.input).index(s_out) != 0 for r in readers):
            return False
        by_kernel = {}
        for r in readers:
            w = self.g.consts.get(r.input[1]) if len(r.input) > 1 else None
            if w is None or w.ndim != 4:
                return False
            by_kernel[(int(w.shape[2]), int(w.shape[3]))] = r
        if set(by_kernel) != {(1, 1), (3, 3)}:
            return False
        # the expand convs read the squeeze's output: build a value for it before checking them
        sq_sg = (int(ws.shape[0]),) + x.sg[1:]
        saved = self.values.get(s_out)
        self.values[s_out] = _Value(_INPUT, sq_sg, sq_sg)
        try:
            e1 = conv_relu(by_kernel[(1, 1)], 1, 0)
            e3 = conv_relu(by_kernel[(3, 3)], 3, 1)
        finally:
            if saved is None:
                del self.values[s_out]
            else:
                self.values[s_out] = saved
        if e1 is None or e3 is None:
            return False
        (_, w1, b1), r1 = e1
        (_, w3, b3), r3 = e3
        cat = self.only_reader(r1.output[0], "Concat")
        if cat is None or self.only_reader(r3.output[0], "Concat") is not cat:
            return False
        if list(cat.input) != [r1.output[0], r3.output[0]] or len(cat.output) != 1:
            return False
        axis = self.attrs(cat, ("axis",)).get("axis")
        if axis not in (1, -3):
            return False
        f = dict(squeeze=int(ws.shape[0]), expand1x1=int(w1.shape[0]), expand3x3=int(w3.shape[0]))
        sg = (f["expand1x1"] + f["expand3x3"],) + x.sg[1:]
        weights = {"squeeze.weight": ws, "squeeze.bias": bs, "expand1x1.weight": w1,
                   "expand1x1.bias": b1, "expand3x3.weight": w3, "expand3x3.bias": b3}
        for n in (srelu, by_kernel[(1, 1)], r1, by_kernel[(3, 3)], r3, cat):
            self.absorbed.add(id(n))
        self.add_layer(_Layer("fire", [x.layer], f, weights, sg, cat), cat.output[0])
        return True

    def map_conv_transpose(self, node):
        a = self.attrs(node, ("auto_pad", "dilations", "group", "kernel_shape", "output_padding",
                              "output_shape", "pads", "strides"))
        x = self.image(node)
        w = self.weight(node, 1, "weight", 4)
        self.check_in_channels(node, w, int(w.shape[0]), x)
        groups = int(a.get("group", 1))
        if groups < 1 or x.sg[0] % groups:
            raise self.fail(node, f"group {a.get('group')} does not divide the {x.sg[0]} input "
                                  "channels", "group")
        extra = tuple(int(p) for p in a.get("output_padding", (0, 0)))
        if len(extra) != 2 or min(extra) < 0:
            raise self.fail(node, f"output_padding {list(extra)} should be 2 non-negative "
                                  "entries (rows, columns)", "output_padding")
        kernel = (int(w.shape[2]), int(w.shape[3]))
        if "kernel_shape" in a and tuple(int(k) for k in a["kernel_shape"]) != kernel:
            raise self.fail(node, f"kernel_shape {list(a['kernel_shape'])} does not match the "
                                  f"weight's shape {list(w.shape)}", "kernel_shape")
        stride, pad = self.window(node, a, kernel, "deconv")
        out = int(w.shape[1]) * groups              # the weight is [C, out / group, kh, kw]
        b = self.optional_bias(node, out)
        f = dict(out=out, kernel=kernel, stride=stride, pad=pad, bias=b is not None)
        if extra != (0, 0):
            f["output_padding"] = extra
        if groups != 1:
            f["groups"] = groups
        sg = self.shape_of(node, "deconv", f, [x.sg])
        if "output_shape" in a and tuple(int(d) for d in a["output_shape"][-2:]) != sg[1:]:
            raise self.fail(node, f"output_shape {list(a['output_shape'])} differs from the "
                                  f"{sg[1]}x{sg[2]} the pads give; re-export without "
                                  "output_shape", "output_shape")
        weights = {"weight": w} if b is None else {"weight": w, "bias": b}
        self.add_layer(_Layer("deconv", [x.layer], f, weights, sg, node), node.output[0])

    def map_pool(self, node):
        avg = node.op_type == "AveragePool"
        allowed = ("auto_pad", "ceil_mode", "kernel_shape", "pads", "strides", "dilations")
        a = self.attrs(node, allowed + (("count_include_pad",) if avg else ("storage_order",)))
        if len(node.output) > 1 and node.output[1] and (
                self.data_consumers(node.output[1]) or node.output[1] in self.g.outputs):
            raise self.fail(node, "the Indices output is used; squeezegen's maxpool computes only "
                                  "the maxima")
        x = self.image(node)
        if "kernel_shape" not in a or len(a["kernel_shape"]) != 2:
            raise self.fail(node, "needs a 2-D kernel_shape", "kernel_shape")
        kernel = (int(a["kernel_shape"][0]), int(a["kernel_shape"][1]))
        if min(kernel) < 1:
            raise self.fail(node, f"kernel_shape {list(kernel)} is not positive", "kernel_shape")
        dilation = tuple(int(d) for d in a.get("dilations", [1, 1]))
        if len(dilation) != 2 or min(dilation) < 1:
            raise self.fail(node, f"dilations {list(dilation)}: expected two positive values",
                            "dilations")
        a = self.end_pads_as_ceil_mode(a, x.sg[1:], kernel, dilation, avg)
        stride, pad = self.window(node, a, kernel, "avgpool" if avg else "maxpool",
                                  size=x.sg[1:], dilation=dilation)
        op = "avgpool" if avg else "maxpool"
        # with auto_pad, ONNX's text says the output size ignores ceil_mode (the pads give it);
        # its shape inference and onnxruntime apply it under VALID: where the two readings
        # differ, refuse rather than pick one
        auto_pad = a.get("auto_pad", "NOTSET")
        ceil = bool(int(a.get("ceil_mode", 0)))
        if ceil and auto_pad == "VALID" and any(
                pool_out_size(n, (k - 1) * d + 1, s, 0, True)
                != pool_out_size(n, (k - 1) * d + 1, s, 0, False)
                for n, k, s, d in zip(x.sg[1:], kernel, stride, dilation)):
            raise self.fail(node, "auto_pad VALID with ceil_mode 1, where the two give different "
                                  "sizes (ONNX's text and its shape inference disagree on which "
                                  "wins); re-export with explicit pads", "ceil_mode")
        ceil = ceil and auto_pad == "NOTSET"
        f = dict(kernel=kernel, stride=stride, pad=pad, ceil_mode=ceil)
        if avg and int(a.get("count_include_pad", 0)) == 0 and (any(pad) or f["ceil_mode"]):
            f["count_include_pad"] = False         # ONNX's default; it matters only here
        if dilation != (1, 1):
            f["dilation"] = dilation
        sg = self.shape_of(node, op, f, [x.sg])
        self.add_layer(_Layer(op, [x.layer], f, {}, sg, node), node.output[0])

    @staticmethod
    def end_pads_as_ceil_mode(a: dict, size, kernel, dilation, avg: bool) -> dict:
        """Pool attributes `a` whose pads are larger at the end (bottom, right) than at the
        start, as the same pool with the start's pads on both sides and, where it needs it,
        ceil_mode: how PyTorch exports a ceil_mode pool before opset 10, which has none. The
        same windows either way (the end pads hold no values for a max pool or an average
        pool that leaves them out of its count); else `a` unchanged (refused later)."""
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        strides = [int(st) for st in a.get("strides", [1, 1])]
        if (a.get("auto_pad", "NOTSET") != "NOTSET" or int(a.get("ceil_mode", 0))
                or len(pads) != 4 or len(strides) != 2 or min(pads + strides) < 0
                or 0 in strides or pads[2] < pads[0] or pads[3] < pads[1]
                or pads[2:] == pads[:2] or (avg and int(a.get("count_include_pad", 0)))):
            return a
        sides = list(zip(size, kernel, strides, dilation, pads[:2], pads[2:]))
        given = [(n + p + q - (k - 1) * d - 1) // st + 1 for n, k, st, d, p, q in sides]
        for ceil in (False, True):
            if given == [pool_out_size(n, (k - 1) * d + 1, st, p, ceil)
                         for n, k, st, d, p, _ in sides]:
                return dict(a, pads=pads[:2] * 2, ceil_mode=int(ceil))
        return a

    def map_global_pool(self, node):
        self.attrs(node, ())
        x = self.image(node)
        if node.op_type == "GlobalAveragePool":
            layer = _Layer("avgpool", [x.layer], {"global": True}, {}, (x.sg[0], 1, 1), node)
        else:
            hw = x.sg[1:]
            f = dict(kernel=hw, stride=hw, pad=(0, 0), ceil_mode=False)
            layer = _Layer("maxpool", [x.layer], f, {}, self.shape_of(node, "maxpool", f, [x.sg]),
                           node)
        self.add_layer(layer, node.output[0])

    def reduce_axes(self, node, rank: int) -> tuple[list[int] | None, int]:
        """A ReduceMean / ReduceMax / ReduceSum's axes (attribute, or input 1 from opset 13 or
        18), as 0..rank-1, and its keepdims."""
        a = self.attrs(node, ("axes", "keepdims", "noop_with_empty_axes"))
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, 1, "axes").reshape(-1).tolist()
        if axes is not None:
            axes = self.axes_in(node, axes, rank)
        return axes, int(a.get("keepdims", 1))

    def add_reduction(self, node, op: str, fields: dict, x: _Value, sg: tuple, tensor: str,
                      shape=None, channels_last: bool = False) -> None:
        """Layer `op` (a pool or reduce_channels, computing `sg` from `x`) as ONNX tensor
        `tensor`, for the ReduceMean, ReduceMax or ReduceSum `node`; a sum is the mean times
        the number of values each output sums, an affine layer after it (which runs in the
        reduction's store)."""
        layer = _Layer(op, [x.layer], fields, {}, sg, node)
        if node.op_type != "ReduceSum":
            self.add_layer(layer, tensor, shape, channels_last)
            return
        count = math.prod(x.sg) // math.prod(sg)
        index = self.add_layer(layer, tensor + "#mean", shape, channels_last)
        weights = {"weight": np.full((sg[0],), float(count), np.float32),
                   "bias": np.zeros((sg[0],), np.float32)}
        index = self.add_layer(_Layer("affine", [index], {}, weights, sg, node, relu=False),
                               tensor, shape, channels_last)
        self.fuse_relu(index, tensor)

    def map_reduce(self, node):
        """ReduceMean / ReduceMax / ReduceSum over H and W (x.mean((2, 3), keepdim=...)), in
        one step or two (x.mean(-1).mean(-1), x.mean(3).mean(2)), or over the last axis of an
        image flattened to [N, C, H*W] without keepdims (x.flatten(2).mean(2)): the global
        pools; without keepdims the result is the pool's C x 1 x 1, flattened. Over one of H
        and W alone (x.mean(3, keepdim=True)): a pool of kernel 1 x W (H x 1). Over the
        channels (x.mean(1, keepdim=True), CBAM's spatial attention): reduce_channels; without
        keepdims its H x W, for an Unsqueeze back or a Flatten. A ReduceSum is the mean times
        the number of values summed (an affine layer). ReduceL2 over the channels (x.norm(dim=1,
        keepdim=True), inside F.normalize(x, dim=1)): reduce_channels in mode l2."""
        x = self.tensor(node, channels_last=True)
        axes, keep = self.reduce_axes(node, len(x.shape) + 1)
        if node.op_type == "ReduceL2":
            self.map_channel_norm(node, x, axes, keep)
            return
        op = "maxpool" if node.op_type == "ReduceMax" else "avgpool"
        mode = "max" if node.op_type == "ReduceMax" else "mean"
        if x.channels_last:
            if node.op_type == "ReduceMean" and self.match_layernorm(node, x):
                return
            if axes is not None and sorted(axes) == [1, 2]:
                sg = (x.sg[0], 1, 1)                 # over the pixels: a global pool
                self.add_reduction(node, op, {"global": True}, x, sg, node.output[0],
                                   None if keep else (x.sg[0],), bool(keep))
                return
            if axes is None or axes != [3] or not keep:
                raise self.fail(node, f"a {node.op_type} of a channels-last tensor is imported "
                                      "only over its last axis (the channels) with keepdims, "
                                      f"or over H and W, got axes {axes}", "axes")
            self.add_reduction(node, "reduce_channels", {"mode": mode}, x,
                               (1,) + tuple(x.sg[1:]), node.output[0], channels_last=True)
            return
        if (axes == [2] and len(x.shape) == 2 and len(x.sg) == 3 and not keep
                and x.shape == (x.sg[0], x.sg[1] * x.sg[2])):
            # x.flatten(2).mean(2), x.view(n, c, -1).mean(-1): a global pool, flattened
            self.add_reduction(node, op, {"global": True}, x, (x.sg[0], 1, 1), node.output[0],
                               (x.sg[0],))
            return
        x = self.image(node)
        c, h, w = x.sg
        if axes == [1]:
            sg = (1, h, w)
            # without keepdims the result is N x H x W: the same values in the same order, for
            # an Unsqueeze back to N x 1 x H x W or a Flatten (what reads it checks the shape)
            self.add_reduction(node, "reduce_channels", {"mode": mode}, x, sg, node.output[0],
                               sg if keep else sg[1:])
            return
        if axes in ([2], [3]) and self.match_two_step_reduction(node, x, axes[0], keep):
            return
        if axes in ([2], [3]):                  # one of H and W: a pool over that axis alone
            kernel = (h, 1) if axes == [2] else (1, w)
            f = dict(kernel=kernel, stride=kernel, pad=(0, 0), ceil_mode=False)
            sg = (c, 1, w) if axes == [2] else (c, h, 1)
            shape = sg if keep else (c, sg[1] * sg[2])
            self.add_reduction(node, op, f, x, sg, node.output[0], shape)
            return
        if axes is None or sorted(axes) != [2, 3]:
            raise self.fail(node, f"only a reduction over H and W (axes [2, 3], or one of them),"
                                  f" or over the channels (axes [1]) is supported, got axes "
                                  f"{'none (all of them)' if axes is None else axes}", "axes")
        self.add_reduction(node, op, {"global": True}, x, (c, 1, 1), node.output[0],
                           (c, 1, 1) if keep else (c,))

    def map_channel_norm(self, node, x: _Value, axes, keep: int) -> None:
        """ReduceL2 over the channels of an image (axes [1]): reduce_channels in mode l2, its
        1 x H x W (without keepdims, H x W for an Unsqueeze back or a Flatten)."""
        if x.channels_last or axes != [1] or len(x.sg) != 3 or x.shape != x.sg:
            raise self.fail(node, "an L2 norm is imported only over the channels of an N, C, H, "
                                  f"W image (axes [1]), got axes {axes}", "axes")
        sg = (1,) + tuple(x.sg[1:])
        self.add_reduction(node, "reduce_channels", {"mode": "l2"}, x, sg, node.output[0],
                           sg if keep else sg[1:])

    def match_two_step_reduction(self, first, x: _Value, axis: int, keep: int) -> bool:
        """A reduction over H or W (`axis` of image `x`) read only by the same reduction over
        the other one (x.mean(-1).mean(-1), x.mean(3).mean(2), x.amax(2, keepdim=True).amax(3,
        keepdim=True)): one global pool, the second node absorbed; its ONNX shape is the
        second's output."""
        second = self.only_reader(first.output[0], first.op_type)
        if second is None or len(second.output) != 1 or list(second.input).index(
                first.output[0]) != 0:
            return False
        shape = list(x.sg)                      # the first's output, batch left out
        if keep:
            shape[axis - 1] = 1
        else:
            del shape[axis - 1]
        other = (5 - axis) if keep else 2       # the axis of the other one, batch first
        axes, keep2 = self.reduce_axes(second, len(shape) + 1)
        if axes != [other]:
            return False
        if keep2:
            shape[other - 1] = 1
        else:
            del shape[other - 1]
        self.absorbed.add(id(second))
        self.add_reduction(first, "maxpool" if first.op_type == "ReduceMax" else "avgpool",
                           {"global": True}, x, (x.sg[0], 1, 1), second.output[0],
                           tuple(shape))
        return True

    def map_batchnorm(self, node):
        """Inference BatchNormalization (training_mode 0): a batchnorm layer whose weights are
        scale, B, mean and var; squeezegen folds it into a conv before it."""
        a = self.attrs(node, ("epsilon", "momentum", "training_mode", "spatial"))
        if a.get("training_mode", 0) or len(node.output) > 1:
            raise self.fail(node, "training-mode BatchNormalization (running statistics "
                                  "updated) is not supported; export the model in eval mode "
                                  "(model.eval())", "training_mode")
        if not a.get("spatial", 1):
            raise self.fail(node, "spatial=0 (per-pixel statistics) is not supported", "spatial")
        x = self.features(node)
        c = x.sg[0]
        names = ("scale", "bias (B)", "mean", "var")
        weights = {}
        for i, (key, what) in enumerate(zip(("weight", "bias", "running_mean", "running_var"),
                                            names), start=1):
            w = self.weight(node, i, what)
            if w.shape != (c,):
                raise self.fail(node, f"the {what} '{node.input[i]}' has shape {list(w.shape)}, "
                                      f"expected [{c}] (one per channel)")
            weights[key] = w
        eps = self.epsilon(node, a)
        index = self.add_layer(_Layer("batchnorm", [x.layer], {"eps": eps}, weights, x.sg, node,
                                      relu=False), node.output[0], x.shape)
        self.fuse_relu(index, node.output[0])

    def map_instancenorm(self, node):
        """InstanceNormalization (PyTorch's InstanceNorm2d, without running statistics): a
        groupnorm layer with a group per channel, whose weights are scale and B. PyTorch exports
        GroupNorm(G, C) as one on the image reshaped to [N, G, C/G*H*W] (each group a row),
        then reshaped back, times weight, plus bias: a groupnorm of G groups, its per-group scale
        and B repeated over each group's channels; the Mul and Add become an affine layer that
        runs in the groupnorm kernel's store."""
        a = self.attrs(node, ("epsilon",))
        x = self.tensor(node)
        image = len(x.sg) == 3 and x.shape == x.sg
        grouped = (len(x.sg) == 3 and len(x.shape) == 2 and x.sg[0] % x.shape[0] == 0
                   and x.shape[0] * x.shape[1] == math.prod(x.sg))
        if not image and not grouped:
            raise self.fail(node, f"InstanceNormalization of a [N, {', '.join(map(str, x.shape))}]"
                                  " tensor is not supported: only of an N, C, H, W image, or of "
                                  "one reshaped to [N, G, C/G*H*W] (GroupNorm)")
        c = x.sg[0]
        groups = c if image else x.shape[0]
        weights = {}
        for i, (key, what) in enumerate((("weight", "scale"), ("bias", "bias (B)")), start=1):
            w = self.weight(node, i, what)
            if w.shape != (groups,):
                raise self.fail(node, f"the {what} '{node.input[i]}' has shape {list(w.shape)}, "
                                      f"expected [{groups}] (one per "
                                      f"{'channel' if image else 'group'})")
            weights[key] = np.repeat(w, c // groups).astype(np.float32)
        eps = self.epsilon(node, a)
        self.add_layer(_Layer("groupnorm", [x.layer], {"groups": groups, "eps": eps}, weights,
                              x.sg, node), node.output[0], x.shape)

    def add_activation(self, node, op: str, fields: dict, tensor: str | None = None):
        x = self.tensor(node, channels_last=True)
        self.add_layer(_Layer(op, [x.layer], fields, {}, x.sg, node), tensor or node.output[0],
                       x.shape, x.channels_last)

    def gated_by(self, node, x_name: str):
        """The Mul that multiplies `x_name` by this node's output (x * sigmoid(x) is SiLU,
        x * hardsigmoid(x) hardswish, as exporters write them), or None."""
        mul = self.only_reader(node.output[0], "Mul")
        if mul is None or sorted(mul.input) != sorted([x_name, node.output[0]]) \
                or len(mul.output) != 1:
            return None
        return mul

    def map_activation(self, node):
        """Sigmoid, HardSigmoid (PyTorch's: alpha 1/6, beta 0.5), HardSwish, Tanh, LeakyRelu,
        Elu, Gelu, Softplus, Mish, Selu (PyTorch's constants), Celu, Softsign; Sigmoid and
        HardSigmoid times their own input become silu and hardswish, x * Tanh(Softplus(x))
        mish, Log(Sigmoid(x)) logsigmoid (PyTorch's, which stays finite where the exported
        sigmoid underflows to 0)."""
        op_type = node.op_type
        a = self.attrs(node, {"LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
                              "Elu": ("alpha",), "Gelu": ("approximate",), "Celu": ("alpha",),
                              "Selu": ("alpha", "gamma")}.get(op_type, ()))
        if op_type == "LeakyRelu":
            slope = _f32_decimal(a.get("alpha", 0.01))
            if not math.isfinite(slope):
                raise self.fail(node, f"alpha {slope} is not a finite float32", "alpha")
            self.add_activation(node, "leaky_relu", {"negative_slope": slope})
            return
        if op_type == "Elu":
            alpha = _f32_decimal(a.get("alpha", 1.0))
            if not math.isfinite(alpha):
                raise self.fail(node, f"alpha {alpha} is not a finite float32", "alpha")
            self.add_activation(node, "elu", {"alpha": alpha})
            return
        if op_type == "Celu":
            alpha = _f32_decimal(a.get("alpha", 1.0))
            if not 0 < alpha < math.inf:
                raise self.fail(node, f"alpha {alpha} is not a positive finite float32", "alpha")
            self.add_activation(node, "celu", {"alpha": alpha})
            return
        if op_type == "Selu":
            for key, value in (("alpha", SELU_ALPHA), ("gamma", SELU_SCALE)):
                given = float(a.get(key, value))
                if not abs(given - value) <= 1e-6 * value:
                    raise self.fail(node, f"Selu with {key} {given:g} is not supported; "
                                          "squeezegen's selu is PyTorch's nn.SELU (alpha "
                                          f"{SELU_ALPHA:.6g}, gamma {SELU_SCALE:.6g})", key)
            self.add_activation(node, "selu", {})
            return
        if op_type == "Softsign":
            self.add_activation(node, "softsign", {})
            return
        if op_type == "Gelu":
            approximate = a.get("approximate", "none")
            if approximate not in ("none", "tanh"):
                raise self.fail(node, f"approximate '{approximate}' is not supported (none or "
                                      "tanh)", "approximate")
            self.add_activation(node, "gelu", {"approximate": approximate})
            return
        if op_type in ("Softplus", "Mish"):
            tanh = self.only_reader(node.output[0], "Tanh") if op_type == "Softplus" else None
            mul = self.gated_by(tanh, node.input[0]) if tanh is not None else None
            if mul is not None:                             # x * tanh(softplus(x))
                self.attrs(tanh, ())
                self.absorbed.update((id(tanh), id(mul)))
                self.add_activation(node, "mish", {}, mul.output[0])
                return
            self.add_activation(node, op_type.lower(), {})
            return
        if op_type == "HardSigmoid":
            alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
            if not abs(alpha - 1 / 6) <= 1e-6 or beta != 0.5:
                raise self.fail(node, f"HardSigmoid with alpha {alpha:g} and beta {beta:g} is not "
                                      "supported; squeezegen's hardsigmoid is PyTorch's (alpha "
                                      "1/6, beta 0.5)", "alpha")
        simple = {"Sigmoid": "sigmoid", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish",
                  "Tanh": "tanh"}[op_type]
        mul = self.gated_by(node, node.input[0]) if op_type in ("Sigmoid", "HardSigmoid") else None
        if mul is not None:
            self.absorbed.add(id(mul))
            self.add_activation(node, "silu" if op_type == "Sigmoid" else "hardswish", {},
                                mul.output[0])
            return
        log = self.only_reader(node.output[0], "Log") if op_type == "Sigmoid" else None
        if log is not None and len(log.output) == 1:         # nn.LogSigmoid
            self.attrs(log, ())
            self.absorbed.add(id(log))
            self.add_activation(node, "logsigmoid", {}, log.output[0])
            return
        self.add_activation(node, simple, {})

    def map_upsample(self, node):
        """Upsample (opsets 7 to 9) and Resize at opset 10: scales only, asymmetric coordinates
        (nearest: floor, as PyTorch's "nearest"; linear: bilinear)."""
        a = self.attrs(node, ("mode", "scales"))
        onnx_mode = a.get("mode", "nearest")
        if onnx_mode not in ("nearest", "linear", "bilinear"):
            raise self.fail(node, f"mode {onnx_mode} is not supported (nearest and linear are)",
                            "mode")
        if "scales" in a:
            scales = np.asarray(a["scales"], np.float64)
        else:
            scales = self.const(node, 1, "scales")
        x = self.image(node)
        mode = "nearest" if onnx_mode == "nearest" else "bilinear"
        self.resize_layer(node, x, {"mode": mode, "coordinates": "asymmetric"}, scales, None)

    def map_resize(self, node):
        """Resize (opset 11+) with constant scales or sizes over H and W: nearest (floor with
        asymmetric coordinates, PyTorch's "nearest"; round_prefer_ceil with half_pixel, its
        "nearest-exact") or linear, in the half_pixel, pytorch_half_pixel, align_corners or
        asymmetric coordinate modes. At opset 10, Upsample's form (`map_upsample`)."""
        if self.opset < 11:
            self.map_upsample(node)
            return
        a = self.attrs(node, ("coordinate_transformation_mode", "cubic_coeff_a", "mode",
                              "nearest_mode", "exclude_outside", "extrapolation_value",
                              "antialias", "keep_aspect_ratio_policy"))
        onnx_mode = a.get("mode", "nearest")
        if onnx_mode not in ("nearest", "linear"):
            raise self.fail(node, f"mode {onnx_mode} is not supported (nearest and linear are)",
                            "mode")
        if a.get("exclude_outside", 0) or a.get("antialias", 0):
            raise self.fail(node, "exclude_outside and antialias are not supported",
                            "exclude_outside" if a.get("exclude_outside", 0) else "antialias")
        coordinates = a.get("coordinate_transformation_mode", "half_pixel")
        if coordinates not in ("half_pixel", "pytorch_half_pixel", "align_corners",
                               "asymmetric"):
            raise self.fail(node, f"coordinate_transformation_mode {coordinates} is not "
                                  "supported", "coordinate_transformation_mode")
        mode = "bilinear" if onnx_mode == "linear" else "nearest"
        if mode == "nearest":
            rounding = a.get("nearest_mode", "round_prefer_floor")
            if (coordinates, rounding) not in (("asymmetric", "floor"),
                                               ("half_pixel", "round_prefer_ceil")):
                raise self.fail(node, f"nearest resizing with {coordinates} coordinates and "
                                      f"nearest_mode {rounding} is not supported (asymmetric + "
                                      "floor and half_pixel + round_prefer_ceil are: PyTorch's "
                                      "nearest and nearest-exact)", "nearest_mode")
        x = self.image(node)
        f = {"mode": mode, "coordinates": coordinates}
        scales = self.const(node, 2, "scales") if len(node.input) > 2 and node.input[2] else None
        sizes = self.const(node, 3, "sizes") if len(node.input) > 3 and node.input[3] else None
        self.resize_layer(node, x, f, scales, sizes)

    def resize_layer(self, node, x: _Value, f: dict, scales, sizes) -> None:
        """A resize layer of `x` with mode and coordinates `f`, by constant `scales` (N, C, H, W
        factors) or else `sizes`."""
        if scales is not None and scales.size:
            s = [_f32_decimal(v) for v in scales.reshape(-1)]     # 1.7, as PyTorch had it
            if not all(math.isfinite(v) for v in s):
                raise self.fail(node, f"scales {s} are not finite numbers")
            if len(s) != 4 or s[:2] != [1.0, 1.0] or min(s) <= 0:
                raise self.fail(node, f"scales {s}: only H and W may be scaled, by positive "
                                      "factors")
            f["scale"] = (s[2], s[3])
            f["size"] = (int(math.floor(x.sg[1] * s[2])), int(math.floor(x.sg[2] * s[3])))
        else:
            if sizes is None:
                raise self.fail(node, "neither scales nor sizes is given")
            sizes = [int(v) for v in sizes.reshape(-1)]
            if len(sizes) != 4 or sizes[1] != x.sg[0] or sizes[0] not in (1, self.batch):
                raise self.fail(node, f"sizes {sizes}: only H and W may change")
            f["size"] = (sizes[2], sizes[3])
        sg = self.shape_of(node, "resize", f, [x.sg])
        declared = self.declared(node.output[0])
        if declared is not None and len(declared) == 3 and declared != tuple(sg):
            how = (f"by {_pair_text(f['scale'])} (the floor of size x scale, as PyTorch)"
                   if "scale" in f else "to its sizes")
            raise self.fail(node, f"squeezegen resizes {x.sg[1]}x{x.sg[2]} {how} to "
                                  f"{sg[1]}x{sg[2]}, but the ONNX model declares "
                                  f"{declared[1]}x{declared[2]}; export with a size instead of "
                                  "a scale_factor", "scales" if "scale" in f else "sizes")
        index = self.add_layer(_Layer("resize", [x.layer], f, {}, sg, node, relu=False),
                               node.output[0])
        self.fuse_relu(index, node.output[0])

    def map_pad(self, node):
        """Pad over H and W: of zeros, with one Conv reading it, folded into the conv's pads;
        otherwise a pad layer (constant, reflect, or edge as `replicate`: nn.ZeroPad2d,
        nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)."""
        a = self.attrs(node, ("mode", "pads", "value"))
        mode = a.get("mode", "constant")
        modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}
        if mode not in modes:
            raise self.fail(node, f"mode {mode} padding is not supported (constant, reflect and "
                                  "edge are)", "mode")
        pads = a.get("pads")
        if pads is None:
            pads = self.const(node, 1, "pads").reshape(-1)
        pads = [int(p) for p in pads]
        value = float(a.get("value", 0.0))
        if len(node.input) > 2 and node.input[2]:
            value = float(self.const(node, 2, "constant value").reshape(-1)[0])
        x = self.image(node)
        if len(node.input) > 3 and node.input[3]:             # opset 18: the axes padded
            given = [int(v) for v in self.const(node, 3, "axes").reshape(-1)]
            if any(not -4 <= v < 4 for v in given):
                raise self.fail(node, f"axes {given} do not fit a rank-4 tensor")
            axes = [v % 4 for v in given]
            if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
                raise self.fail(node, f"pads {pads} do not match axes {axes}")
            full = [0] * 8
            for i, ax in enumerate(axes):
                full[ax], full[4 + ax] = pads[i], pads[len(axes) + i]
            pads = full
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
            raise self.fail(node, f"pads {pads}: only H and W may be padded (N, C, H, W begins, "
                                  "then ends)", "pads")
        if min(pads) < 0:
            raise self.fail(node, f"pads {pads}: negative pads (cropping) are not supported",
                            "pads")
        with np.errstate(over="ignore"):
            if not math.isfinite(float(np.float32(value))):
                raise self.fail(node, f"the constant value {value:g} is not a finite float32")
        top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
        if mode == "constant" and value == 0 and self.only_reader(node.output[0], "Conv"):
            self.zero_pads[node.output[0]] = (top, left, bottom, right)
            self.values[node.output[0]] = x
            return
        f = {"pad": (top, left), "mode": modes[mode]}
        if (bottom, right) != (top, left):
            f["pad_end"] = (bottom, right)
        if mode == "constant":
            f["value"] = _f32_decimal(value)
        sg = self.shape_of(node, "pad", f, [x.sg])
        self.add_layer(_Layer("pad", [x.layer], f, {}, sg, node), node.output[0])

    def map_clip(self, node):
        """Clip with constant bounds: relu6 for [0, 6], relu for [0, inf), else clip."""
        a = self.attrs(node, ("min", "max"))          # opset < 11: attributes
        bounds = []
        for i, key, default in ((1, "min", -np.inf), (2, "max", np.inf)):
            if i < len(node.input) and node.input[i]:
                value = self.const(node, i, f"{key} bound")
                if value.size != 1:
                    raise self.fail(node, f"the {key} bound must be a scalar")
                bounds.append(_f32_decimal(value.reshape(())))
            else:
                bounds.append(_f32_decimal(a.get(key, default)))
        low, high = bounds
        for key, value in zip(("min", "max"), bounds):
            if math.isnan(value):
                raise self.fail(node, f"the {key} bound is NaN", key)
        if not low <= high:
            raise self.fail(node, f"min {low:g} is above max {high:g}", "max")
        if low == np.inf or high == -np.inf:             # every value becomes that infinity
            raise self.fail(node, f"the {'min' if low == np.inf else 'max'} bound is "
                                  f"{low if low == np.inf else high:g}: every output would be "
                                  "that infinity", "min" if low == np.inf else "max")
        if (low, high) == (0.0, 6.0):
            self.add_activation(node, "relu6", {})
        elif low == 0.0 and high == np.inf:
            self.map_relu(node, checked=True)
        elif np.isfinite(low) or np.isfinite(high):       # torch.clamp(x, min=...) or max=
            bounds = {k: v for k, v in (("min", low), ("max", high)) if np.isfinite(v)}
            self.add_activation(node, "clip", bounds)
        else:                                              # (-inf, inf): nothing to do
            self.values[node.output[0]] = self.image(node)

    def map_relu(self, node, checked: bool = False):
        if not checked:
            self.attrs(node, ())
        x = self.tensor(node, channels_last=True)
        self.add_layer(_Layer("relu", [x.layer], {}, {}, x.sg, node), node.output[0], x.shape,
                       x.channels_last)

    def map_add(self, node):
        if not self.map_affine(node):
            self.map_binary(node, "add")

    def map_mul(self, node):
        if self.match_gelu_tanh(node):
            return
        if not self.map_affine(node):
            self.map_binary(node, "mul")

    def map_sub_div(self, node):
        if node.op_type == "Div" and self.match_gelu(node):
            return
        if self.map_affine(node):
            return
        if node.op_type == "Sub":                       # a - b: add(a, affine(b) = -b)
            self.map_binary(node, "add", negate_second=True)
            return
        self.map_binary(node, "div")                    # a / b of two layer outputs

    def is_scalar(self, name: str, value: float) -> bool:
        """Tensor `name` is a constant holding one number, `value` (to 1e-6 of it)."""
        c = self.g.consts.get(name)
        return c is not None and c.size == 1 and abs(float(c.reshape(-1)[0]) - value) <= \
            1e-6 * value

    @staticmethod
    def other_input(node, name: str) -> str:
        """The input of a two-input node that is not `name`."""
        return node.input[1] if node.input[0] == name else node.input[0]

    def match_gelu(self, div) -> bool:
        """x / sqrt(2) -> Erf -> + 1 -> x * that -> * 0.5: GELU as exporters before opset 20
        write it (F.gelu); the nodes after the Div are absorbed into one gelu layer."""
        if len(div.input) != 2 or not self.is_scalar(div.input[1], math.sqrt(2.0)):
            return False
        x = div.input[0]
        erf = self.only_reader(div.output[0], "Erf")
        add = erf and self.only_reader(erf.output[0], "Add")
        mul = add and self.only_reader(add.output[0], "Mul")
        half = mul and self.only_reader(mul.output[0], "Mul")
        if not (half and self.is_scalar(self.other_input(add, erf.output[0]), 1.0)
                and self.other_input(mul, add.output[0]) == x
                and self.is_scalar(self.other_input(half, mul.output[0]), 0.5)):
            return False
        for n in (div, erf, add, mul, half):
            self.attrs(n, ())
        self.absorbed.update(id(n) for n in (erf, add, mul, half))
        self.add_activation(div, "gelu", {"approximate": "none"}, half.output[0])
        return True

    def match_gelu_tanh(self, square) -> bool:
        """x * x -> * x -> * 0.044715 -> x + that -> * sqrt(2 / pi) -> Tanh -> + 1 -> x * that
        -> * 0.5: GELU's tanh approximation as exporters before opset 20 write it
        (F.gelu(approximate="tanh")); the nodes after x * x are absorbed into one gelu layer."""
        def step(node, op_type, second):
            """The only reader of node's output, of op_type, whose other input passes `second`."""
            nxt = node and self.only_reader(node.output[0], op_type)
            if nxt is None or len(nxt.input) != (1 if op_type == "Tanh" else 2):
                return None
            if op_type == "Tanh" or second(self.other_input(nxt, node.output[0])):
                return nxt
            return None
        if len(square.input) != 2 or square.input[0] != square.input[1]:
            return False
        x = square.input[0]
        cube = step(square, "Mul", lambda n: n == x)
        scaled = step(cube, "Mul", lambda n: self.is_scalar(n, 0.044715))
        inner = step(scaled, "Add", lambda n: n == x)
        k = step(inner, "Mul", lambda n: self.is_scalar(n, math.sqrt(2.0 / math.pi)))
        tanh = step(k, "Tanh", None)
        plus1 = step(tanh, "Add", lambda n: self.is_scalar(n, 1.0))
        gated = step(plus1, "Mul", lambda n: n == x)
        half = step(gated, "Mul", lambda n: self.is_scalar(n, 0.5))
        if half is None:
            return False
        chain = (square, cube, scaled, inner, k, tanh, plus1, gated, half)
        for n in chain:
            self.attrs(n, ())
        self.absorbed.update(id(n) for n in chain[1:])
        self.add_activation(square, "gelu", {"approximate": "tanh"}, half.output[0])
        return True

    def map_prelu(self, node):
        """PRelu with a constant slope, one per channel or one for all: a prelu layer."""
        self.attrs(node, ())
        if len(node.input) != 2 or node.input[1] not in self.g.consts:
            raise self.fail(node, "needs a constant slope (input 1)")
        x = self.tensor(node)
        slope = self.g.consts[node.input[1]]
        shared = slope.size == 1
        v = self.per_channel(node, x, node.input[1])
        weight = (v[:1] if shared else v).astype(np.float32)
        index = self.add_layer(_Layer("prelu", [x.layer], {"shared": shared},
                                      {"weight": weight}, x.sg, node, relu=False),
                               node.output[0], x.shape)
        self.fuse_relu(index, node.output[0])

    def map_depth_to_space(self, node):
        """DepthToSpace in CRD mode (what torch.nn.PixelShuffle exports): pixel_shuffle."""
        a = self.attrs(node, ("blocksize", "mode"))
        mode = a.get("mode", "DCR")
        if mode != "CRD":
            raise self.fail(node, f"mode {mode} is not supported: squeezegen's pixel_shuffle is "
                                  "PyTorch's, DepthToSpace's CRD mode", "mode")
        if "blocksize" not in a:
            raise self.fail(node, "has no blocksize", "blocksize")
        x = self.image(node)
        f = {"factor": int(a["blocksize"])}
        sg = self.shape_of(node, "pixel_shuffle", f, [x.sg])
        self.add_layer(_Layer("pixel_shuffle", [x.layer], f, {}, sg, node), node.output[0])

    # where an op that squeezegen has no layer for is imported, as part of a pattern
    _PATTERNS = {
        "Pow": "inside a LayerNorm over the channels of a channels-last tensor, (x - mean) / "
               "sqrt(var + eps), as F.layer_norm exports it before opset 17",
        "Erf": "inside GELU, x * 0.5 * (1 + erf(x / sqrt(2))), as F.gelu exports it",
        "Abs": "inside Softsign, x / (1 + |x|), as nn.Softsign exports it",
        "Log": "right after a Sigmoid, log(sigmoid(x)), as nn.LogSigmoid exports it",
    }

    def map_pattern_only(self, node):
        if node.op_type == "Abs" and self.match_softsign(node):
            return
        where = self._PATTERNS["Pow" if node.op_type == "Sqrt" else node.op_type]
        raise self.fail(node, f"{node.op_type} is imported only {where}")

    def match_softsign(self, abs_node) -> bool:
        """x / (1 + |x|), as nn.Softsign exports it (Abs, an Add of 1, x divided by that): one
        softsign layer, the Add and the Div absorbed."""
        x, out = abs_node.input[0], abs_node.output[0]
        add = self.only_reader(out, "Add")
        div = add and self.only_reader(add.output[0], "Div")
        if not (div and len(add.input) == 2 and self.is_scalar(self.other_input(add, out), 1.0)
                and list(div.input) == [x, add.output[0]]):
            return False
        for n in (abs_node, add, div):
            self.attrs(n, ())
        self.absorbed.update((id(add), id(div)))
        self.add_activation(abs_node, "softsign", {}, div.output[0])
        return True

    def map_transpose(self, node):
        """x.permute(0, 2, 3, 1) of an image starts a channels-last stretch (the same layer,
        seen as N, H, W, C: ConvNeXt's LayerNorm and Linear layers over the channels) and
        x.permute(0, 3, 1, 2) ends it; other permutations are refused."""
        a = self.attrs(node, ("perm",))
        perm = [int(p) for p in a.get("perm", [])]
        x = self.tensor(node, channels_last=True)
        if perm == [0, 3, 1, 2] and x.channels_last:
            self.values[node.output[0]] = _Value(x.layer, x.sg, x.sg)
            return
        if perm == [0, 2, 3, 1] and not x.channels_last and len(x.shape) == 3 \
                and x.shape == x.sg:
            c, h, w = x.sg
            self.values[node.output[0]] = _Value(x.layer, (h, w, c), x.sg, True)
            return
        raise self.fail(node, f"perm {perm or 'reversed'} of a tensor [N, "
                              f"{', '.join(map(str, x.shape))}] is not supported: squeezegen "
                              "takes a permute(0, 2, 3, 1) of an N, C, H, W image to channels-"
                              f"last, through {CHANNELS_LAST_OPS}, and the permute(0, 3, 1, 2) "
                              "back (and the Transposes inside ShuffleNet's channel shuffle and "
                              "PixelUnshuffle)", "perm")

    def map_layernorm(self, node):
        """LayerNormalization over the last axis of a channels-last image (ConvNeXt's
        LayerNorm2d at opset 17): a layernorm layer, scale and B its weights; over C, H, W of
        an image (nn.LayerNorm([C, H, W])) with a scale and B per channel: a groupnorm of one
        group."""
        a = self.attrs(node, ("axis", "epsilon", "stash_type"))
        x = self.tensor(node, channels_last=True)
        axis = int(a.get("axis", -1))
        rank = len(x.shape) + 1
        if not -rank <= axis < rank:
            raise self.fail(node, f"axis {axis} does not fit a rank-{rank} tensor", "axis")
        image = not x.channels_last and axis % rank == 1 and len(x.shape) == 3 \
            and x.shape == x.sg
        if not image and (not x.channels_last or axis % rank != rank - 1):
            raise self.fail(node, f"a LayerNorm over axis {axis} of a tensor [N, "
                                  f"{', '.join(map(str, x.shape))}] is not supported: squeezegen's "
                                  "layernorm is over the channels of a channels-last image (the "
                                  "last axis after permute(0, 2, 3, 1), as ConvNeXt's "
                                  "LayerNorm2d), and a LayerNorm over C, H, W is a groupnorm of "
                                  "one group", "axis")
        hw = x.sg[1:] if image else None
        weights = {"weight": self.ln_vector(node, 1, "scale", x.sg[0], 1.0, hw),
                   "bias": self.ln_vector(node, 2, "B", x.sg[0], 0.0, hw)}
        if len(node.output) > 1 and any(o and (self.data_consumers(o) or o in self.g.outputs)
                                        for o in node.output[1:]):
            raise self.fail(node, "its Mean or InvStdDev output is used")
        eps = self.ln_eps(node, float(a.get("epsilon", 1e-5)))
        if image:
            self.add_layer(_Layer("groupnorm", [x.layer], {"groups": 1, "eps": eps}, weights,
                                  x.sg, node), node.output[0])
        else:
            self.add_layer(_Layer("layernorm", [x.layer], {"eps": eps}, weights, x.sg, node),
                           node.output[0], channels_last=True)

    def ln_vector(self, node, index: int, what: str, c: int, default: float,
                  hw: tuple[int, int] | None = None) -> np.ndarray:
        """A LayerNorm's scale or B (input `index`) as one value per channel: given as [C]; or,
        over C, H, W (`hw`), as [C, H, W] (or what broadcasts to it) that must not vary over H
        and W."""
        if index >= len(node.input) or not node.input[index]:
            return np.full((c,), default, np.float32)
        w = self.weight(node, index, what)
        if hw is not None:
            try:
                full = np.broadcast_to(w, (c,) + tuple(hw))
            except ValueError:
                raise self.fail(node, f"the {what} '{node.input[index]}' has shape "
                                      f"{list(w.shape)}, expected [{c}, {hw[0]}, {hw[1]}]") from None
            if not np.all(full == full[:, :1, :1]):
                raise self.fail(node, f"the {what} '{node.input[index]}' varies over H and W: a "
                                      "LayerNorm over C, H, W is imported as a groupnorm of one "
                                      "group, whose scale and shift are one per channel")
            w = full[:, 0, 0]
        elif w.size != c or (w.ndim and w.shape[-1] != c):
            raise self.fail(node, f"the {what} '{node.input[index]}' has shape {list(w.shape)}, "
                                  f"expected [{c}] (one per channel)")
        if not np.all(np.isfinite(w)):
            raise self.fail(node, f"the {what} '{node.input[index]}' is not finite")
        return np.ascontiguousarray(w.reshape(c), dtype=np.float32)

    def ln_eps(self, node, eps: float) -> float:
        """A LayerNorm's epsilon: the attribute of a LayerNormalization, or the constant that
        the Add `node` of the opset-13 chain adds to the variance."""
        eps = _f32_decimal(eps)                # ONNX stores a float32: 1e-06
        if not eps > 0 or not math.isfinite(eps):
            if node.op_type == "LayerNormalization":
                raise self.fail(node, f"epsilon {eps} must be a positive number", "epsilon")
            raise self.fail(node, f"adds {eps} to a LayerNorm's variance; the epsilon must be "
                                  "a positive number")
        return eps

    def match_layernorm(self, mean, x: _Value) -> bool:
        """F.layer_norm over the last axis before opset 17: mean = ReduceMean(x, -1);
        d = x - mean; var = ReduceMean(d ** 2, -1); d / sqrt(var + eps), then * scale and
        + B (constants), on a channels-last image: one layernorm layer, the chain absorbed."""
        xname = mean.input[0]

        def reader(tensor, op_type):
            n = self.only_reader(tensor, op_type)
            return n if n is not None and len(n.output) == 1 else None

        def last_axis(n):
            a = self.attrs(n, ("axes", "keepdims", "noop_with_empty_axes"))
            axes = a.get("axes")
            if axes is None and len(n.input) > 1 and n.input[1] in self.g.consts:
                axes = self.g.consts[n.input[1]].reshape(-1).tolist()
            return axes is not None and [int(v) for v in axes] in ([3], [-1]) \
                and int(a.get("keepdims", 1)) == 1
        sub = reader(mean.output[0], "Sub")
        if not last_axis(mean) or sub is None or list(sub.input) != [xname, mean.output[0]]:
            return False
        readers = self.data_consumers(sub.output[0])
        if sub.output[0] in self.g.outputs or len(readers) != 2 \
                or sorted(n.op_type for n in readers) != ["Div", "Pow"]:
            return False
        power, div = sorted(readers, key=lambda n: n.op_type, reverse=True)
        var = reader(power.output[0], "ReduceMean")
        plus = var and reader(var.output[0], "Add")
        root = plus and reader(plus.output[0], "Sqrt")
        if not (root and self.is_scalar(power.input[1], 2.0) and last_axis(var)
                and list(div.input) == [sub.output[0], root.output[0]]
                and self.only_reader(root.output[0], "Div") is div):
            return False
        eps_name = self.other_input(plus, var.output[0])
        eps = self.g.consts.get(eps_name)
        if eps is None or eps.size != 1:
            return False
        for n in (sub, power, plus, root, div):
            self.attrs(n, ())
        self.absorbed.update(id(n) for n in (sub, power, var, plus, root, div))
        c = x.sg[0]
        weights = {"weight": np.ones((c,), np.float32), "bias": np.zeros((c,), np.float32)}
        self.add_layer(_Layer("layernorm", [x.layer],
                              {"eps": self.ln_eps(plus, float(eps.reshape(-1)[0]))},
                              weights, x.sg, mean), div.output[0], channels_last=True)
        return True

    def map_affine(self, node) -> bool:
        """Add, Sub, Mul or Div of a layer output and a constant that is one number or one per
        channel ([C, 1, 1] or [1, C, 1, 1] for an image, [K] or [1, K] for a vector): an affine
        layer, x * weight + bias per channel (an input normalisation, a layer scale; after a
        conv, deconv or linear layer the fold pass folds it into that layer's weights). One
        that reads an affine layer made here and read by nothing else merges into it, so that
        (x - mean) / std is one layer. False when neither input is a constant."""
        self.attrs(node, ())
        if len(node.input) != 2:
            raise self.fail(node, f"expected two inputs, got {len(node.input)}")
        consts = [name in self.g.consts for name in node.input]
        if consts.count(True) != 1:
            return False
        i = consts.index(False)
        x = self.tensor(node, i, channels_last=True)
        if self.g.consts[node.input[1 - i]].size > 1 and not x.channels_last:
            x = self.features(node, i)                     # one per feature of a flattened image
        v = self.per_channel(node, x, node.input[1 - i])
        op = node.op_type
        if op == "Div" and i == 1:
            raise self.fail(node, "divides a constant by a layer output; squeezegen divides a "
                                  "layer output by a constant")
        if op == "Div" and not np.all(v != 0):
            raise self.fail(node, "divides by a constant that is zero in some channel")
        one, zero = np.ones_like(v), np.zeros_like(v)
        weight, bias = {"Add": (one, v), "Mul": (v, zero), "Div": (one / np.where(v, v, 1), zero),
                        "Sub": (one, -v) if i == 0 else (-one, v)}[op]
        with np.errstate(over="ignore", invalid="ignore"):      # out of range: refused below
            in_range = (np.all(np.isfinite(weight.astype(np.float32)))
                        and np.all(np.isfinite(bias.astype(np.float32))))
        if not in_range:
            raise self.fail(node, "the constant's scale or shift is beyond float32's range")
        before = self.layers[x.layer] if x.layer != _INPUT else None
        if (before is not None and before.op in ("affine", "groupnorm", "layernorm")
                and not before.relu
                and "weight" in before.weights and self.sole_reader_of_layer(x.layer) is node):
            with np.errstate(over="ignore", invalid="ignore"):
                merged = {"weight": (before.weights["weight"] * weight).astype(np.float32),
                          "bias": (before.weights["bias"] * weight + bias).astype(np.float32)}
            if not all(np.all(np.isfinite(v)) for v in merged.values()):
                raise self.fail(node, "merged with the affine before it, the scale or shift is "
                                      "beyond float32's range")
            before.weights = merged
            self.merged.add(id(node))
            self.values[node.output[0]] = _Value(x.layer, x.shape, x.sg, x.channels_last)
            self.fuse_relu(x.layer, node.output[0])
            return True
        index = self.add_layer(_Layer("affine", [x.layer], {}, {
            "weight": weight.astype(np.float32), "bias": bias.astype(np.float32)}, x.sg, node,
            relu=False), node.output[0], x.shape, x.channels_last)
        self.fuse_relu(index, node.output[0])
        return True

    def sole_reader_of_layer(self, layer: int):
        """The one node that reads layer `layer`'s output under any of its names (a Flatten or
        an Identity gives it another), when it has only that reader and is no graph output. A
        constant op already merged into the layer is part of it, not a reader (so a chain
        x * a + b, then * c, is one layer)."""
        names = [n for n, v in self.values.items() if v.layer == layer]
        if any(n in self.g.outputs for n in names):
            return None
        readers = [r for n in names for r in self.data_consumers(n) if id(r) not in self.merged]
        return readers[0] if len(readers) == 1 else None

    def per_channel(self, node, x: _Value, name: str) -> np.ndarray:
        """The constant `name`, an operand of a binary op with `x`, as one value per channel of
        `x`'s layer (float64); a ModelError that says which shapes squeezegen takes."""
        c = self.g.consts[name]
        if c.dtype.kind != "f":
            raise self.fail(node, f"the constant '{name}' has dtype {c.dtype}; it must be "
                                  "floating point")
        channels = x.sg[0]
        full = (1,) + tuple(x.shape)                            # ONNX's shape, batch first
        aligned = (1,) * (len(full) - c.ndim) + tuple(c.shape) if c.ndim <= len(full) else None
        # one per channel: the layer's channels are the tensor's axis 1 (not a reshaped view),
        # or a flattened C x 1 x 1 (a global pool's vector)
        channel_axis = x.shape == x.sg or (x.flattened and x.sg[1:] == (1, 1))
        per = aligned is not None and (c.size == 1 or (
            channel_axis and aligned[1] == channels and c.size == channels))
        if x.channels_last:            # channels-last: the channels are the last axis
            per = aligned is not None and (c.size == 1 or (aligned[-1] == channels
                                                           and c.size == channels))
        if not per:
            c0 = x.shape[0]
            want = (f"[{c0}, 1, 1] or [1, {c0}, 1, 1]" if len(x.shape) == 3
                    else f"[{c0}] or [1, {c0}]")
            if x.channels_last:
                want = f"[{channels}] for the last axis of a channels-last tensor"
            raise self.fail(node, f"the constant '{name}' has shape {list(c.shape)} against the "
                                  f"tensor's [N, {', '.join(map(str, x.shape))}]; squeezegen "
                                  f"takes one number or one per channel ({want})")
        if not np.all(np.isfinite(c)):
            raise self.fail(node, f"the constant '{name}' is not finite (inf or NaN)")
        return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,)).copy()

    def map_binary(self, node, op: str, negate_second: bool = False):
        """Add, Mul or Div of two layer outputs of one shape, or of a tensor and a per-channel
        [N, C, 1, 1] one (a squeeze-and-excitation scale), broadcast over the pixels, or a
        per-pixel [N, 1, H, W] one (a spatial attention map, an L2 norm), broadcast over the
        channels; either operand may be the broadcast one (a Div keeps their order).
        `negate_second`: a Sub, a + (-1 * b), the -1 an affine layer on b."""
        self.attrs(node, ())
        verb = {"add": "adds", "mul": "multiplies", "div": "divides"}[op]
        if len(node.input) != 2:
            raise self.fail(node, f"expected two inputs, got {len(node.input)}")
        for i, name in enumerate(node.input):
            if name in self.g.consts:
                c = self.g.consts[name]
                raise self.fail(node, f"{verb} the constant '{name}' (shape {list(c.shape)}): "
                                      f"squeezegen's {op} combines two layer outputs"
                                      + (" (a bias belongs in a Conv/Gemm)" if op == "add" else
                                         ""))
        a, b = (self.tensor(node, i, channels_last=True) for i in (0, 1))
        if a.channels_last != b.channels_last:
            raise self.fail(node, f"{verb} a channels-last tensor (a permute(0, 2, 3, 1) of an "
                                  "image) and an N, C, H, W one; permute one of them first")
        if negate_second and a.layer != b.layer and node.input[0] != node.input[1]:
            self.add_negation(node, b, node.output[0] + ":negated")
            b = self.values[node.output[0] + ":negated"]
        if node.input[0] == node.input[1] or a.layer == b.layer:
            itself = "subtracts a tensor from itself" if negate_second else {
                "add": "adds a tensor to itself", "mul": "multiplies a tensor by itself",
                "div": "divides a tensor by itself"}[op]
            raise self.fail(node, f"{itself}; squeezegen's {op} needs two different layers")
        big, small = (a, b) if len(a.shape) >= len(b.shape) and math.prod(a.shape) >= \
            math.prod(b.shape) else (b, a)
        per_channel = (len(big.shape) == 3 and small.sg == small.shape and big.sg == big.shape
                       and small.shape in ((big.shape[0], 1, 1), (1,) + big.shape[1:]))
        if a.channels_last:              # H, W, C: per pixel [H, W, 1], per channel [1, 1, C]
            per_channel = small.shape in (big.shape[:2] + (1,), (1, 1) + big.shape[2:])
        broadcast = len(big.shape) == 3 and small.shape in ((big.shape[0], 1, 1),
                                                             (1,) + big.shape[1:])
        if a.shape != b.shape and not per_channel and broadcast and not a.channels_last:
            odd = small if small.sg != small.shape else big
            raise self.fail(node, f"{verb} [N, {', '.join(map(str, big.shape))}] by [N, "
                                  f"{', '.join(map(str, small.shape))}], a broadcast squeezegen "
                                  "takes only between images its layers compute as such; the [N, "
                                  f"{', '.join(map(str, odd.shape))}] operand is a reshape of a "
                                  f"{'x'.join(map(str, odd.sg))} layer output (a [N, C] vector "
                                  "is taken back to [N, C, 1, 1] where it comes from a global "
                                  "pool through Linear layers and per-channel activations, each "
                                  "read by the next alone)")
        if a.shape != b.shape and not per_channel:
            raise self.fail(node, f"broadcasting {op} of shapes [N, {', '.join(map(str, a.shape))}]"
                                  f" and [N, {', '.join(map(str, b.shape))}] is not supported: "
                                  f"squeezegen's {op} needs two tensors of one shape, or a "
                                  "[N, C, 1, 1] or [N, 1, H, W] one with a [N, C, H, W] one")
        if a.sg != b.sg and not per_channel:
            raise self.fail(node, f"{verb} a flattened tensor and one of another "
                                  f"layout ({'x'.join(map(str, a.sg))} and "
                                  f"{'x'.join(map(str, b.sg))})")
        index = self.add_layer(_Layer(op, [a.layer, b.layer], {}, {}, big.sg, node, relu=False),
                               node.output[0], big.shape, a.channels_last)
        self.fuse_relu(index, node.output[0])

    def map_concat(self, node):
        a = self.attrs(node, ("axis",))
        if "axis" not in a:
            raise self.fail(node, "has no axis", "axis")
        ins = [self.tensor(node, i, channels_last=True) for i in range(len(node.input))]
        rank = len(ins[0].shape) + 1
        axis = self.axes_in(node, [a["axis"]], rank, "axis")[0]
        if len(ins) == 1 and ins[0].channels_last:
            self.values[node.output[0]] = ins[0]
            return
        if any(v.channels_last for v in ins):            # channels-last: the last axis
            if not all(v.channels_last for v in ins) or axis != 3:
                raise self.fail(node, "concatenates channels-last tensors along axis "
                                      f"{a['axis']}, or with N, C, H, W ones; squeezegen "
                                      "concatenates channels-last tensors only along the last "
                                      "axis (their channels)", "axis")
            if len({v.layer for v in ins}) != len(ins):
                raise self.fail(node, "lists the same tensor twice; squeezegen's concat needs "
                                      "different layers")
            sg = self.shape_of(node, "concat", {}, [v.sg for v in ins])
            self.add_layer(_Layer("concat", [v.layer for v in ins], {}, {}, sg, node),
                           node.output[0], channels_last=True)
            return
        if axis != 1:
            raise self.fail(node, f"concatenation along axis {a['axis']} is not supported: "
                                  "squeezegen concatenates channels (axis 1)", "axis")
        if len(ins) == 1:
            self.values[node.output[0]] = ins[0]
            return
        if len({v.layer for v in ins}) != len(ins):
            if rank != 4 or any(v.shape != v.sg for v in ins):
                raise self.fail(node, "lists the same tensor twice; squeezegen's concat needs "
                                      "different layers (it copies a repeated image, not a "
                                      "repeated vector or reshaped tensor)")
            ins = self.copies_of_repeats(node, ins)
        if any(len(v.shape) + 1 != rank for v in ins):
            raise self.fail(node, "concatenates tensors of different ranks")
        if rank not in (2, 4) or (rank == 4 and any(v.shape != v.sg for v in ins)):
            raise self.fail(node, "concatenates reshaped tensors ("
                                  + ", ".join("[N, " + ", ".join(map(str, v.shape)) + "]"
                                              for v in ins)
                                  + "); squeezegen concatenates C,H,W images or vectors")
        if rank == 2:
            kinds = {len(v.sg) for v in ins}
            if kinds == {3} and all(v.sg[1:] == (1, 1) for v in ins):
                pass                               # [C,1,1] layers: channel order = vector order
            elif kinds != {1}:
                raise self.fail(node, "concatenates flattened images "
                                      + ", ".join("x".join(map(str, v.sg)) for v in ins)
                                      + "; squeezegen can concatenate them only as C,H,W images "
                                        "(concatenate before the Flatten)")
        sg = self.shape_of(node, "concat", {}, [v.sg for v in ins])
        shape = (sum(v.shape[0] for v in ins),) + ins[0].shape[1:]
        self.add_layer(_Layer("concat", [v.layer for v in ins], {}, {}, sg, node),
                       node.output[0], shape)

    def vector(self, node, index: int = 0) -> _Value:
        x = self.tensor(node, index)
        if len(x.shape) != 1:
            raise self.fail(node, f"needs a 2-D input [N, features] (put a Flatten before it), "
                                  f"got [N, {', '.join(map(str, x.shape))}]")
        return x

    def linear(self, node, x: _Value, w: np.ndarray, b, tensor: str):
        if w.shape[1] != x.shape[0]:
            raise self.fail(node, f"the weight has {w.shape[1]} input features, the input "
                                  f"{x.shape[0]}")
        f = dict(out=int(w.shape[0]), bias=b is not None)
        sg = self.shape_of(node, "linear", f, [x.sg])
        weights = {"weight": np.ascontiguousarray(w)}
        if b is not None:
            weights["bias"] = np.ascontiguousarray(b)
        index = self.add_layer(_Layer("linear", [x.layer], f, weights, sg, node, relu=False),
                               tensor)
        self.fuse_relu(index, tensor)

    def bias_vector(self, node, c: np.ndarray, out: int, what: str):
        if c.dtype.kind != "f":
            raise self.fail(node, f"the {what} has dtype {c.dtype}; it must be floating point")
        if c.size == 1 or (c.ndim <= 2 and c.shape[-1] == out and c.size == out):
            return np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (out,)), dtype=np.float32)
        raise self.fail(node, f"the {what} has shape {list(c.shape)}; expected [{out}] "
                              f"(or [1, {out}])")

    def map_gemm(self, node):
        a = self.attrs(node, ("alpha", "beta", "transA", "transB"))
        for key in ("alpha", "beta"):
            if float(a.get(key, 1.0)) != 1.0:
                raise self.fail(node, f"{key} {a[key]} is not supported (only 1)", key)
        if int(a.get("transA", 0)) != 0:
            raise self.fail(node, "transA 1 is not supported (only 0)", "transA")
        x = self.vector(node, 0)
        w = self.weight(node, 1, "weight", 2)
        if int(a.get("transB", 0)) == 0:
            w = np.ascontiguousarray(w.T)
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = self.bias_vector(node, self.const(node, 2, "bias"), w.shape[0], "bias C")
        self.linear(node, x, w, b, node.output[0])

    def map_matmul(self, node):
        """MatMul by a constant [in, out] weight (+ an Add of a bias): a linear layer of a
        flattened input; of a channels-last image (nn.Linear over its channels, as in
        ConvNeXt's blocks) a 1x1 conv, still channels-last."""
        self.attrs(node, ())
        x = self.tensor(node, 0, channels_last=True)
        if not x.channels_last:
            x = self.vector(node, 0)
        w = np.ascontiguousarray(self.weight(node, 1, "weight", 2).T)
        tensor, b = node.output[0], None
        add = self.only_reader(tensor, "Add")
        if add is not None and len(add.input) == 2:
            other = add.input[1] if add.input[0] == tensor else add.input[0]
            if other in self.g.consts:
                b = self.bias_vector(add, self.g.consts[other], w.shape[0], "bias")
                self.attrs(add, ())
                self.absorbed.add(id(add))
                tensor = add.output[0]
        if not x.channels_last:
            self.linear(node, x, w, b, tensor)
            return
        if w.shape[1] != x.sg[0]:
            raise self.fail(node, f"the weight has {w.shape[1]} input features, the "
                                  f"channels-last input {x.sg[0]} channels")
        f = dict(out=int(w.shape[0]), kernel=(1, 1), stride=(1, 1), pad=(0, 0),
                 bias=b is not None)
        weights = {"weight": np.ascontiguousarray(w.reshape(w.shape + (1, 1)))}
        if b is not None:
            weights["bias"] = b
        sg = self.shape_of(node, "conv", f, [x.sg])
        index = self.add_layer(_Layer("conv", [x.layer], f, weights, sg, node, relu=False),
                               tensor, channels_last=True)
        self.fuse_relu(index, tensor)

    def map_softmax(self, node):
        """Softmax, and LogSoftmax as softmax `log: true`, over the channels."""
        a = self.attrs(node, ("axis",))
        x = self.tensor(node, channels_last=True)
        rank = len(x.shape) + 1
        axis = self.axes_in(node, [a.get("axis", -1 if self.opset >= 13 else 1)], rank,
                            "axis")[0]
        if x.channels_last:                  # over the last axis: the channels (opset 13+)
            if axis != 3 or self.opset < 13:
                raise self.fail(node, f"a softmax over axis {a.get('axis', 'default')} of a "
                                      "channels-last tensor is not supported (only over the "
                                      "last axis, its channels, at opset 13 or later)", "axis")
            fields = {"log": True} if node.op_type == "LogSoftmax" else {}
            self.add_layer(_Layer("softmax", [x.layer], fields, {}, x.sg, node), node.output[0],
                           channels_last=True)
            return
        reduced = {axis} if self.opset >= 13 else set(range(axis, rank))
        full = (-1,) + x.shape                    # the batch: never a dimension of size 1 here
        if x.flattened:
            x = self.features(node)               # over all C*H*W features: a flatten first
        if x.shape != x.sg and not x.flattened:
            raise self.fail(node, f"softmax over a tensor reshaped to [N, "
                                  f"{', '.join(map(str, x.shape))}] from a "
                                  f"{'x'.join(map(str, x.sg))} image is not supported: "
                                  "squeezegen has no reshape layer")
        if {d for d in reduced if full[d] != 1} != {d for d in (1,) if full[d] != 1}:
            raise self.fail(node, f"softmax over axis {a.get('axis', 'default')} of an input "
                                  f"of rank {rank} (opset {self.opset}) is not supported: "
                                  "squeezegen's softmax is over axis 1 (channels)", "axis")
        fields = {"log": True} if node.op_type == "LogSoftmax" else {}
        self.add_layer(_Layer("softmax", [x.layer], fields, {}, x.sg, node), node.output[0],
                       x.shape)

    def map_alias(self, node):
        """Identity and Dropout (inference): the output is the input."""
        if node.op_type == "Dropout":
            self.attrs(node, ("ratio", "seed", "is_test"))
            if len(node.input) > 2 and node.input[2]:
                mode = self.g.consts.get(node.input[2])
                if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                    raise self.fail(node, "training_mode is on (or not a constant); export the "
                                          "model in eval mode")
            if len(node.output) > 1 and node.output[1] and (
                    self.data_consumers(node.output[1]) or node.output[1] in self.g.outputs):
                raise self.fail(node, "the dropout mask output is used")
        else:
            self.attrs(node, ())
        self.values[node.output[0]] = self.tensor(node, channels_last=True)

    def map_expand(self, node):
        """Expand to the shape of the other operand of the Add or Mul that reads it
        (`gate.expand_as(x)`, then x * gate): a no-op, as those broadcast themselves."""
        self.attrs(node, ())
        x = self.tensor(node)
        shape = [int(d) for d in self.const(node, 1, "shape").reshape(-1)]
        full = (self.batch,) + x.shape
        try:
            out = tuple(np.broadcast_shapes(full, tuple(shape)))
        except ValueError:
            raise self.fail(node, f"cannot expand [N, {', '.join(map(str, x.shape))}] to "
                                  f"{shape}") from None
        if out == full:                           # expands nothing
            self.values[node.output[0]] = x
            return
        readers = self.data_consumers(node.output[0])
        for r in readers:
            other = self.other_input(r, node.output[0]) if len(r.input) == 2 else None
            if r.op_type in ("Add", "Mul", "Div") and other is not None \
                    and other not in self.values:
                self.expand_checks.append((node, r, other, out))   # mapped later in the file
                continue
            self.check_expand_reader(node, r, other, out)
        if not readers or node.output[0] in self.g.outputs:
            raise self.fail(node, "the expanded tensor is a graph output; squeezegen takes an "
                                  "Expand only where an Add or Mul reads it")
        self.values[node.output[0]] = x

    def epsilon(self, node, a: dict) -> float:
        """A normalisation's epsilon attribute (ONNX stores a float32: 1e-05 is written so),
        refused unless positive and finite."""
        eps = _f32_decimal(a.get("epsilon", 1e-5))
        if not 0 < eps < math.inf:
            raise self.fail(node, f"epsilon {eps} is not a positive finite float32", "epsilon")
        return eps

    def map_tile(self, node):
        """Tile of an image's channels only (`x.repeat(1, k, 1, 1)`, a grey image given to a
        3-channel network): the concat of k copies of it."""
        self.attrs(node, ())
        x = self.image(node)
        repeats = [int(r) for r in self.const(node, 1, "repeats").reshape(-1)]
        if len(repeats) != 4 or repeats[0] != 1 or repeats[2:] != [1, 1] or repeats[1] < 1:
            raise self.fail(node, f"repeats {repeats}: squeezegen tiles only the channels of "
                                  "an image ([1, k, 1, 1])")
        if repeats[1] == 1:
            self.values[node.output[0]] = x
            return
        ins = self.copies_of_repeats(node, [x] * repeats[1])
        sg = self.shape_of(node, "concat", {}, [v.sg for v in ins])
        self.add_layer(_Layer("concat", [v.layer for v in ins], {}, {}, sg, node),
                       node.output[0])

    def copies_of_repeats(self, node, ins: list) -> list:
        """`ins` with each image after its first occurrence replaced by a copy of it, a 1x1
        conv of identity weights (exact in fp32: x * 1 plus zeros), so that the concat reads
        different layers: torch.cat([x, x, x], 1), a grey image given to a 3-channel network."""
        seen, out = set(), []
        for k, v in enumerate(ins):
            if v.layer not in seen:
                seen.add(v.layer)
                out.append(v)
                continue
            c = v.sg[0]
            f = dict(out=c, kernel=(1, 1), stride=(1, 1), pad=(0, 0), bias=False)
            weights = {"weight": np.eye(c, dtype=np.float32).reshape(c, c, 1, 1)}
            name = f"{node.output[0]}#copy{k}"
            self.add_layer(_Layer("conv", [v.layer], f, weights, v.sg, node, relu=False), name)
            out.append(self.values[name])
        return out

    def check_expand_reader(self, node, reader, other, out: tuple) -> None:
        """Refuse Expand `node` unless `reader` is an Add, Mul or Div whose other operand, `other`,
        has the expanded shape `out` (so that it broadcasts by itself)."""
        v = self.values.get(other)
        if reader.op_type not in ("Add", "Mul", "Div") or v is None \
                or (self.batch,) + v.shape != out:
            x = self.values[node.input[0]]
            raise self.fail(node, f"expands [N, {', '.join(map(str, x.shape))}] to "
                                  f"{list(out)} for a {reader.op_type} (node "
                                  f"'{reader.name or reader.output[0]}'); squeezegen takes an "
                                  "Expand only where an Add or Mul with a tensor of the "
                                  "expanded shape reads it (they broadcast themselves)")

    def map_neg(self, node):
        """-x: an affine layer of weight -1 (it folds into a conv, deconv or linear before)."""
        self.attrs(node, ())
        index = self.add_negation(node, self.tensor(node, channels_last=True), node.output[0])
        self.fuse_relu(index, node.output[0])

    def add_negation(self, node, x: _Value, tensor: str) -> int:
        """An affine layer computing -x (weight -1, bias 0) as ONNX tensor `tensor` (Neg, and
        the second operand of a Sub of two layer outputs)."""
        minus = np.full((x.sg[0],), -1.0, np.float32)
        return self.add_layer(_Layer("affine", [x.layer], {}, {
            "weight": minus, "bias": np.zeros_like(minus)}, x.sg, node, relu=False),
            tensor, x.shape, x.channels_last)

    def map_reshape(self, node):
        """Flatten, Reshape, Squeeze, Unsqueeze: only flattening (or undoing one) is a no-op;
        ShuffleNet's channel shuffle (Reshape to 5-D, Transpose, Reshape) and PyTorch's pixel
        unshuffle (Reshape to 6-D, Transpose, Reshape) are one layer each."""
        x = self.tensor(node)
        full = (self.batch,) + x.shape
        if node.op_type == "Reshape" and (self.match_channel_shuffle(node, x, full)
                                          or self.match_pixel_unshuffle(node, x, full)):
            return
        if node.op_type == "Flatten":
            a = self.attrs(node, ("axis",))
            axis = int(a.get("axis", 1))
            if not -len(full) <= axis <= len(full):
                raise self.fail(node, f"axis {axis} is outside [-{len(full)}, {len(full)}] for "
                                      f"a tensor of rank {len(full)}", "axis")
            axis += len(full) if axis < 0 else 0
            if axis != 1:
                raise self.fail(node, f"Flatten with axis {a.get('axis')} is not supported (only "
                                      "axis 1: keep the batch, flatten the rest)", "axis")
            target = (self.batch, math.prod(x.shape))
        else:
            target = self.new_shape(node, full)
        if len(target) < 2 or target[0] != self.batch:
            raise self.fail(node, f"reshapes [N, {', '.join(map(str, x.shape))}] to "
                                  f"{list(target)}, which does not keep the batch dimension; "
                                  "squeezegen only supports flattening to [N, C*H*W] (in front of "
                                  "a linear layer)")
        if len(target) > 2 and x.shape == x.sg == (target[1],) and set(target[2:]) == {1}:
            x = self.vector_as_image(x)         # a gate [N, C] back to [N, C, 1, 1]: as C x 1 x 1
        # the values keep their order: the layer stays; what reads it checks the new shape
        self.values[node.output[0]] = _Value(x.layer, tuple(target[1:]), x.sg)

    # what computes the same per channel of a C vector and of a C x 1 x 1 image
    _PER_CHANNEL_OPS = ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "hardsigmoid",
                        "hardswish", "silu", "tanh", "elu", "gelu", "softplus", "mish", "selu",
                        "celu", "softsign", "logsigmoid", "affine", "batchnorm", "prelu")

    def vector_as_image(self, x: _Value) -> _Value:
        """`x`, a [C] vector computed from global pools' C' x 1 x 1 outputs through linear
        layers, per-channel ops and adds or muls of two such vectors (a squeeze-and-excitation
        gate, fc(pool(x).view(N, C')); CBAM's channel gate, mlp(avgpool(x)) + mlp(maxpool(x))),
        as the same values seen as a C x 1 x 1 image: each linear becomes the 1x1 conv it is on
        a C' x 1 x 1 input, the others keep their op. Only where each layer of those chains is
        read by the next alone; else `x` unchanged."""
        chain, todo = [], [x.layer]
        while todo:
            i = todo.pop()
            layer = self.layers[i] if i != _INPUT else None
            if layer is not None and len(layer.sg) == 1 and (
                    layer.op in ("linear",) + self._PER_CHANNEL_OPS
                    or (layer.op in ("add", "mul") and len(layer.inputs) == 2)):
                if i not in chain:
                    chain.append(i)
                    todo.extend(layer.inputs if layer.op in ("add", "mul") else layer.inputs[:1])
                continue
            source = self.input_shape if layer is None else layer.sg
            if len(source) != 3 or source[1:] != (1, 1):
                return x
        if not chain or not any(self.layers[j].op == "linear" for j in chain) \
                or any(self.chain_readers(j) != 1 for j in chain):
            return x
        for j in chain:
            layer = self.layers[j]
            c = layer.sg[0]
            if layer.op == "linear":
                w = layer.weights["weight"]
                layer.op = "conv"
                layer.fields = dict(out=c, kernel=(1, 1), stride=(1, 1), pad=(0, 0),
                                    bias=layer.fields["bias"])
                layer.weights = dict(layer.weights, weight=np.ascontiguousarray(
                    w.reshape(w.shape + (1, 1))))
            layer.sg = (c, 1, 1)
            for name, v in list(self.values.items()):       # every name of it: flattened now
                if v.layer == j:
                    self.values[name] = _Value(j, v.shape, layer.sg, v.channels_last)
        return _Value(x.layer, x.shape, self.layers[x.layer].sg)

    def chain_readers(self, layer: int) -> int:
        """How many nodes read layer `layer`'s output under any of its names, apart from the
        nodes merged or fused into it (a graph output is no reader: it takes either layout)."""
        names = [n for n, v in self.values.items() if v.layer == layer]
        return len({id(r) for n in names for r in self.data_consumers(n)
                    if id(r) not in self.absorbed and id(r) not in self.merged})

    def match_channel_shuffle(self, node, x: _Value, full: tuple[int, ...]) -> bool:
        """x.view(N, G, C / G, H, W).transpose(1, 2): a channel_shuffle layer, whose output in
        memory order is the transposed view's (so the Reshape back to N, C, H, W that follows
        is a no-op, like a flattening); the Transpose is absorbed."""
        if len(x.shape) != 3 or x.shape != x.sg:
            return False
        target = self.new_shape(node, full)
        c, h, w = x.shape
        if len(target) != 5 or target[0] != self.batch or target[3:] != (h, w) \
                or target[1] * target[2] != c:
            return False
        transpose = self.only_reader(node.output[0], "Transpose")
        if transpose is None or len(transpose.output) != 1:
            return False
        perm = [int(p) for p in self.attrs(transpose, ("perm",)).get("perm", [])]
        if perm != [0, 2, 1, 3, 4]:
            return False
        self.absorbed.add(id(transpose))
        f = {"groups": int(target[1])}
        self.add_layer(_Layer("channel_shuffle", [x.layer], f, {}, x.sg, node),
                       transpose.output[0], (target[2], target[1], h, w))
        return True

    def match_pixel_unshuffle(self, node, x: _Value, full: tuple[int, ...]) -> bool:
        """x.view(N, C, H / r, r, W / r, r).permute(0, 1, 3, 5, 2, 4), what
        F.pixel_unshuffle exports: a pixel_unshuffle layer, whose output in memory order is the
        permuted view's (so the Reshape to N, C * r * r, H / r, W / r that follows is a no-op);
        the Transpose is absorbed."""
        if len(x.shape) != 3 or x.shape != x.sg:
            return False
        target = self.new_shape(node, full)
        c, h, w = x.shape
        if len(target) != 6 or target[0] != self.batch or target[1] != c:
            return False
        r = target[3]
        if target[5] != r or r < 1 or target[2] * r != h or target[4] * r != w:
            return False
        transpose = self.only_reader(node.output[0], "Transpose")
        if transpose is None or len(transpose.output) != 1:
            return False
        perm = [int(p) for p in self.attrs(transpose, ("perm",)).get("perm", [])]
        if perm != [0, 1, 3, 5, 2, 4]:
            return False
        self.absorbed.add(id(transpose))
        sg = self.shape_of(node, "pixel_unshuffle", {"factor": r}, [x.sg])
        self.add_layer(_Layer("pixel_unshuffle", [x.layer], {"factor": r}, {}, sg, node),
                       transpose.output[0], (c, r, r, h // r, w // r))
        return True

    def map_slice(self, node):
        """Slice of a layer output's channels (axis 1) with step 1: a `slice` layer (all of them:
        the same tensor); of an image's rows and columns (axes 2, 3; U-Net's crop before a
        skip concat): a `crop` layer after it; with steps over them (x[:, :, ::2, ::2]), a
        crop to the rows and columns from the first taken, then a max pool of kernel 1 whose
        stride is the step (`add_strided`). With a step over an image's channels (x[:, ::2],
        x.flip(1)): the channels taken, as a Gather's (`add_channels`). Slices of the batch,
        and steps over the batch or below 1 over the rows or columns, are refused."""
        x = self.tensor(node)
        if self.opset < 10:
            a = self.attrs(node, ("starts", "ends", "axes"))
            starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
        else:
            self.attrs(node, ())
            parts = []
            for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
                name = node.input[i] if i < len(node.input) else ""
                if name and name not in self.g.consts:
                    raise self.fail(node, f"the {what} '{name}' must be a constant")
                parts.append([int(v) for v in self.g.consts[name].reshape(-1)] if name else None)
            starts, ends, axes, steps = parts
        if starts is None or ends is None or len(starts) != len(ends):
            raise self.fail(node, "needs starts and ends of one length")
        rank = 1 + len(x.shape)
        axes = list(range(len(starts))) if axes is None else [int(ax) for ax in axes]
        if any(not -rank <= ax < rank for ax in axes) or len(axes) != len(starts):
            raise self.fail(node, f"axes {axes} do not fit a rank-{rank} tensor")
        steps = [1] * len(starts) if steps is None else [int(st) for st in steps]
        if len(steps) != len(starts):
            raise self.fail(node, f"steps {steps} do not match axes {axes}", "steps")
        full = (self.batch,) + x.shape
        channels = (0, full[1])                        # or a list of those picked, in order
        rows_cols = {}                                 # axis 2 or 3: its (start, stop, step)
        for ax, start, end, step in zip(axes, starts, ends, steps):
            ax %= rank
            image = ax >= 2 and x.shape == x.sg and not x.channels_last
            if ax == 1 and step not in (0, 1) and len(x.shape) == 3 and x.shape == x.sg \
                    and not x.channels_last:           # x[:, ::2], x.flip(1): BGR <-> RGB
                channels = _picked(int(start), int(end), step, full[1])
                if not channels:
                    raise self.fail(node, f"takes no channels (starts {starts}, ends {ends}, "
                                          f"steps {steps})")
                continue
            if step != 1 and (step < 1 or not image):
                where = ("a reversal" if step < 0 else "a step of 0") if step < 1 else \
                    ("over the batch" if ax == 0 else "over the channels" if ax == 1 else
                     "over the rows or columns of a reshaped tensor")
                raise self.fail(node, f"steps {steps}: step {step} on axis {ax} is {where}; "
                                      "squeezegen takes steps of 1 or more over the rows and "
                                      "columns of an N, C, H, W image only (x[:, :, ::2, ::2])",
                                "steps")
            span = _clamped(int(start), int(end), full[ax])
            if ax == 1:
                channels = span
            elif span == (0, full[ax]) and step == 1:
                continue
            elif not image:
                where = "batch" if ax == 0 else "rows or columns of a reshaped tensor"
                raise self.fail(node, f"slices the {where} (axis {ax}, {span[0]}..{span[1]} of "
                                      f"{full[ax]}); squeezegen slices channels, and crops the "
                                      f"rows and columns of an N, C, H, W image")
            else:
                rows_cols[ax] = span + (step,)
        add = self.add_channels if isinstance(channels, list) else self.add_slice
        if not rows_cols:
            add(node, x, channels, node.output[0])
            return
        sliced = node.output[0] + "#channels"
        add(node, x, channels, sliced)
        if any(step != 1 for _, _, step in rows_cols.values()):
            whole = channels == (0, full[1])
            self.add_strided(node, self.values[sliced], rows_cols, node.output[0], whole)
            return
        self.add_crop(node, self.values[sliced], {ax: (start, stop) for ax, (start, stop, _)
                                                  in rows_cols.items()}, node.output[0])

    def add_strided(self, node, x: _Value, rows_cols: dict, tensor: str, whole: bool) -> None:
        """x[:, :, a:b:s, c:d:t] of image `x` ({2: (a, b, s), 3: (c, d, t)}): a crop to rows a..b
        and columns c..d (where they are not all of them), then a max pool of kernel 1, stride
        (s, t), no padding, floor mode: ceil((b - a) / s) rows, rows a, a + s, ... of `x`,
        each value itself (exact; a NaN stays NaN). PyTorch exports one Slice per axis: a
        Slice over the other axis of such an output (`whole`: of all its channels) is taken
        from the first's input, so that x[:, :, ::2, ::2] is one pool (the first's layers stay
        only if something else reads them; the crop is a layer of its own, never merged into a
        crop before it, which that composition may still read)."""
        before = self.strided.get(node.input[0])
        if whole and before is not None and self.values.get(node.input[0]) is x \
                and not set(before[1]) & set(rows_cols):
            x, rows_cols = before[0], {**before[1], **rows_cols}
        spans = {ax: (start, stop) for ax, (start, stop, _) in rows_cols.items()
                 if (start, stop) != (0, x.sg[ax - 1])}
        source = x
        if spans:
            self.add_crop(node, x, spans, tensor + "#crop", merge=False)
            source = self.values[tensor + "#crop"]
        stride = tuple(rows_cols.get(ax, (0, 0, 1))[2] for ax in (2, 3))
        f = dict(kernel=(1, 1), stride=stride, pad=(0, 0), ceil_mode=False)
        sg = self.shape_of(node, "maxpool", f, [source.sg])
        self.add_layer(_Layer("maxpool", [source.layer], f, {}, sg, node), tensor)
        self.strided[tensor] = (x, rows_cols)

    def add_crop(self, node, x: _Value, rows_cols: dict, tensor: str, merge: bool = True) -> None:
        """A `crop` of image `x` to rows_cols {2: (start, stop) of the rows, 3: of the
        columns}; `merge`: into the crop that computes `x` where only `node` reads it."""
        _, h, w = x.sg
        (top, stop_h), (left, stop_w) = rows_cols.get(2, (0, h)), rows_cols.get(3, (0, w))
        if not (top < stop_h and left < stop_w):
            raise self.fail(node, f"takes no rows or columns ({top}..{stop_h}, {left}..{stop_w})")
        sides = (top, left, h - stop_h, w - stop_w)
        sg = (x.sg[0], stop_h - top, stop_w - left)
        before = self.layers[x.layer] if x.layer != _INPUT else None
        if merge and before is not None and before.op == "crop" \
                and self.values.get(node.input[0]) is x and self.only_reader(node.input[0]) is node:
            # a crop of a crop that nothing else reads (PyTorch exports one Slice per axis): one
            before.fields["crop"] = [a + b for a, b in zip(before.fields["crop"], sides)]
            before.sg = sg
            self.values[tensor] = _Value(x.layer, sg, sg, False)
            return
        f = {"crop": list(sides)}
        self.add_layer(_Layer("crop", [x.layer], f, {}, sg, node), tensor, sg)

    def map_split(self, node):
        """Split of a layer output's channels (axis 1): one `slice` layer per part."""
        a = self.attrs(node, ("axis", "split", "num_outputs"))
        x = self.tensor(node)
        rank = 1 + len(x.shape)
        axis = int(a.get("axis", 0))
        if not -rank <= axis < rank or axis % rank != 1:
            raise self.fail(node, f"splits axis {axis}; squeezegen splits only channels (axis 1)",
                            "axis")
        c = x.shape[0]
        sizes = a.get("split")
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in self.const(node, 1, "split sizes").reshape(-1)]
        outs = [o for o in node.output]
        if sizes is None:
            parts = int(a.get("num_outputs", len(outs)))
            step = -(-c // parts)
            sizes = [min(step, c - i * step) for i in range(parts)]
        sizes = [int(v) for v in sizes]
        if len(sizes) != len(outs) or sum(sizes) != c or min(sizes) < 0:
            raise self.fail(node, f"split sizes {sizes} do not divide the {c} channels into "
                                  f"{len(outs)} parts")
        start = 0
        for out, size in zip(outs, sizes):
            if out and size:
                self.add_slice(node, x, (start, start + size), out)
            start += size

    def map_gather(self, node):
        """Gather of an image's channels by constant indices: x[:, i] (a scalar index: the
        channel as [N, H, W], for an Unsqueeze back or a Flatten, as a channel reduction
        without keepdims), x[:, 1:2] as a list, x[:, [2, 1, 0]]: a `slice` layer per run of
        consecutive indices, concatenated where there are several. GoogLeNet's and
        Inception-v3's transform_input gathers each input channel so."""
        a = self.attrs(node, ("axis",))
        x = self.tensor(node)
        rank = 1 + len(x.shape)
        axis = self.axes_in(node, [a.get("axis", 0)], rank, "axis")[0]
        if axis != 1 or len(x.shape) != 3 or x.shape != x.sg:
            raise self.fail(node, f"gathers axis {axis} of a [N, {', '.join(map(str, x.shape))}]"
                                  " tensor; squeezegen gathers only the channels (axis 1) of an"
                                  " N, C, H, W image (x[:, 0], x[:, [2, 1, 0]])", "axis")
        indices = self.const(node, 1, "indices")
        c = x.shape[0]
        if indices.dtype.kind not in "iu" or indices.ndim > 1 or indices.size == 0 \
                or not np.all((-c <= indices) & (indices < c)):
            raise self.fail(node, f"indices {indices.reshape(-1).tolist()[:8]} (shape "
                                  f"{list(indices.shape)}): expected one integer index or a "
                                  f"list of them within [-{c}, {c - 1}]")
        self.add_channels(node, x, [int(i) % c for i in indices.reshape(-1)], node.output[0])
        if indices.ndim == 0:                          # [N, H, W]: the same values
            v = self.values[node.output[0]]
            self.values[node.output[0]] = _Value(v.layer, v.sg[1:], v.sg)

    def add_channels(self, node, x: _Value, picked: list[int], tensor: str) -> None:
        """Channels `picked` of image `x`, in that order (repeats allowed): a `slice` layer per
        run of consecutive ascending ones, concatenated where there are several."""
        runs = [[picked[0], picked[0] + 1]]
        for i in picked[1:]:
            if i == runs[-1][1]:
                runs[-1][1] += 1
            else:
                runs.append([i, i + 1])
        if len(runs) == 1:
            self.add_slice(node, x, tuple(runs[0]), tensor)
            return
        for k, (start, stop) in enumerate(runs):
            self.add_slice(node, x, (start, stop), f"{tensor}#{k}")
        parts = [self.values[f"{tensor}#{k}"] for k in range(len(runs))]
        sg = self.shape_of(node, "concat", {}, [v.sg for v in parts])
        self.add_layer(_Layer("concat", [v.layer for v in parts], {}, {}, sg, node), tensor)

    def add_slice(self, node, x: _Value, channels: tuple[int, int], tensor: str) -> None:
        start, stop = channels
        if (start, stop) == (0, x.shape[0]):
            self.values[tensor] = x                     # the whole tensor
            return
        if not start < stop:
            raise self.fail(node, f"takes no channels ({start}..{stop})")
        if x.shape != x.sg and not (x.flattened and x.sg[1:] == (1, 1)):
            raise self.fail(node, f"slices a reshaped tensor [N, {', '.join(map(str, x.shape))}]"
                                  f" (the layer is {'x'.join(map(str, x.sg))})")
        f = {"channels": (start, stop)}
        sg = (stop - start,) + x.sg[1:]
        self.add_layer(_Layer("slice", [x.layer], f, {}, sg, node), tensor,
                       (stop - start,) + x.shape[1:])

    def new_shape(self, node, full: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape of a Reshape / Squeeze / Unsqueeze of a `full`-shaped tensor."""
        ins = []
        for name in node.input[1:]:
            if name and name not in self.g.consts:
                raise self.fail(node, f"the target shape (or axes) '{name}' must be a constant")
            ins.append(self.g.consts[name] if name else None)
        op = node.op_type
        a = self.attrs(node, ("allowzero",) if op == "Reshape" else ("axes",))
        if op == "Reshape":
            if not ins or ins[0] is None:
                raise self.fail(node, "has no target shape")
            target = [int(v) for v in ins[0].reshape(-1)]
            if not a.get("allowzero", 0):
                target = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(target)]
            if target.count(-1) > 1 or any(d < -1 for d in target):
                raise self.fail(node, f"invalid target shape {target}")
            if -1 in target:
                known = math.prod(d for d in target if d != -1)
                total = math.prod(full)
                if known == 0 or total % known:
                    raise self.fail(node, f"cannot reshape {list(full)} to {target}")
                target[target.index(-1)] = total // known
            if math.prod(target) != math.prod(full):
                raise self.fail(node, f"cannot reshape {list(full)} to {target}")
            return tuple(target)
        axes = a.get("axes")
        if axes is None and ins and ins[0] is not None:
            axes = [int(v) for v in ins[0].reshape(-1)]
        if op == "Squeeze":
            if axes is None:
                axes = [i for i, d in enumerate(full) if d == 1]
            axes = set(self.axes_in(node, axes, len(full)))
            if any(full[ax] != 1 for ax in axes):
                raise self.fail(node, f"squeezes an axis of {list(full)} that is not 1", "axes")
            return tuple(d for i, d in enumerate(full) if i not in axes)
        if axes is None:
            raise self.fail(node, "has no axes", "axes")
        shape = list(full)
        for ax in sorted(self.axes_in(node, axes, len(full) + len(axes))):
            shape.insert(ax, 1)
        return tuple(shape)
