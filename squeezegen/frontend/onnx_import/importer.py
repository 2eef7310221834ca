"""The walk over the ONNX graph: reading the input, mapping every live node, checking shapes."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ModelError
from ...ir.graph import Attrs, TensorType
from ...ir.ops import ShapeError, infer
from ..schema import MAX_DIM
from .common import (
    CHANNELS_LAST_OPS,
    _FLOAT_TYPES,
    _FOLDABLE,
    _INPUT,
    SUPPORTED_OPS,
    UNSUPPORTED_HINTS,
    _Graph,
    _Layer,
    _node_label,
    _supported_list,
    _Value,
)
from .folding import ConstantFolding
from .mapping import OpMapping
from .naming import YamlWriting


def _kept_window_size(n: int, reach: int, stride: int, pad: int) -> int:
    """A ceil_mode pool's output size as ONNX's shape inference computes it: ceil((n + 2 pad -
    reach) / stride) + 1, keeping a last window that starts in the padding."""
    return -(-(n + 2 * pad - reach) // stride) + 1


# The default-domain opsets the importer is written for: 7 (Upsample, NumPy broadcasting) to 22
# (for the ops mapped here 21 and 22 change only the element types); older and newer ones can
# mean other things by the same op.
OPSETS = (7, 22)


class Importer(OpMapping, ConstantFolding, YamlWriting):
    def __init__(self, onnx, model, file: str):
        self.onnx = onnx
        self.model = model
        self.file = file
        self.layers: list[_Layer] = []
        self.values: dict[str, _Value] = {}
        self.absorbed: set[int] = set()          # ids of nodes already folded into a layer
        self.expand_checks: list = []            # (Expand, reader, other operand, shape):
                                                 # checked once every node is mapped
        self.merged: set[int] = set()            # ids of constant ops merged into the layer read
        self.zero_pads: dict[str, tuple] = {}    # Pad outputs a Conv reads: (t, l, b, r) to add
        self.strided: dict[str, tuple] = {}      # stepped Slice outputs: (the image sliced,
                                                 # {axis: (start, stop, step)})
        self.opset = 13
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = int(imp.version)
        self.batch = 1
        self.input_channels_last = False         # an N, H, W, C input, taken as N, C, H, W

    # ------------------------------------------------------------------ errors
    def error(self, message: str) -> ModelError:
        return ModelError(message, file=self.file)

    def fail(self, node, message: str, attribute: str | None = None) -> ModelError:
        where = f"node '{_node_label(node)}' ({node.op_type})"
        if attribute:
            where += f", attribute '{attribute}'"
        return self.error(f"{where}: {message}")

    def unsupported(self, node, others=()) -> ModelError:
        def op_of(n):
            return n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        nodes = [node, *others]
        # an op the exporter makes from a familiar module goes first, with what to do instead
        node = next((n for n in nodes if op_of(n) in UNSUPPORTED_HINTS), node)
        others = [n for n in nodes if n is not node]
        also = ""
        if others:
            shown = [f"'{_node_label(n)}' ({op_of(n)})" for n in others[:6]]
            more = f" and {len(others) - 6} more" if len(others) > 6 else ""
            also = f"; also not supported: {', '.join(shown)}{more}"
        why = UNSUPPORTED_HINTS.get(op_of(node))
        if why:
            return self.fail(node, f"op {op_of(node)} is not supported: {why}{also}")
        return self.fail(node, f"op {op_of(node)} is not supported{also}; squeezegen imports "
                               f"{_supported_list()} (and evaluates constant shape arithmetic)")

    # ------------------------------------------------------------------ attributes
    def attrs(self, node, allowed) -> dict[str, Any]:
        out = {}
        for a in node.attribute:
            if a.name not in allowed:
                raise self.fail(node, f"attribute '{a.name}' is not supported for {node.op_type}",
                                a.name)
            value = self.onnx.helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            out[a.name] = value
        return out

    def axes_in(self, node, axes, rank: int, attribute: str = "axes") -> list[int]:
        """ONNX `axes` of a rank-`rank` tensor (negatives count from the end) as 0..rank-1;
        refuses one outside [-rank, rank - 1], or one given twice."""
        out = []
        for ax in axes:
            if not -rank <= int(ax) < rank:
                raise self.fail(node, f"{attribute} {[int(v) for v in axes]}: axis {int(ax)} is "
                                      f"outside [-{rank}, {rank - 1}] for a tensor of rank "
                                      f"{rank}", attribute)
            out.append(int(ax) % rank)
        if len(set(out)) != len(out):
            raise self.fail(node, f"{attribute} {[int(v) for v in axes]} name an axis twice",
                            attribute)
        return out

    def const(self, node, index: int, what: str) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.g.consts:
            raise self.fail(node, f"the {what} (input {index}, '{name}') must be a constant (an "
                                  "initializer or a Constant node), not a computed tensor")
        return self.g.consts[name]

    def weight(self, node, index: int, what: str, ndim: int | None = None) -> np.ndarray:
        w = self.const(node, index, what)
        if w.dtype.kind != "f":
            raise self.fail(node, f"the {what} '{node.input[index]}' has dtype {w.dtype}; "
                                  "weights must be floating point")
        if ndim is not None and w.ndim != ndim:
            raise self.fail(node, f"the {what} '{node.input[index]}' has shape {list(w.shape)}, "
                                  f"expected {ndim} dimensions")
        with np.errstate(over="ignore", invalid="ignore"):
            w = np.ascontiguousarray(w, dtype=np.float32)
        bad = int(np.count_nonzero(~np.isfinite(w)))
        if bad:
            raise self.fail(node, f"the {what} '{node.input[index]}' holds {bad} value(s) that are "
                                  "not finite in float32 (NaN, Inf, or beyond 3.4e38)")
        return w

    def tensor(self, node, index: int = 0, channels_last: bool = False) -> _Value:
        """The value of input `index`; a channels-last one only where the caller takes it."""
        name = node.input[index] if index < len(node.input) else ""
        if name in self.values:
            v = self.values[name]
            if v.channels_last and not channels_last:
                raise self.fail(node, f"reads the channels-last tensor '{name}' (N, H, W, C: "
                                      "a permute(0, 2, 3, 1) of an image, or an N, H, W, C "
                                      "input); squeezegen follows one "
                                      f"only through {CHANNELS_LAST_OPS}, up to the "
                                      "permute(0, 3, 1, 2) back")
            return v
        if name in self.g.consts:
            raise self.fail(node, f"input {index} ('{name}') is a constant; squeezegen's layers "
                                  "only take the outputs of other layers (or the network input) "
                                  "here")
        raise self.fail(node, f"input {index} ('{name}') is not computed by any supported node")

    def features(self, node, index: int = 0) -> _Value:
        """Input `index` as an op on features sees it: a flattened C,H,W image (H*W > 1) gets a
        flatten layer, once, which every later reader of that tensor shares."""
        v = self.tensor(node, index)
        if v.flattened and v.sg[1:] != (1, 1):
            v = self.flatten_layer(node.input[index], v)
        return v

    def image(self, node, index: int = 0) -> _Value:
        v = self.tensor(node, index)
        if len(v.shape) != 3:
            raise self.fail(node, f"needs an N,C,H,W input, got shape [N, "
                                  f"{', '.join(map(str, v.shape))}]")
        if v.shape != v.sg:
            raise self.fail(node, f"reads a tensor reshaped to [N, {', '.join(map(str, v.shape))}]"
                                  f" from a {'x'.join(map(str, v.sg))} image; squeezegen has no "
                                  "reshape layer")
        return v

    def shape_of(self, node, op, attrs, ins) -> tuple[int, ...]:
        try:
            return infer(op, Attrs(attrs), [TensorType(tuple(t)) for t in ins]).shape
        except ArithmeticError as exc:          # a zero factor or kernel: no shape at all
            raise self.fail(node, f"squeezegen's {op} cannot take the attributes "
                                  f"{attrs} ({type(exc).__name__}: {exc})") from None
        except ShapeError as exc:
            raise self.fail(node, f"squeezegen's {op} cannot take this: {exc}",
                            {"kernel": "kernel_shape", "pad": "pads"}.get(exc.field)) from None

    # ------------------------------------------------------------------ graph bookkeeping
    def data_consumers(self, tensor: str) -> list:
        return [n for n in self.g.consumers.get(tensor, []) if n.op_type != "Shape"]

    def only_reader(self, tensor: str, op_type: str | None = None):
        """The single node reading `tensor` (once), when it is not a graph output; else None."""
        if tensor in self.g.outputs:
            return None
        readers = self.data_consumers(tensor)
        if len(readers) != 1 or list(readers[0].input).count(tensor) != 1:
            return None
        if op_type is not None and readers[0].op_type != op_type:
            return None
        return readers[0]

    def add_layer(self, layer: _Layer, tensor: str, shape=None,
                  channels_last: bool = False) -> int:
        """Layer `layer` computes ONNX tensor `tensor` (of ONNX shape `shape`, else the
        layer's; `channels_last`: the layer's C, H, W seen as H, W, C)."""
        self.layers.append(layer)
        index = len(self.layers) - 1
        sg = layer.sg
        if channels_last:
            shape = (sg[1], sg[2], sg[0])
        self.values[tensor] = _Value(index, tuple(shape or sg), sg, channels_last)
        return index

    def fuse_relu(self, index: int, tensor: str) -> None:
        """Give layer `index` (whose output is `tensor`) `relu: true` if a Relu alone reads it
        and its op has a relu field (a Relu after any other becomes a relu layer, which the
        passes fuse into its kernel all the same)."""
        if self.layers[index].relu is None:
            return
        relu = self.only_reader(tensor, "Relu")
        if relu is None or len(relu.output) != 1:
            return
        self.attrs(relu, ())
        self.layers[index].relu = True
        self.absorbed.add(id(relu))
        self.values[relu.output[0]] = self.values[tensor]

    # ------------------------------------------------------------------ the walk
    def check_opset(self) -> None:
        """Refuse a default-domain opset outside OPSETS (or none declared)."""
        declared = [int(imp.version) for imp in self.model.opset_import
                    if imp.domain in ("", "ai.onnx")]
        low, high = OPSETS
        if not declared:
            raise self.error(f"the model declares no ONNX (default-domain) opset; squeezegen "
                             f"imports opsets {low} to {high}")
        if len(set(declared)) > 1:
            raise self.error(f"the model declares the ONNX (default-domain) opset more than once "
                             f"({', '.join(map(str, declared))})")
        if not low <= declared[-1] <= high:
            raise self.error(f"the model declares ONNX opset {declared[-1]}; squeezegen imports "
                             f"opsets {low} to {high} (re-export with opset_version between "
                             "them, e.g. 13 or 17)")

    def run(self) -> tuple[str, dict[str, np.ndarray]]:
        self.check_opset()
        graph = self.model.graph
        consts = {}
        for t in graph.initializer:
            consts[t.name] = self.to_array(t)
        self.g = _Graph(nodes=self.sorted_nodes(list(graph.node), set(consts)), consts=consts)
        self.limit = self.fold_limit()            # of a folded constant, in elements
        self.g.outputs = [o.name for o in graph.output]
        if not self.g.outputs:
            raise self.error("the ONNX graph has no outputs")
        live = self.live_nodes()
        for node in self.g.nodes:
            if id(node) in live:
                for name in node.input:
                    if name:
                        self.g.consumers.setdefault(name, []).append(node)
        # fail early, before any shape work, on ops squeezegen does not know (all of them)
        unknown = [node for node in self.g.nodes
                   if id(node) in live and (node.domain not in ("", "ai.onnx")
                                            or (node.op_type not in SUPPORTED_OPS
                                                and node.op_type not in _FOLDABLE))]
        if unknown:
            raise self.unsupported(unknown[0], unknown[1:])
        self.read_input()
        mappers = {"Conv": self.map_conv, "ConvTranspose": self.map_conv_transpose,
                   "BatchNormalization": self.map_batchnorm,
                   "InstanceNormalization": self.map_instancenorm,
                   "MaxPool": self.map_pool, "AveragePool": self.map_pool,
                   "GlobalAveragePool": self.map_global_pool,
                   "GlobalMaxPool": self.map_global_pool, "Relu": self.map_relu,
                   "Clip": self.map_clip, "LeakyRelu": self.map_activation,
                   "Resize": self.map_resize, "Upsample": self.map_upsample,
                   "Pad": self.map_pad,
                   "ReduceMean": self.map_reduce, "ReduceMax": self.map_reduce,
                   "ReduceSum": self.map_reduce, "ReduceL2": self.map_reduce,
                   "Sigmoid": self.map_activation, "HardSigmoid": self.map_activation,
                   "HardSwish": self.map_activation, "Tanh": self.map_activation,
                   "Elu": self.map_activation, "Gelu": self.map_activation,
                   "Softplus": self.map_activation, "Mish": self.map_activation,
                   "Selu": self.map_activation, "Celu": self.map_activation,
                   "Softsign": self.map_activation, "Abs": self.map_pattern_only,
                   "Log": self.map_pattern_only, "Erf": self.map_pattern_only,
                   "DepthToSpace": self.map_depth_to_space,
                   "Pow": self.map_pattern_only, "Sqrt": self.map_pattern_only,
                   "Transpose": self.map_transpose, "LayerNormalization": self.map_layernorm,
                   "Slice": self.map_slice, "Split": self.map_split, "PRelu": self.map_prelu,
                   "Gather": self.map_gather,
                   "Add": self.map_add, "Mul": self.map_mul, "Sub": self.map_sub_div,
                   "Div": self.map_sub_div, "Concat": self.map_concat,
                   "Gemm": self.map_gemm,
                   "MatMul": self.map_matmul, "Softmax": self.map_softmax,
                   "LogSoftmax": self.map_softmax,
                   "Dropout": self.map_alias, "Identity": self.map_alias,
                   "Expand": self.map_expand, "Neg": self.map_neg, "Tile": self.map_tile,
                   "Flatten": self.map_reshape, "Reshape": self.map_reshape,
                   "Squeeze": self.map_reshape, "Unsqueeze": self.map_reshape}
        for node in self.g.nodes:      # Constant nodes first: patterns look ahead at them
            if id(node) in live and node.op_type == "Constant":
                self.try_fold(node)
        for node in self.g.nodes:
            if id(node) not in live or id(node) in self.absorbed:
                continue
            if node.op_type == "Constant":
                if not self.try_fold(node):
                    raise self.unsupported(node)
                continue
            if self.try_fold(node):
                continue
            mapper = mappers.get(node.op_type)
            if mapper is None:
                raise self.unsupported(node)
            if not node.output or not node.output[0]:
                raise self.fail(node, "has no output")
            try:
                mapper(node)
            except (ArithmeticError, ValueError, TypeError) as exc:   # a value no check foresaw
                raise self.fail(node, f"cannot be imported: its attributes or constants give "
                                      f"{type(exc).__name__}: {exc}") from None
        for expand, reader, other, shape in self.expand_checks:
            self.check_expand_reader(expand, reader, other, shape)
        return self.finish()

    def sorted_nodes(self, nodes: list, initializers: set) -> list:
        """The nodes in an order where each comes after the nodes computing its inputs (the
        file's, where it already is); refuses a tensor computed twice (by two nodes, or by a node
        and as an initializer or graph input) and a cycle."""
        producer = {}
        given = initializers | {i.name for i in self.model.graph.input}
        for node in nodes:
            for name in node.output:
                if not name:
                    continue
                if name in producer:
                    other = producer[name]
                    raise self.fail(node, f"its output '{name}' is also computed by node "
                                          f"'{_node_label(other)}' ({other.op_type}); each "
                                          "tensor of an ONNX graph has one producer")
                if name in given:
                    raise self.fail(node, f"its output '{name}' is also a graph input or an "
                                          "initializer; each tensor of an ONNX graph has one "
                                          "producer")
                producer[name] = node
        done: set[int] = set()
        order: list = []
        for start in nodes:                     # depth first, inputs before readers
            stack = [(start, False)]
            path: set[int] = set()
            while stack:
                node, expanded = stack.pop()
                if expanded:
                    path.discard(id(node))
                    if id(node) not in done:
                        done.add(id(node))
                        order.append(node)
                    continue
                if id(node) in done:
                    continue
                if id(node) in path:
                    raise self.fail(node, "is on a cycle (it depends on its own output); an "
                                          "ONNX graph is acyclic")
                path.add(id(node))
                stack.append((node, True))
                for name in reversed(node.input):
                    before = producer.get(name)
                    if before is not None and id(before) not in done:
                        if id(before) in path:
                            raise self.fail(before, "is on a cycle (it depends on its own "
                                                    "output); an ONNX graph is acyclic")
                        stack.append((before, False))
        return order

    def layer_node(self, layer_name: str | None):
        """The ONNX node the layer `layer_name` of the written YAML was made from, or None."""
        for layer in self.layers:
            if layer_name and (layer.name == layer_name
                               or layer_name in layer.generated(layer.name)):
                return layer.node
        return None

    def live_nodes(self) -> set[int]:
        producer = {}
        for node in self.g.nodes:
            for name in node.output:
                if name:
                    producer[name] = node
        live: set[int] = set()
        stack = [producer[o] for o in self.g.outputs if o in producer]
        while stack:
            node = stack.pop()
            if id(node) in live:
                continue
            live.add(id(node))
            stack.extend(producer[i] for i in node.input if i in producer)
        return live

    def read_input(self) -> None:
        graph = self.model.graph
        real = [i for i in graph.input if i.name not in self.g.consts]
        if len(real) != 1:
            names = ", ".join(f"'{i.name}'" for i in real) or "none"
            raise self.error(f"squeezegen models have exactly one input; this graph has "
                             f"{len(real)} ({names})")
        inp = real[0]
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise self.error(f"input '{inp.name}' is not a tensor")
        if tt.elem_type != 1:
            raise self.error(f"input '{inp.name}' has element type "
                             f"{_FLOAT_TYPES.get(tt.elem_type, tt.elem_type)}; squeezegen takes "
                             "float32 input")
        dims = list(tt.shape.dim)
        if not tt.HasField("shape") or len(dims) not in (2, 4):
            raise self.error(f"input '{inp.name}' must be N,C,H,W (or N,K); it has "
                             f"{len(dims) if tt.HasField('shape') else 'no'} dimensions")
        names = ["C", "H", "W"] if len(dims) == 4 else ["K"]
        shape = []
        for d, label in zip(dims[1:], names):
            if not d.HasField("dim_value") or d.dim_value < 1:
                shown = d.dim_param or "unknown"
                raise self.error(f"input '{inp.name}' has a dynamic {label} dimension ('{shown}'); "
                                 "squeezegen compiles for one input size: re-export with a fixed "
                                 "shape (no dynamic_axes except the batch)")
            if d.dim_value > MAX_DIM:
                raise self.error(f"input '{inp.name}': {label} = {d.dim_value} exceeds "
                                 f"{MAX_DIM}")
            shape.append(int(d.dim_value))
        if dims[0].HasField("dim_value") and dims[0].dim_value >= 1:
            self.batch = int(dims[0].dim_value)
        self.input_name = inp.name
        self.input_shape = tuple(shape)
        self.values[inp.name] = _Value(_INPUT, self.input_shape, self.input_shape)
        if len(shape) == 3 and self.permuted_to_nchw(inp.name):
            # an N, H, W, C input (Keras/TensorFlow exports, or x.permute(0, 3, 1, 2) first):
            # squeezegen's network takes it as N, C, H, W, the Transposes to it no-ops
            h, w, c = shape
            self.input_shape = (c, h, w)
            self.input_channels_last = True
            self.values[inp.name] = _Value(_INPUT, (h, w, c), self.input_shape, True)

    # ------------------------------------------------------------------ output
    # element-wise ops an N, H, W, C input may pass through before its Transpose to N, C, H, W
    _LAYOUT_FREE = ("Mul", "Add", "Sub", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "Identity",
                    "Dropout")

    def permuted_to_nchw(self, name: str) -> bool:
        """Whether tensor `name` reaches a Transpose(0, 3, 1, 2) through element-wise ops only:
        an N, H, W, C input (Keras/TensorFlow exports, or x.permute(0, 3, 1, 2) first)."""
        todo, seen = [name], set()
        while todo:
            tensor = todo.pop()
            for n in self.data_consumers(tensor):
                if id(n) in seen:
                    continue
                seen.add(id(n))
                if n.op_type == "Transpose":
                    perm = [int(p) for p in self.attrs(n, ("perm",)).get("perm", [])]
                    if perm == [0, 3, 1, 2]:
                        return True
                elif n.op_type in self._LAYOUT_FREE:
                    todo.extend(o for o in n.output if o)
        return False

    def finish(self) -> tuple[str, dict[str, np.ndarray]]:
        outputs = []
        for o in self.model.graph.output:
            if o.name not in self.values:
                if o.name in self.g.consts:
                    raise self.error(f"output '{o.name}' is a constant, not computed from the "
                                     "input")
                raise self.error(f"output '{o.name}' is not computed by any node")
            v = self.values[o.name]
            if v.layer == _INPUT:
                raise self.error(f"output '{o.name}' is the network input itself (or a reshape of "
                                 "it): there is no layer to compute it")
            self.check_declared(o, v)
            if len(v.shape) == 1 and v.sg != v.shape:     # flattened: a flatten layer, so that
                v = self.flatten_layer(o.name, v)          # the output has ONNX's shape
            same = [n for n, w in outputs if w.layer == v.layer]
            if same:
                raise self.error(f"outputs '{same[0]}' and '{o.name}' are the same layer's "
                                 "output; squeezegen lists each layer once under output")
            outputs.append((o.name, v))
        keep = self.reachable([v.layer for _, v in outputs])
        self.name_layers(keep)
        weights = {}
        for i in keep:
            layer = self.layers[i]
            for key, w in layer.weights.items():
                with np.errstate(over="ignore", invalid="ignore"):    # checked after import
                    weights[f"{layer.name}.{key}"] = np.ascontiguousarray(w, dtype=np.float32)
        return self.render(keep, outputs), weights

    def flatten_layer(self, name: str, v: _Value) -> _Value:
        """A flatten layer for tensor `name`, which ONNX sees flattened to [C*H*W] while its
        layer computes C,H,W (a graph output, or what an op on features reads), named after
        the node that flattened it; `name` stands for its output from now on."""
        node = next(n for n in self.model.graph.node if name in n.output)
        self.add_layer(_Layer("flatten", [v.layer], {}, {}, v.shape, node), name)
        return self.values[name]

    def declared(self, tensor: str) -> tuple | None:
        """The shape (without the batch) the ONNX file declares for `tensor` (a graph output or a
        value_info entry), None where it declares none or leaves a dimension open."""
        for info in list(self.model.graph.output) + list(self.model.graph.value_info):
            if info.name != tensor:
                continue
            tt = info.type.tensor_type
            if not info.type.HasField("tensor_type") or not tt.HasField("shape"):
                return None
            dims = list(tt.shape.dim)
            if not dims or any(not d.HasField("dim_value") for d in dims[1:]):
                return None
            return tuple(int(d.dim_value) for d in dims[1:])
        return None

    def check_declared(self, o, v: _Value) -> None:
        tt = o.type.tensor_type
        if not o.type.HasField("tensor_type") or not tt.HasField("shape"):
            return
        dims = list(tt.shape.dim)
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(declared) != len(v.shape) + 1 or any(
                d is not None and d != s for d, s in zip(declared[1:], v.shape)):
            if tuple(declared[1:]) == self.unclipped_pool_shape(v):
                return                  # ONNX kept a last ceil_mode window that PyTorch drops
            shown = ", ".join("?" if d is None else str(d) for d in declared)
            raise self.error(f"output '{o.name}': squeezegen computes shape [N, "
                             f"{', '.join(map(str, v.shape))}] but the ONNX model declares "
                             f"[{shown}] (a pooling rounding rule squeezegen does not follow?)")

    def unclipped_pool_shape(self, v: _Value):
        """Where `v` is a ceil_mode pool's output (or that of layers of its shape after it)
        whose last window starts in the padding: its shape as ONNX's shape inference computes
        it, keeping that window (PyTorch and squeezegen drop it); else None."""
        if v.shape != v.sg or len(v.sg) != 3:
            return None
        layer = self.layers[v.layer]
        while layer.op not in ("maxpool", "avgpool") and layer.inputs[0] != _INPUT \
                and len(layer.inputs) == 1 and self.layers[layer.inputs[0]].sg == layer.sg:
            layer = self.layers[layer.inputs[0]]          # through an element-wise layer
        f = layer.fields
        if layer.op not in ("maxpool", "avgpool") or not f.get("ceil_mode"):
            return None
        src = self.input_shape if layer.inputs[0] == _INPUT else self.layers[layer.inputs[0]].sg
        sizes = [_kept_window_size(n, (k - 1) * d + 1, s, p) for n, k, s, p, d in zip(
            src[1:], f["kernel"], f["stride"], f["pad"], f.get("dilation", (1, 1)))]
        if sizes == list(layer.sg[1:]):
            return None                                   # no window dropped
        return (v.sg[0], *sizes)

    def reachable(self, outs: list[int]) -> list[int]:
        seen, stack = set(), list(outs)
        while stack:
            i = stack.pop()
            if i == _INPUT or i in seen:
                continue
            seen.add(i)
            stack.extend(self.layers[i].inputs)
        return sorted(seen)
