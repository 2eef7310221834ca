"""Evaluating constant sub-graphs (shape arithmetic, weight preparation) at import time."""
from __future__ import annotations

import math

import numpy as np

from ...errors import SqueezegenError
from .common import _FOLDABLE


# A folded constant may hold this many elements, or as many as the largest initializer.
FOLD_LIMIT = 2 ** 26


def _folded_size(op: str, ins: list, axis: int) -> int | None:
    """How many elements a foldable op's output will hold, for the ops whose output can be
    larger than their inputs (a ConstantOfShape, a broadcast, a Gather along `axis`, a Concat);
    None for the others. Computed from the shapes alone, before anything is allocated."""
    shapes = [np.shape(v) for v in ins if v is not None]
    if op == "ConstantOfShape":
        return math.prod(max(int(d), 0) for d in np.asarray(ins[0]).reshape(-1))
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Where", "Pow"):
        try:
            return math.prod(np.broadcast_shapes(*shapes))
        except ValueError:
            return None                       # evaluate() says why
    if op == "Gather" and len(shapes) == 2 and -len(shapes[0]) <= axis < len(shapes[0]):
        data, indices = shapes
        return math.prod(data[:axis % len(data)] + data[axis % len(data) + 1:]) * \
            math.prod(indices)
    if op == "Concat":
        return sum(math.prod(s) for s in shapes)
    return None


# the element-wise ops folded on a constant (a learned parameter's preparation)
_UNARY = {"Relu": lambda x: np.maximum(x, 0), "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
          "Exp": np.exp, "Sqrt": np.sqrt, "Neg": np.negative, "Abs": np.abs}


class ConstantFolding:
    """Evaluating constant sub-graphs (shape arithmetic, weight preparation) at import time."""

    def fold_limit(self) -> int:
        """The most elements a folded constant may hold: FOLD_LIMIT, or the largest
        initializer's size where that is larger."""
        return max([FOLD_LIMIT] + [int(c.size) for c in self.g.consts.values()])

    # ------------------------------------------------------------------ constant folding
    def evaluate(self, node, ins: list) -> np.ndarray:
        """The output of a foldable node on constant inputs (NumPy)."""
        op = node.op_type
        a = {x.name: self.onnx.helper.get_attribute_value(x) for x in node.attribute}
        x = ins[0] if ins else None
        if op == "Constant":
            if "value" in a:
                return self.onnx.numpy_helper.to_array(a["value"])
            for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                               ("value_int", np.int64), ("value_ints", np.int64)):
                if key in a:
                    return np.array(a[key], dtype=dtype)
            raise self.fail(node, "only numeric tensor constants are supported",
                            next(iter(a), None))
        if op == "ConstantOfShape":
            value = (self.onnx.numpy_helper.to_array(a["value"]).reshape(-1)[0] if "value" in a
                     else np.float32(0))
            return np.full([int(d) for d in x.reshape(-1)], value, dtype=np.asarray(value).dtype)
        if op == "Identity":
            return x
        if op == "Cast":
            from onnx import helper
            return x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))
        if op == "Shape":
            shape = np.array(x.shape if isinstance(x, np.ndarray) else x, np.int64)
            return shape[a.get("start", 0): a.get("end", len(shape))]
        if op == "Gather":
            return np.take(x, ins[1].astype(np.int64),
                           axis=self.axes_in(node, [a.get("axis", 0)], x.ndim, "axis")[0])
        if op in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1] is not None:
                axes = [int(v) for v in ins[1].reshape(-1)]
            if op == "Squeeze":
                if axes is None:
                    return np.squeeze(x)
                return np.squeeze(x, axis=tuple(self.axes_in(node, axes, x.ndim)))
            if axes is None:
                raise self.fail(node, "has no axes", "axes")
            y = x
            for ax in sorted(self.axes_in(node, axes, x.ndim + len(axes))):
                y = np.expand_dims(y, ax)
            return y
        if op == "Concat":
            ins = [np.atleast_1d(v) for v in ins]
            return np.concatenate(ins, axis=self.axes_in(node, [a["axis"]], ins[0].ndim,
                                                         "axis")[0])
        if op == "Reshape":
            target = [int(v) for v in ins[1].reshape(-1)]
            if not a.get("allowzero", 0):
                target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
            return x.reshape(target)
        if op == "Flatten":
            axis = int(a.get("axis", 1))
            if not -x.ndim <= axis <= x.ndim:
                raise self.fail(node, f"axis {axis} is outside [-{x.ndim}, {x.ndim}] for a "
                                      f"tensor of rank {x.ndim}", "axis")
            axis += x.ndim if axis < 0 else 0
            return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        if op == "Transpose":
            return np.transpose(x, a.get("perm"))
        if op == "Slice":
            if "starts" in a:
                starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
            else:
                starts, ends = ins[1].tolist(), ins[2].tolist()
                axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else None
                steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else None
            axes = list(range(len(starts))) if axes is None else axes
            steps = [1] * len(starts) if steps is None else steps
            index = [slice(None)] * x.ndim
            for s, e, ax, st in zip(starts, ends, self.axes_in(node, axes, x.ndim), steps):
                index[ax] = slice(int(s), int(e), int(st))
            return x[tuple(index)]
        if op in ("Add", "Sub", "Mul", "Div"):
            l, r = ins[0], ins[1]
            if op == "Div" and l.dtype.kind in "iu":
                return (np.trunc(l / r)).astype(l.dtype)
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                    "Div": np.divide}[op](l, r).astype(np.result_type(l, r))
        if op in _UNARY:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return _UNARY[op](x).astype(x.dtype)
        if op == "Pow":
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return np.power(x, ins[1]).astype(x.dtype)
        if op in ("ReduceSum", "ReduceMean", "ReduceMax"):
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1] is not None:
                axes = [int(v) for v in ins[1].reshape(-1)]
            if not axes and a.get("noop_with_empty_axes", 0):
                return x
            axes = None if not axes else tuple(self.axes_in(node, axes, x.ndim))
            reduce = {"ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max}[op]
            return reduce(x, axis=axes, keepdims=bool(a.get("keepdims", 1))).astype(x.dtype)
        if op == "Softmax" and x.ndim:
            axis = self.axes_in(node, [a.get("axis", -1 if self.opset >= 13 else 1)], x.ndim,
                                "axis")[0]
            # before opset 13 the input is coerced to 2-D at `axis`: a softmax over the rest
            y = x.reshape(x.shape[:axis] + (-1,)) if self.opset < 13 else x
            e = np.exp(y - y.max(axis=-1 if self.opset < 13 else axis, keepdims=True))
            e /= e.sum(axis=-1 if self.opset < 13 else axis, keepdims=True)
            return e.reshape(x.shape).astype(x.dtype)
        # x.expand(-1, 3, -1, -1) exports its shape as Where(shape == -1, 1, shape)
        if op == "Equal":
            return np.equal(ins[0], ins[1])
        if op == "Where":
            return np.where(ins[0].astype(bool), ins[1], ins[2]).astype(
                np.result_type(ins[1], ins[2]))
        raise self.unsupported(node)

    def try_fold(self, node) -> bool:
        """Evaluate `node` when all its (data) inputs are constants; True when it was."""
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Shape":
            src = node.input[0]
            if src in self.values:
                ins = [(self.batch,) + self.values[src].shape]
            elif src in self.g.consts:
                ins = [self.g.consts[src]]
            else:
                return False
        else:
            names = [n for n in node.input]
            if any(n and n not in self.g.consts for n in names):
                return False
            ins = [self.g.consts[n] if n else None for n in names]
        axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
        size = _folded_size(node.op_type, ins, axis)
        if size is not None and size > self.limit:
            raise self.fail(node, f"this constant expression would hold {size} elements, more "
                                  f"than the {self.limit} squeezegen evaluates at import time "
                                  "(the largest initializer's size, or 2^26)")
        try:
            value = self.evaluate(node, ins)
        except SqueezegenError:
            raise
        except Exception as exc:
            raise self.fail(node, f"cannot evaluate this constant expression: {exc}") from None
        self.g.consts[node.output[0]] = np.asarray(value)
        return True

    def to_array(self, tensor) -> np.ndarray:
        try:
            return np.asarray(self.onnx.numpy_helper.to_array(tensor))
        except Exception as exc:
            raise self.error(f"cannot read tensor '{tensor.name}': {exc}") from None
