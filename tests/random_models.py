"""A seeded generator of small, valid, odd-shaped models over every op of the model language.

Used to fuzz the passes, the planner, the code generator (nvcc) and, on the GPU, the generated
kernels against the reference. Shapes are kept small so hundreds of models run in seconds.
"""
from __future__ import annotations

import random

from squeezegen.ir.ops import conv_out_size, deconv_out_size, pool_out_size


def _pair(rng, low, high):
    a = rng.randint(low, high)
    return a if rng.random() < 0.6 else [a, rng.randint(low, high)]


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _activation(rng) -> str:
    """An activation layer's op and fields: relu half of the time, else another one."""
    if rng.random() < 0.5:
        return "relu"
    kind = rng.choice(["relu6", "clip", "leaky_relu", "sigmoid", "hardsigmoid", "hardswish",
                       "silu", "tanh", "elu", "gelu", "softplus", "mish", "prelu", "selu",
                       "celu", "softsign", "logsigmoid"])
    if kind == "prelu" and rng.random() < 0.5:
        return "prelu, shared: true"
    if kind in ("elu", "celu") and rng.random() < 0.5:
        return f"{kind}, alpha: {rng.choice([0.5, 2.0])}"
    if kind == "gelu" and rng.random() < 0.5:
        return "gelu, approximate: tanh"
    if kind == "clip":
        low = rng.choice([-1.0, -0.5, 0.0])
        return f"clip, min: {low}, max: {rng.choice([0.5, 1.0, 6.0])}"
    if kind == "leaky_relu" and rng.random() < 0.5:
        return f"leaky_relu, negative_slope: {rng.choice([0.1, 0.2, -0.3])}"
    return kind


def _conv_extras(rng, cin, out, size, kernel, stride, pad, out_size):
    """The pad field of a conv, and sometimes groups, a dilation or asymmetric pads: (text,
    output height, output width)."""
    from math import gcd
    groups = [g for g in range(2, gcd(cin, out) + 1) if cin % g == 0 and out % g == 0]
    text = ""
    if groups and rng.random() < 0.3:
        text += f"groups: {rng.choice(groups)}, "
    dil = (rng.randint(1, 3), rng.randint(1, 3)) if rng.random() < 0.25 else (1, 1)
    end = [rng.randint(0, kernel[0]), rng.randint(0, kernel[1])] if rng.random() < 0.25 else pad
    ho, wo = ((n + b + e - d * (k - 1) - 1) // st + 1 for n, b, e, d, k, st in
              zip(size, pad, end, dil, kernel, stride))
    if ho < 1 or wo < 1:                 # the extras do not fit: a plain conv
        return f"{text}pad: {pad}, ", out_size[0], out_size[1]
    if dil != (1, 1):
        text += f"dilation: {list(dil)}, "
    pads = pad + end if end != pad else pad
    return f"{text}pad: {pads}, ", ho, wo


def _every_window_has_a_tap(n, k, s, p, d, ceil) -> bool:
    """A dilated pool fits an axis of size n, and each of its windows has a tap inside the
    input (else its max is -inf, as in PyTorch: valid, but NaN downstream in a fuzz model)."""
    out = pool_out_size(n, (k - 1) * d + 1, s, p, ceil)
    return out >= 1 and all(any(0 <= o * s - p + t * d < n for t in range(k))
                            for o in range(out))


def random_model(seed: int, wide: bool = False) -> str:
    """YAML text of a random valid model (image ops first, maybe a linear head). `wide` models
    have up to 160 channels and 40 pixels a side, so that the wide GEMM tile and split-K are
    scheduled too."""
    rng = random.Random(seed)
    bn_rng = random.Random(seed * 7919 + 1)   # BatchNorms: their own draws, so that adding them
                                             # left the other layers' draws as they were
    act_rng = random.Random(seed * 104729 + 2)   # which activation a `relu` layer becomes
    conv_rng = random.Random(seed * 15485863 + 3)  # groups, dilation, asymmetric pads
    more_rng = random.Random(seed * 32452843 + 4)  # SE blocks, resizes, pool variants
    affine_rng = random.Random(seed * 49979687 + 5)  # per-channel scale and shift layers
    deconv_rng = random.Random(seed * 67867967 + 6)  # deconv output_padding
    flat_rng = random.Random(seed * 86028121 + 7)    # a flattened image output
    log_rng = random.Random(seed * 7919 + 3)         # a softmax in its log form
    gn_rng = random.Random(seed * 104729 + 9)        # group, instance and layer norms
    attention_rng = random.Random(seed * 130363 + 11)  # channel reductions, pixel broadcasts
    window_rng = random.Random(seed * 179424673 + 13)  # grouped deconvs, dilated max pools,
                                                       # pixel unshuffles
    crop_rng = random.Random(seed * 198491317 + 17)    # crops
    most = 160 if wide else 9
    c, h, w = rng.randint(1, 6), rng.randint(5, 19), rng.randint(5, 19)
    if wide:
        c, h, w = rng.randint(3, 70), rng.randint(12, 40), rng.randint(12, 40)
    shapes = {"input": (c, h, w)}
    order = ["input"]
    lines = [f"name: rand{seed}", f"input: {{shape: [{c}, {h}, {w}]}}", "layers:"]
    used: set[str] = set()

    def emit(name, text, shape, src):
        lines.append(f"  - {{name: {name}, {text}}}")
        shapes[name] = shape
        order.append(name)
        used.update(src)

    def maybe_batchnorm(kind):
        """A BatchNorm after a conv or deconv (folded, or in its store after its ReLU) or a
        pool, an add, an activation (in their stores), sometimes."""
        last = order[-1]
        if kind in ("conv", "deconv", "maxpool", "avgpool", "add", "relu") \
                and shapes[last] is not None \
                and last != "input" and bn_rng.random() < 0.3:
            eps = bn_rng.choice(["1.0e-5", "0.001", "0.1"])
            relu = bn_rng.choice(["true", "false"])
            emit(f"{last}_bn", f"op: batchnorm, input: {last}, eps: {eps}, relu: {relu}",
                 shapes[last], [last])
        elif kind in ("conv", "deconv", "maxpool", "add") and shapes[last] is not None \
                and last != "input" and affine_rng.random() < 0.12:
            relu = affine_rng.choice(["true", "false"])      # folded after a conv or deconv
            emit(f"{last}_affine", f"op: affine, input: {last}, relu: {relu}", shapes[last],
                 [last])
        elif kind in ("conv", "deconv", "add") and shapes[last] is not None \
                and len(shapes[last]) == 3 and last != "input" and gn_rng.random() < 0.1:
            c_ = shapes[last][0]                 # instance norm, group norm or layer norm
            groups = gn_rng.choice([d for d in range(1, c_ + 1) if c_ % d == 0])
            extra = gn_rng.choice(["", ", affine: false", ", eps: 0.001"])
            if window_rng.random() < 0.3:                 # ConvNeXt's, over the channels
                emit(f"{last}_ln", f"op: layernorm, input: {last}{extra.replace('0.001', '1.0e-6')}",
                     shapes[last], [last])
                return
            emit(f"{last}_gn", f"op: groupnorm, input: {last}, groups: {groups}{extra}",
                 shapes[last], [last])

    def maybe_more():
        """Sometimes, after an image layer: a squeeze-and-excitation block (global pool, 1x1
        conv, gate, broadcast mul), a resize, an avgpool without counting its padding, or a
        broadcast add of a global max pool."""
        last = order[-1]
        if shapes[last] is None or len(shapes[last]) != 3:
            return
        c, h, w = shapes[last]
        if attention_rng.random() < 0.04:        # CBAM's spatial attention: channel mean,
            mode = attention_rng.choice(["mean", "max", "l2"])   # max or norm, a 1-channel
            emit(f"{last}_cr", f"op: reduce_channels, input: {last}, mode: {mode}", (1, h, w),
                 [last])                                         # gate, a mul, add or div
            emit(f"{last}_sg", f"op: sigmoid, input: {last}_cr", (1, h, w), [f"{last}_cr"])
            op = attention_rng.choice(["mul", "add", "div"])
            pair = f"{last}, {last}_sg" if op == "div" else f"{last}_sg, {last}"  # by the gate
            emit(f"{last}_sa", f"op: {op}, inputs: [{pair}]", (c, h, w), [last, f"{last}_sg"])
            return
        if crop_rng.random() < 0.04 and h > 3 and w > 3:   # rows and columns cropped
            sides = [crop_rng.randint(0, (h if i % 2 == 0 else w) // 3) for i in range(4)]
            emit(f"{last}_crop", f"op: crop, input: {last}, crop: {sides}",
                 (c, h - sides[0] - sides[2], w - sides[1] - sides[3]), [last])
            return
        if window_rng.random() < 0.05:                  # constant, reflection, edge padding
            mode = window_rng.choice(["constant", "reflect", "replicate"])
            sides = [window_rng.randint(0, min(3, (h if i % 2 == 0 else w) - 1))
                     for i in range(4)]
            value = f", value: {window_rng.choice([0.0, -1.0, 2.5])}" if mode == "constant" else ""
            emit(f"{last}_pad", f"op: pad, input: {last}, pad: {sides}, mode: {mode}{value}",
                 (c, h + sides[0] + sides[2], w + sides[1] + sides[3]), [last])
            return
        r = window_rng.choice([2, 3])
        if window_rng.random() < 0.05 and h % r == 0 and w % r == 0 and c * r * r <= 2 * most:
            emit(f"{last}_un", f"op: pixel_unshuffle, input: {last}, factor: {r}",
                 (c * r * r, h // r, w // r), [last])
            return
        draw = more_rng.random()
        if draw < 0.12:
            gate = more_rng.choice(["sigmoid", "hardsigmoid"])
            emit(f"{last}_sq", f"op: avgpool, input: {last}, global: true", (c, 1, 1), [last])
            emit(f"{last}_ex", f"op: conv, input: {last}_sq, out: {c}, kernel: 1", (c, 1, 1),
                 [f"{last}_sq"])
            emit(f"{last}_gate", f"op: {gate}, input: {last}_ex", (c, 1, 1), [f"{last}_ex"])
            emit(f"{last}_se", f"op: mul, inputs: [{last}, {last}_gate]", (c, h, w),
                 [last, f"{last}_gate"])
        elif draw < 0.22:
            mode = more_rng.choice(["bilinear", "nearest"])
            coords = more_rng.choice(["half_pixel", "pytorch_half_pixel", "align_corners",
                                      "asymmetric"] if mode == "bilinear" else
                                     ["asymmetric", "half_pixel"])
            if more_rng.random() < 0.5:
                scale = more_rng.choice([2, 1.5, 0.5, [2, 0.75], [1.25, 3]])
                sh_, sw_ = (scale, scale) if not isinstance(scale, list) else scale
                size = (int(h * sh_), int(w * sw_))
                how = f"scale: {scale}"
            else:
                size = (more_rng.randint(1, 2 * h), more_rng.randint(1, 2 * w))
                how = f"size: {list(size)}"
            if min(size) >= 1 and size[0] * size[1] <= 4000:
                emit(f"{last}_rs", f"op: resize, input: {last}, mode: {mode}, {how}, "
                                   f"coordinates: {coords}", (c,) + size, [last])
        elif draw < 0.3:
            k = (more_rng.randint(1, 3), more_rng.randint(1, 3))
            p = [more_rng.randint(0, k[0] // 2), more_rng.randint(0, k[1] // 2)]
            ceil = more_rng.choice([True, False])
            ho = pool_out_size(h, k[0], 2, p[0], ceil)
            wo = pool_out_size(w, k[1], 2, p[1], ceil)
            if ho >= 1 and wo >= 1:
                emit(f"{last}_ap", f"op: avgpool, input: {last}, kernel: {list(k)}, stride: 2, "
                                   f"pad: {p}, ceil_mode: {str(ceil).lower()}, "
                                   "count_include_pad: false", (c, ho, wo), [last])
        elif draw < 0.36:
            emit(f"{last}_gm", f"op: maxpool, input: {last}, global: true", (c, 1, 1), [last])
            emit(f"{last}_bias", f"op: add, inputs: [{last}, {last}_gm]", (c, h, w),
                 [last, f"{last}_gm"])
        elif draw < 0.42 and h * w <= 400:        # a sub-pixel upsampling (pixel shuffle)
            r = more_rng.choice([2, 3])
            co = more_rng.randint(1, 3)
            emit(f"{last}_sp", f"op: conv, input: {last}, out: {co * r * r}, kernel: 1",
                 (co * r * r, h, w), [last])
            emit(f"{last}_ps", f"op: pixel_shuffle, input: {last}_sp, factor: {r}",
                 (co, h * r, w * r), [f"{last}_sp"])
        elif draw < 0.48 and c >= 2:              # ShuffleNet: a channel split, then a shuffle
            start = more_rng.randint(0, c - 2)
            stop = more_rng.randint(start + 1, c)
            emit(f"{last}_sl", f"op: slice, input: {last}, channels: [{start}, {stop}]",
                 (stop - start, h, w), [last])
            g = more_rng.choice([d for d in (2, 3, 4) if (stop - start) % d == 0] or [1])
            emit(f"{last}_sh", f"op: channel_shuffle, input: {last}_sl, groups: {g}",
                 (stop - start, h, w), [f"{last}_sl"])

    if affine_rng.random() < 0.15:                 # an input normalisation (its own kernel)
        emit("norm", "op: affine, input: input", (c, h, w), ["input"])
    for i in range(rng.randint(2, 7)):
        name = f"l{i}"
        src = rng.choice(order[-3:])
        sc, sh, sw = shapes[src]
        kind = rng.choice(["conv", "conv", "fire", "maxpool", "avgpool", "deconv", "add", "concat",
                           "relu"])
        if kind == "conv":
            k = _pair(rng, 1, 4)
            s = _pair(rng, 1, 3)
            kh, kw = _as_pair(k)
            p = [rng.randint(0, kh), rng.randint(0, kw)]
            out = rng.choice([rng.randint(1, most), 64, 128]) if wide else rng.randint(1, most)
            ho, wo = conv_out_size(sh, kh, _as_pair(s)[0], p[0]), conv_out_size(sw, kw, _as_pair(s)[1], p[1])
            if ho < 1 or wo < 1:
                continue
            relu = rng.choice(["true", "false"])
            bias = rng.choice(["true", "false"])
            extra, ho, wo = _conv_extras(conv_rng, sc, out, (sh, sw), (kh, kw), _as_pair(s), p,
                                         (ho, wo))
            emit(name, f"op: conv, input: {src}, out: {out}, kernel: {k}, stride: {s}, {extra}"
                       f"relu: {relu}, bias: {bias}", (out, ho, wo), [src])
            pool = rng.choice([(2, 2), (2, 1), (1, 2), (1, 4), (4, 1)])
            if rng.random() < 0.3 and ho >= pool[0] and wo >= pool[1]:   # fused into the conv
                emit(f"{name}_pool", f"op: maxpool, input: {name}, kernel: {list(pool)}, "
                                     f"stride: {list(pool)}, ceil_mode: false",
                     (out, ho // pool[0], wo // pool[1]), [name])
        elif kind == "fire":
            sq, e1, e3 = rng.randint(1, most // 2 + 1), rng.randint(1, most), rng.randint(1, most)
            emit(name, f"op: fire, input: {src}, squeeze: {sq}, expand1x1: {e1}, expand3x3: {e3}",
                 (e1 + e3, sh, sw), [src])
        elif kind in ("maxpool", "avgpool"):
            kh, kw = rng.randint(1, 4), rng.randint(1, 4)
            s = [rng.randint(1, 3), rng.randint(1, 3)]
            p = [rng.randint(0, kh // 2), rng.randint(0, kw // 2)]
            if rng.random() < 0.4:            # non-overlapping windows: fused into a conv before
                kh, kw = rng.choice([(2, 2), (2, 2), (2, 1), (1, 2)])
                s, p = [kh, kw], [0, 0]
            ceil = rng.choice([True, False])
            dil = ""
            if kind == "maxpool" and window_rng.random() < 0.2:     # taps d apart
                d = (window_rng.randint(1, 3), window_rng.randint(1, 3))
                if _every_window_has_a_tap(sh, kh, s[0], p[0], d[0], ceil) and \
                        _every_window_has_a_tap(sw, kw, s[1], p[1], d[1], ceil):
                    dil = f"dilation: {list(d)}, "
                    kh, kw = (kh - 1) * d[0] + 1, (kw - 1) * d[1] + 1     # its reach
            ho = pool_out_size(sh, kh, s[0], p[0], ceil)
            wo = pool_out_size(sw, kw, s[1], p[1], ceil)
            if ho < 1 or wo < 1:
                continue
            kernel = [(kh - 1) // d[0] + 1, (kw - 1) // d[1] + 1] if dil else [kh, kw]
            emit(name, f"op: {kind}, input: {src}, kernel: {kernel}, stride: {s}, pad: {p}, "
                       f"{dil}ceil_mode: {str(ceil).lower()}", (sc, ho, wo), [src])
        elif kind == "deconv":
            k, s = _pair(rng, 1, 5), _pair(rng, 1, 4)
            kh, kw = _as_pair(k)
            p = [rng.randint(0, (kh - 1) // 2), rng.randint(0, (kw - 1) // 2)]
            out = rng.randint(1, 6)
            ho = deconv_out_size(sh, kh, _as_pair(s)[0], p[0])
            wo = deconv_out_size(sw, kw, _as_pair(s)[1], p[1])
            extra = ""
            if deconv_rng.random() < 0.25 and max(_as_pair(s)) > 1:   # U-Net style sizes
                op = [deconv_rng.randint(0, d - 1) for d in _as_pair(s)]
                ho, wo = ho + op[0], wo + op[1]
                extra = f"output_padding: {op}, "
            if ho < 1 or wo < 1 or ho * wo > 4000:
                continue
            bias = rng.choice(["true", "false"])
            groups = [g for g in range(2, sc + 1) if sc % g == 0]
            if groups and window_rng.random() < 0.3:        # grouped or depthwise
                g = window_rng.choice(groups)
                out = g * window_rng.randint(1, 2)
                extra += f"groups: {g}, "
            emit(name, f"op: deconv, input: {src}, out: {out}, kernel: {k}, stride: {s}, "
                       f"pad: {p}, {extra}bias: {bias}", (out, ho, wo), [src])
        elif kind == "add":
            # a conv on another tensor of the same shape, then the add (a skip connection)
            others = [o for o in order if shapes[o][1:] == (sh, sw)]
            other = rng.choice(others)
            emit(f"{name}_proj", f"op: conv, input: {other}, out: {sc}, kernel: 1",
                 (sc, sh, sw), [other])
            relu = rng.choice(["true", "false"])
            emit(name, f"op: add, inputs: [{src}, {name}_proj], relu: {relu}", (sc, sh, sw),
                 [src, f"{name}_proj"])
        elif kind == "concat":
            others = [o for o in order if shapes[o][1:] == (sh, sw) and o != src]
            if not others:
                continue
            other = rng.choice(others)
            emit(name, f"op: concat, inputs: [{src}, {other}]",
                 (sc + shapes[other][0], sh, sw), [src, other])
        else:
            emit(name, f"op: {_activation(act_rng)}, input: {src}", (sc, sh, sw), [src])
        maybe_batchnorm(kind)
        maybe_more()
    if len(order) == 1:
        emit("l_only", "op: conv, input: input, out: 3, kernel: 1", (3, h, w), ["input"])
    last = order[-1]
    if rng.random() < 0.3:
        emit("head", f"op: linear, input: {last}, out: {rng.randint(1, 12)}, "
                     f"relu: {rng.choice(['true', 'false'])}", None, [last])
        last = "head"
    elif rng.random() < 0.2:
        log = ", log: true" if log_rng.random() < 0.5 else ""
        emit("prob", f"op: softmax, input: {last}{log}", shapes[last], [last])
        last = "prob"
    if rng.random() < 0.2 and last != "input":
        emit("gap", f"op: avgpool, input: {order[1]}, global: true", None, [order[1]])
    if shapes[last] is not None and last != "input" and flat_rng.random() < 0.15:
        c_, h_, w_ = shapes[last]                   # an image output, flattened
        emit("flat", f"op: flatten, input: {last}", (c_ * h_ * w_,), [last])
    dangling = [n for n in order[1:] if n not in used]
    if not dangling:
        dangling = [order[-1]]
    lines.append("output: [" + ", ".join(dangling) + "]" if len(dangling) > 1 else
                 f"output: {dangling[0]}")
    return "\n".join(lines) + "\n"
