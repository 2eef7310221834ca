"""Shared test helpers: tolerance check, random weights, a PyTorch twin of any graph, YAML models.

Import as `from helpers import ...` (pytest puts tests/ on sys.path: there is no __init__.py).
"""
from __future__ import annotations

import functools
import textwrap

import numpy as np
import pytest

import squeezegen
from squeezegen.ir.ops import source_specs as param_specs   # the weights a user supplies

# A tiny floor for the denominator, so that an all-zero expected output does not divide by zero
# (an all-zero expected output then needs an (almost) all-zero actual output).
_SCALE_FLOOR = 1e-12


def assert_close(actual, expected, rtol_max: float = 1e-5, what: str = "") -> float:
    """max|actual - expected| / max|expected| <= rtol_max; returns that ratio.

    Shapes must be equal; NaN or Inf anywhere in `actual` (where `expected` is finite) fails.
    """
    label = f"{what}: " if what else ""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{label}shape {actual.shape} != expected {expected.shape}")
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    assert np.isfinite(e).all(), f"{label}the expected output is not finite"
    bad = ~np.isfinite(a)
    assert not bad.any(), (f"{label}{int(bad.sum())} non-finite value(s) in the actual output, "
                           f"first at {tuple(int(i) for i in np.argwhere(bad)[0])}")
    scale = max(float(np.abs(e).max(initial=0.0)), _SCALE_FLOOR)
    diff = np.abs(a - e)
    err = float(diff.max(initial=0.0))
    rel = err / scale
    if not rel <= rtol_max:
        where = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), diff.shape))
        raise AssertionError(
            f"{label}max abs error {err:.3e} at {where} (actual {a[where]:.7g}, expected "
            f"{e[where]:.7g}); relative to max|expected| {scale:.3e} that is {rel:.3e} > "
            f"{rtol_max:.1e}")
    return rel


@functools.lru_cache(maxsize=None)
def gpu_reason() -> str | None:
    """Why the cuda backend cannot run here, or None where it can (a broken runtime fails)."""
    from squeezegen.runtime.network import GPUError, cuda
    try:
        cuda()
    except GPUError as exc:
        return str(exc)
    return None


# A small segmentation model of odd sizes (3x21x34 in, 7 classes at 10x16 out): the masks' and
# image inputs' tests.
ODDSEG = """\
name: oddseg
input: {shape: [3, 21, 34]}
layers:
  - {name: c1, op: conv, out: 6, kernel: 3, pad: 1, relu: true}
  - {name: p1, op: maxpool, kernel: 3, stride: 2}
  - {name: score, op: conv, out: 7, kernel: 1}
output: score
"""


def needs_gpu(test):
    """Mark a test `gpu` and skip it, with the reason, where no GPU is."""
    reason = gpu_reason()
    return pytest.mark.gpu(pytest.mark.skipif(reason is not None, reason=f"no GPU: {reason}")(test))


def assert_gpu_matches_reference(graph, weights, batch: int, precision: str = "fp32",
                                 tol: float = 1e-5) -> None:
    """The network compiled for the GPU at `batch` and `precision` against the NumPy reference
    on a random input: every output within `tol` of its max magnitude."""
    from squeezegen.reference import ReferenceExecutor
    x = random_input(graph, batch)
    want = ReferenceExecutor(graph, weights)(x)
    with squeezegen.compile(graph, weights, batch=batch, precision=precision) as net:
        got = net(x)
    for a, b in zip(*((y if isinstance(y, tuple) else (y,)) for y in (got, want)), strict=True):
        assert_close(a, b, tol)


def assert_compiles_with_nvcc(graph, folder, builds=((1, "fp32"), (3, "fp16"))) -> None:
    """Each (batch, precision) build of `graph`, written under `folder`, compiles with
    nvcc -Werror (test_codegen's flags)."""
    from squeezegen.build import build
    from test_codegen import nvcc
    for batch, precision in builds:
        out = folder / f"{batch}{precision}"
        build(graph, batch, precision=precision, write=out)
        nvcc("-c", str(out / graph.name / f"{graph.name}.cu"), "-o", str(out / "net.o"))


def yaml_model(text: str, file: str = "<test>"):
    """Parse a YAML model given as a (possibly indented) string."""
    return squeezegen.parse_model(textwrap.dedent(text).strip() + "\n", file)


def small_model(input_shape, layers: str, output: str, name: str = "t"):
    """A model from its input shape, the YAML of its layers (one `- {...}` per line), its output."""
    body = "\n".join("  " + line.strip() for line in textwrap.dedent(layers).strip().splitlines())
    text = (f"name: {name}\ninput: {{shape: {list(input_shape)}}}\nlayers:\n{body}\n"
            f"output: {output}\n")
    return squeezegen.parse_model(text, "<test>")


def assert_layer_refused(input_shape, layer: str, message: str) -> None:
    """The model of one layer (its YAML `{name: ..., ...}`) on `input_shape` is refused in one
    line that names the layer and matches `message`."""
    import pytest
    name = layer.split("name: ")[1].split(",")[0].rstrip("}").strip()
    with pytest.raises(squeezegen.SqueezegenError, match=message) as err:
        small_model(input_shape, "- " + layer, name)
    assert "\n" not in str(err.value) and f"layer '{name}'" in str(err.value)


def random_weights(graph, seed: int = 0, bias_scale: float = 0.5) -> dict[str, np.ndarray]:
    """float32 weights for every tensor the graph needs: He-scaled normal weights and biases that
    are all non-zero (uniform magnitude in [0.1, 1] * bias_scale, random sign)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in param_specs(graph).items():
        if key.endswith(".bias"):
            mag = rng.uniform(0.1, 1.0, shape) * bias_scale
            out[key] = (mag * rng.choice([-1.0, 1.0], shape)).astype(np.float32)
        elif key.endswith(".running_var"):          # a BatchNorm's: positive, not near 1
            out[key] = rng.uniform(0.3, 3.0, shape).astype(np.float32)
        elif key.endswith(".running_mean"):
            out[key] = rng.normal(0.0, 0.5, shape).astype(np.float32)
        else:
            fan_in = max(1, int(np.prod(shape[1:])))
            out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return out


def random_input(graph, batch: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch,) + tuple(graph.input.type.shape)).astype(np.float32)


# PyTorch's own activations, written here independently of squeezegen's registry
ACTIVATIONS = {
    "relu": lambda F, x, a: F.relu(x),
    "relu6": lambda F, x, a: F.relu6(x),
    "clip": lambda F, x, a: (F.hardtanh(x, a["min"], a["max"]) if len(a) == 2       # one open
                             else F.threshold(x, a["min"], a["min"]) if "min" in a   # bound:
                             else -F.threshold(-x, -a["max"], -a["max"])),           # threshold
    "leaky_relu": lambda F, x, a: F.leaky_relu(x, a["negative_slope"]),
    "sigmoid": lambda F, x, a: F.sigmoid(x),
    "hardsigmoid": lambda F, x, a: F.hardsigmoid(x),
    "hardswish": lambda F, x, a: F.hardswish(x),
    "silu": lambda F, x, a: F.silu(x),
    "tanh": lambda F, x, a: F.tanh(x),
    "elu": lambda F, x, a: F.elu(x, a["alpha"]),
    "gelu": lambda F, x, a: F.gelu(x, approximate=a["approximate"]),
    "softplus": lambda F, x, a: F.softplus(x),
    "mish": lambda F, x, a: F.mish(x),
    "selu": lambda F, x, a: F.selu(x),
    "celu": lambda F, x, a: F.celu(x, a["alpha"]),
    "softsign": lambda F, x, a: F.softsign(x),
    "logsigmoid": lambda F, x, a: F.logsigmoid(x),
}


def _resize(torch, x, a):
    """F.interpolate where PyTorch has the mode; ONNX's formula (in float32) where it has not
    (bilinear with asymmetric or pytorch_half_pixel coordinates)."""
    F = torch.nn.functional
    size = None if "scale" in a else tuple(a["size"])
    scale = tuple(a["scale"]) if "scale" in a else None
    if a["mode"] == "nearest":
        mode = "nearest" if a["coordinates"] == "asymmetric" else "nearest-exact"
        return F.interpolate(x, size=size, scale_factor=scale, mode=mode)
    if a["coordinates"] in ("half_pixel", "align_corners"):
        return F.interpolate(x, size=size, scale_factor=scale, mode="bilinear",
                             align_corners=a["coordinates"] == "align_corners")
    def axis(n, m, i):
        r = torch.tensor(1.0 / a["scale"][i] if "scale" in a else n / m, dtype=torch.float32,
                         device=x.device)
        d = torch.arange(m, dtype=torch.float32, device=x.device)
        if a["coordinates"] == "asymmetric":
            src = d * r
        else:                                   # pytorch_half_pixel
            src = torch.clamp((d + 0.5) * r - 0.5, min=0) if m > 1 else torch.zeros_like(d)
        i0 = torch.clamp(src.long(), max=n - 1)
        i1 = torch.clamp(i0 + 1, max=n - 1)
        return i0, i1, torch.clamp(src - i0.float(), 0, 1)
    h0, h1, lh = axis(x.shape[2], a["size"][0], 0)
    w0, w1, lw = axis(x.shape[3], a["size"][1], 1)
    lh, lw = lh[:, None], lw[None, :]
    rows0, rows1 = x[:, :, h0], x[:, :, h1]
    top = (1 - lw) * rows0[..., w0] + lw * rows0[..., w1]
    bottom = (1 - lw) * rows1[..., w0] + lw * rows1[..., w1]
    return (1 - lh) * top + lh * bottom


def torch_module(graph, weights: dict):
    """A torch.nn.Module computing the same function as `graph` with `weights`, built only from
    torch.nn.functional calls chosen from each node's op and attributes."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    class GraphModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph = graph
            self.params = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                           for k, v in weights.items()}

        def _p(self, node, kind):
            return self.params.get(f"{node.param_prefix}.{kind}")

        def _op(self, node, args):
            a = node.attrs
            x = args[0]
            if node.op == "conv":
                top, left = a["pad"]
                bottom, right = a.get("pad_end", a["pad"])
                y = F.conv2d(F.pad(x, (left, right, top, bottom)), self._p(node, "weight"),
                             self._p(node, "bias"), stride=a["stride"],
                             dilation=a.get("dilation", 1), groups=a.get("groups", 1))
                return F.max_pool2d(y, a["pool"]) if "pool" in a else y
            if node.op == "deconv":
                return F.conv_transpose2d(x, self._p(node, "weight"), self._p(node, "bias"),
                                          stride=a["stride"], padding=a["pad"],
                                          output_padding=a.get("output_padding", 0),
                                          groups=a.get("groups", 1))
            if node.op == "maxpool":
                return F.max_pool2d(x, a["kernel"], a["stride"], padding=a["pad"],
                                    dilation=a.get("dilation", (1, 1)),
                                    ceil_mode=a["ceil_mode"])
            if node.op == "avgpool":
                if a.get("global"):
                    return F.adaptive_avg_pool2d(x, 1)
                return F.avg_pool2d(x, a["kernel"], a["stride"], padding=a["pad"],
                                    ceil_mode=a["ceil_mode"],
                                    count_include_pad=a.get("count_include_pad", True))
            if node.op == "mul":
                return args[0] * args[1]
            if node.op == "div":
                return args[0] / args[1]
            if node.op == "resize":
                return _resize(torch, x, a)
            if node.op == "add":
                y = args[0]
                for other in args[1:]:
                    y = y + other
                return y
            if node.op == "concat":
                return torch.cat(args, dim=1)
            if node.op in ACTIVATIONS:
                return ACTIVATIONS[node.op](F, x, node.attrs)
            if node.op == "linear":
                return F.linear(torch.flatten(x, 1), self._p(node, "weight"),
                                self._p(node, "bias"))
            if node.op == "reduce_channels":
                if a["mode"] == "l2":
                    return torch.linalg.vector_norm(x, 2, dim=1, keepdim=True)
                return x.amax(1, keepdim=True) if a["mode"] == "max" else x.mean(1, keepdim=True)
            if node.op == "groupnorm":
                return F.group_norm(x, a["groups"], self._p(node, "weight") if a["affine"]
                                    else None, self._p(node, "bias") if a["affine"] else None,
                                    a["eps"])
            if node.op == "layernorm":              # torchvision's LayerNorm2d
                y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],),
                                 self._p(node, "weight") if a["affine"] else None,
                                 self._p(node, "bias") if a["affine"] else None, a["eps"])
                return y.permute(0, 3, 1, 2)
            if node.op == "softmax":
                return (F.log_softmax if a.get("log") else F.softmax)(x, dim=1)
            if node.op == "batchnorm":
                return F.batch_norm(x, self._p(node, "running_mean"), self._p(node, "running_var"),
                                    self._p(node, "weight"), self._p(node, "bias"),
                                    training=False, eps=a["eps"])
            if node.op == "prelu":
                return F.prelu(x, self._p(node, "weight"))
            if node.op == "pixel_shuffle":
                return F.pixel_shuffle(x, a["factor"])
            if node.op == "pad":
                top, left = a["pad"]
                bottom, right = a.get("pad_end", a["pad"])
                if a["mode"] == "constant":
                    return F.pad(x, (left, right, top, bottom), value=a["value"])
                return F.pad(x, (left, right, top, bottom), mode=a["mode"])
            if node.op == "crop":
                top, left = a["crop"]
                bottom, right = a.get("crop_end", a["crop"])
                return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]
            if node.op == "pixel_unshuffle":
                return F.pixel_unshuffle(x, a["factor"])
            if node.op == "slice":
                return x[:, a["channels"][0]:a["channels"][1]]
            if node.op == "channel_shuffle":       # torchvision's shufflenetv2.channel_shuffle
                n, c = x.shape[:2]
                y = x.view((n, a["groups"], c // a["groups"]) + tuple(x.shape[2:]))
                return torch.transpose(y, 1, 2).contiguous().view(x.shape)
            if node.op == "flatten":
                return torch.flatten(x, 1)
            if node.op == "affine":         # per channel: x * weight + bias
                shape = (1, -1) + (1,) * (x.dim() - 2)
                return torch.addcmul(self._p(node, "bias").view(shape), x,
                                     self._p(node, "weight").view(shape))
            raise NotImplementedError(node.op)

        def forward(self, x):
            env = {self.graph.input.name: x}
            for node in self.graph.nodes[1:]:
                y = self._op(node, [env[i] for i in node.inputs])
                for step in node.epilogue:
                    if step.kind == "add":
                        y = y + env[step.operand]
                    elif step.param_prefix:       # a batchnorm, affine or prelu, in the store
                        y = self._op(node.replace(op=step.kind, attrs=step.attrs,
                                                  param_prefix=step.param_prefix), [y])
                    else:
                        y = ACTIVATIONS[step.kind](F, y, step.attrs)
                env[node.name] = y
            outs = tuple(env[o] for o in self.graph.outputs)
            return outs[0] if len(outs) == 1 else outs

    return GraphModule().eval()


def torch_run(module, x: np.ndarray):
    """Run a torch module on a NumPy batch (no grad, float32); NumPy output(s)."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        y = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    if isinstance(y, tuple):
        return tuple(t.numpy() for t in y)
    return y.numpy()
