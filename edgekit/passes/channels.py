"""Channel dependency graph of an ONNX model: which channels must be removed together.

Every output channel of a weight layer (Conv, ConvTranspose, Gemm, MatMul with a constant weight) is an atomic
channel id. Each tensor the analysis can follow gets a layout: its channel axis and, per position on that axis, the
id of the channel there. Layouts flow through the graph in topological order, one handler per op type:

    pass-through ops (Relu, BN, pooling, Resize, Pad, ...)   same ids
    residual Add / SE Mul / Where / Max ...                  the inputs' ids are unioned position by position
    Concat on the channel axis                               ids concatenated (offsets come for free)
    Split / Slice on the channel axis                        ids split / sliced
    depthwise Conv                                           output ids = input ids
    Flatten / Reshape (N,C,H,W) -> (N,C·H·W)                 each id repeated H·W times (the Gemm that follows)
    Transpose / Squeeze / Unsqueeze / Reduce over other axes the channel axis moves

Ids that must move together end up in one union-find class. A class is frozen (never pruned) when one of its
channels reaches a model output, or an op the analysis cannot see through (its reason names the node). Each
handler also records the edits that pruning needs (slice a weight, a BN parameter, a Split size, a Reshape
entry); `structured.py` applies them once the classes to drop are chosen.

Written here rather than taken from torch-pruning: that library traces torch modules, and this pass works on
any ONNX graph (tf2onnx conversions, old exports) without the model's Python code.

References:
    Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023 (grouping coupled channels).
    Wang et al., "Structurally Prune Anything: Any Architecture, Any Framework, Any Time", 2024 (on ONNX graphs).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
UNARY_PASS = frozenset("""Relu Sigmoid Tanh LeakyRelu HardSigmoid HardSwish Clip Elu Selu Celu Softplus Softsign Erf Exp
    Log Sqrt Neg Abs Identity Dropout Cast Floor Ceil Round Reciprocal Sin Cos Gelu Mish ThresholdedRelu Sign IsNaN
    MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool""".split())
ELEMENTWISE = frozenset("Add Sub Mul Div Pow Max Min Sum Mean Where PRelu Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor".split())
PER_CHANNEL_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
REDUCE = frozenset("ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp ReduceSumSquare".split())
SOFTMAX = frozenset(("Softmax", "LogSoftmax", "Hardmax"))


@dataclass
class Layout:
    axis: int  # the channel axis (non-negative)
    ids: np.ndarray  # int64 [C]: the atomic channel at each position


# kept(ids) -> the positions of `ids` that survive pruning
Kept = Callable[[np.ndarray], np.ndarray]


@dataclass
class Edit:
    """One change pruning makes: `apply(kept, model_edit)` rewrites a node's constants or attributes."""
    node: str
    apply: Callable[[Kept, "ModelEdit"], None]


@dataclass
class Producer:
    node: onnx.NodeProto
    weight: np.ndarray
    out_axis: int  # the weight's output-channel axis
    ids: np.ndarray


@dataclass
class Consumer:
    """A weight layer reading tracked channels: where `ids` sit on its weight's `in_axis`."""
    node: onnx.NodeProto
    weight: np.ndarray
    in_axis: int
    input: str  # the tensor it reads (for activation statistics)
    ids: np.ndarray


@dataclass
class ChannelGraph:
    model: onnx.ModelProto
    parent: list[int] = field(default_factory=list)
    owner: list[str] = field(default_factory=list)  # id -> producer node name
    layouts: dict[str, Layout] = field(default_factory=dict)
    producers: list[Producer] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    frozen: dict[int, str] = field(default_factory=dict)  # id -> why its class cannot be pruned
    blocked: dict[str, str] = field(default_factory=dict)  # node name -> why pruning stops there

    # --- union-find over atomic ids ------------------------------------------------------------------
    def new_ids(self, count: int, owner: str) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.owner.extend([owner] * count)
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.find(int(i)) for i in ids], dtype=np.int64)

    def freeze(self, tensor: str, reason: str, node: str | None = None) -> None:
        layout = self.layouts.get(tensor)
        if layout is None:
            return
        for i in layout.ids.tolist():
            self.frozen.setdefault(i, reason)
        if node:
            self.blocked.setdefault(node, reason)

    def frozen_roots(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for i, reason in self.frozen.items():
            out.setdefault(self.find(i), reason)
        return out


class ModelEdit:
    """The mutable side of pruning: new initializers (copy-on-write per node input) and node attributes."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.nodes = {n.name: n for n in model.graph.node}
        self.uses: dict[str, int] = {}
        for n in model.graph.node:
            for name in n.input:
                self.uses[name] = self.uses.get(name, 0) + 1

    def array(self, node: str, index: int) -> np.ndarray:
        return numpy_helper.to_array(self.inits[self.nodes[node].input[index]])

    def set_input(self, node: str, index: int, value: np.ndarray) -> None:
        """Replace the node's constant input: in place when no other node reads it, else as a new initializer."""
        n = self.nodes[node]
        old = n.input[index]
        name = old if self.uses.get(old, 0) <= 1 else f"{old}.pruned.{node}.{index}"
        tensor = numpy_helper.from_array(np.ascontiguousarray(value.astype(numpy_helper.to_array(self.inits[old]).dtype)), name)
        if name == old:
            self.inits[old].CopyFrom(tensor)
        else:
            self.model.graph.initializer.append(tensor)
            self.inits[name] = self.model.graph.initializer[-1]
            self.uses[old] -= 1
            self.uses[name] = 1
            n.input[index] = name

    def set_attr(self, node: str, name: str, value) -> None:
        n = self.nodes[node]
        for a in n.attribute:
            if a.name == name:
                n.attribute.remove(a)
                break
        n.attribute.append(onnx.helper.make_attribute(name, value))


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Symbolic input dims set to 1, for shape inference only: exports with a dynamic batch otherwise leave the
    ranks and spatial sizes the analysis needs unknown (the edits never depend on the batch)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = 1
    return fixed


def observed_shapes(model: onnx.ModelProto, inferred: onnx.ModelProto) -> dict[str, tuple]:
    """Every tensor's shape from one onnxruntime run at batch 1: shape arithmetic (YOLO grids, Resize to another
    tensor's size) leaves ONNX's static inference with unknown ranks that one real run settles."""
    from edgekit.graph import random_inputs, resolve_input_specs
    from edgekit.onnxtools import ort_session

    elem = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    probe = batch_one(model)
    known = {o.name for o in probe.graph.output}
    names = [o for n in probe.graph.node for o in n.output if o and elem.get(o) and o not in known]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(o, elem[o], None) for o in names)
    try:
        session = ort_session(probe)
        wanted = [o.name for o in probe.graph.output]
        values = session.run(wanted, random_inputs(resolve_input_specs(probe, {})))
    except Exception:  # noqa: BLE001 - the static shapes stay; nodes they leave unknown are left dense
        return {}
    return {name: tuple(v.shape) for name, v in zip(wanted, values)}


class Analysis:
    """Runs the handlers over the graph; `build_channel_graph` is the entry point."""

    def __init__(self, model: onnx.ModelProto):
        self.g = ChannelGraph(model)
        inferred = onnx.shape_inference.infer_shapes(batch_one(model), data_prop=True)
        self.shapes: dict[str, tuple] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        if any(None in v for v in self.shapes.values()) or any(o not in self.shapes for n in model.graph.node for o in n.output if o):
            self.shapes.update(observed_shapes(model, inferred))
        self.inits = {t.name: t for t in model.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.producer_node = {o: n for n in model.graph.node for o in n.output}
        self.shape_of: dict[str, str] = {}  # Shape output -> the tensor, where only ConstantOfShape reads it

    # --- small readers ---------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer_node.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        if shape is None and name in self.inits:
            return len(self.inits[name].dims)
        return None if shape is None else len(shape)

    def dims(self, name: str) -> tuple | None:
        if name in self.inits:
            return tuple(self.inits[name].dims)
        return self.shapes.get(name)

    def block(self, node: onnx.NodeProto, reason: str) -> None:
        for name in node.input:
            self.g.freeze(name, f"{node.name} ({node.op_type}): {reason}", node.name)

    # --- the walk ----------------------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for node in self.model_nodes():
            if node.op_type == "ConstantOfShape" and node.input[0] in self.shape_of:
                self.g.layouts[node.output[0]] = self.g.layouts[self.shape_of[node.input[0]]]
                continue
            if not any(name in self.g.layouts for name in node.input) and node.op_type not in WEIGHT_OPS:
                continue
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                if node.op_type in UNARY_PASS:
                    handler = pass_through
                elif node.op_type in ELEMENTWISE:
                    handler = elementwise
                elif node.op_type in REDUCE:
                    handler = reduce
                elif node.op_type in SOFTMAX:
                    handler = softmax
                else:
                    self.block(node, "not channel-aware")
                    continue
            if node.input[0] not in self.g.layouts and handler not in (elementwise, concat, conv, conv_transpose, gemm, matmul):
                self.block(node, "channels arrive on a secondary input")
                continue
            handler(self, node)
        for out in self.g.model.graph.output:
            self.g.freeze(out.name, f"reaches the model output '{out.name}'")
        return self.g

    def model_nodes(self):
        return list(self.g.model.graph.node)


# --- handlers ----------------------------------------------------------------------------------------


def pass_through(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts.get(node.input[0])
    if layout is None:
        return
    if any(name in a.g.layouts for name in node.input[1:]):
        return a.block(node, "a second channel input")
    a.g.layouts[node.output[0]] = layout


def per_channel(a: Analysis, node: onnx.NodeProto) -> None:
    """BatchNormalization / InstanceNormalization: per-channel constants, sliced with the channels."""
    layout = a.g.layouts.get(node.input[0])
    indices = PER_CHANNEL_PARAMS[node.op_type]
    if layout is None:
        return
    if layout.axis != 1 or any(node.input[i] not in a.inits for i in indices if i < len(node.input)):
        return a.block(node, "parameters are not constants on axis 1")
    a.g.layouts[node.output[0]] = layout
    ids = layout.ids

    def edit(kept: Kept, m: ModelEdit) -> None:
        keep = kept(ids)
        for i in indices:
            if i < len(node.input):
                m.set_input(node.name, i, m.array(node.name, i)[keep])

    a.g.edits.append(Edit(node.name, edit))


def _weight(a: Analysis, node: onnx.NodeProto) -> np.ndarray | None:
    return a.const(node.input[1]) if len(node.input) > 1 and node.input[1] in a.inits else None


def conv(a: Analysis, node: onnx.NodeProto) -> None:
    w = _weight(a, node)
    layout = a.g.layouts.get(node.input[0])
    if w is None:
        return a.block(node, "its weight is not a constant")
    group = int(attr(node, "group", 1))
    bias = len(node.input) > 2 and bool(node.input[2])
    if layout is not None and layout.axis != 1:
        a.block(node, "input channels are not on axis 1")
        layout = None
    if group == 1:
        if layout is not None:
            _consume(a, node, w, 1, layout)
        return _produce(a, node, w, 0, bias)
    if group == w.shape[0] and w.shape[1] == 1 and layout is not None and len(layout.ids) == group:
        # depthwise: channel c in -> channel c out, so the output carries the input's ids
        a.g.layouts[node.output[0]] = layout
        ids = layout.ids

        def edit(kept: Kept, m: ModelEdit) -> None:
            keep = kept(ids)
            m.set_input(node.name, 1, m.array(node.name, 1)[keep])
            if bias:
                m.set_input(node.name, 2, m.array(node.name, 2)[keep])
            m.set_attr(node.name, "group", int(len(keep)))

        a.g.edits.append(Edit(node.name, edit))
        return
    # grouped (or depthwise over channels the analysis does not follow): input and output stay as they are
    a.block(node, f"grouped convolution (group={group})")
    _produce(a, node, w, 0, bias)
    a.g.freeze(node.output[0], f"{node.name} (Conv): grouped convolution (group={group})", node.name)


def conv_transpose(a: Analysis, node: onnx.NodeProto) -> None:
    w = _weight(a, node)
    layout = a.g.layouts.get(node.input[0])
    if w is None or int(attr(node, "group", 1)) != 1:
        return a.block(node, "grouped or non-constant weight")
    if layout is not None and layout.axis == 1:
        _consume(a, node, w, 0, layout)
    elif layout is not None:
        a.block(node, "input channels are not on axis 1")
    _produce(a, node, w, 1, len(node.input) > 2 and bool(node.input[2]))


def gemm(a: Analysis, node: onnx.NodeProto) -> None:
    w = _weight(a, node)
    layout = a.g.layouts.get(node.input[0])
    if w is None or attr(node, "transA", 0) or w.ndim != 2:
        return a.block(node, "transposed input or non-constant weight")
    trans_b = bool(attr(node, "transB", 0))
    if layout is not None and layout.axis == 1:
        _consume(a, node, w, 1 if trans_b else 0, layout)
    elif layout is not None:
        a.block(node, "input features are not on axis 1")
    outputs = w.shape[0 if trans_b else 1]
    bias = a.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sliced_bias = bias is not None and bias.size > 1
    _produce(a, node, w, 0 if trans_b else 1, sliced_bias)
    if (len(node.input) > 2 and node.input[2] and bias is None) or (sliced_bias and (bias.ndim != 1 or bias.shape[0] != outputs)):
        a.g.freeze(node.output[0], f"{node.name} (Gemm): its bias is not a per-output constant", node.name)


def matmul(a: Analysis, node: onnx.NodeProto) -> None:
    w = a.const(node.input[1]) if node.input[1] in a.inits else None
    layout = a.g.layouts.get(node.input[0])
    rank = a.rank(node.input[0])
    if w is None or w.ndim != 2 or rank is None:
        return a.block(node, "a MatMul of two activations")
    if layout is not None and layout.axis == rank - 1:
        _consume(a, node, w, 0, layout)
    elif layout is not None:
        a.block(node, "input features are not on the last axis")
    _produce(a, node, w, 1, False, tensor_axis=rank - 1)


def _consume(a: Analysis, node: onnx.NodeProto, w: np.ndarray, in_axis: int, layout: Layout) -> None:
    if w.shape[in_axis] != len(layout.ids):
        return a.block(node, f"weight has {w.shape[in_axis]} input channels, the tensor {len(layout.ids)}")
    ids = layout.ids
    a.g.consumers.append(Consumer(node, w, in_axis, node.input[0], ids))
    a.g.edits.append(Edit(node.name, lambda kept, m: m.set_input(node.name, 1, np.take(m.array(node.name, 1), kept(ids), axis=in_axis))))


def _produce(a: Analysis, node: onnx.NodeProto, w: np.ndarray, out_axis: int, bias: bool, tensor_axis: int = 1) -> None:
    """New channel ids for the layer's outputs; pruning slices its weight on `out_axis` (and the bias)."""
    ids = a.g.new_ids(w.shape[out_axis], node.name)
    a.g.producers.append(Producer(node, w, out_axis, ids))
    a.g.layouts[node.output[0]] = Layout(tensor_axis, ids)

    def edit(kept: Kept, m: ModelEdit) -> None:
        keep = kept(ids)
        m.set_input(node.name, 1, np.take(m.array(node.name, 1), keep, axis=out_axis))
        if bias:
            m.set_input(node.name, 2, m.array(node.name, 2)[keep])

    a.g.edits.append(Edit(node.name, edit))


def elementwise(a: Analysis, node: onnx.NodeProto) -> None:
    """Broadcasting ops: tracked inputs are unioned position by position; constants are sliced with the channels."""
    out_rank = a.rank(node.output[0])
    if out_rank is None:
        return a.block(node, "unknown output rank")
    tracked: list[tuple[int, Layout]] = []
    consts: list[int] = []
    for i, name in enumerate(node.input):
        rank = a.rank(name)
        if name in a.g.layouts:
            layout = a.g.layouts[name]
            tracked.append((i, Layout(layout.axis + out_rank - (rank or out_rank), layout.ids)))
        elif name in a.inits:
            consts.append(i)
        elif rank is None:
            return a.block(node, f"unknown shape of input '{name}'")
        else:
            consts.append(-1 - i)  # an activation without channels: must broadcast over them (checked below)
    axis, ids = tracked[0][1].axis, tracked[0][1].ids
    for _, layout in tracked[1:]:
        if layout.axis != axis or len(layout.ids) != len(ids):
            return a.block(node, "inputs disagree on the channel axis")
    to_slice = []
    for c in consts:
        name = node.input[c] if c >= 0 else node.input[-1 - c]
        dims = a.dims(name) or ()
        local = axis - (out_rank - len(dims))
        size = dims[local] if 0 <= local < len(dims) else 1
        if size == 1:
            continue
        if c < 0 or size != len(ids):
            return a.block(node, f"input '{name}' has {size} channels the analysis cannot follow")
        to_slice.append((c, local))
    for _, layout in tracked[1:]:
        a.g.union(ids, layout.ids)
    a.g.layouts[node.output[0]] = Layout(axis, ids)
    if to_slice:
        def edit(kept: Kept, m: ModelEdit) -> None:
            for index, local in to_slice:
                m.set_input(node.name, index, np.take(m.array(node.name, index), kept(ids), axis=local))

        a.g.edits.append(Edit(node.name, edit))


def _axis_list(a: Analysis, node: onnx.NodeProto, input_index: int, attr_name: str = "axes") -> list[int] | None:
    """Axes from the attribute (old opsets) or the constant input (new ones); None when not constant."""
    value = attr(node, attr_name)
    if value is None and len(node.input) > input_index and node.input[input_index]:
        value = a.const(node.input[input_index])
        if value is None:
            return None
    return None if value is None else [int(v) for v in np.atleast_1d(value)]


def concat(a: Analysis, node: onnx.NodeProto) -> None:
    rank = a.rank(node.output[0])
    if rank is None:
        return a.block(node, "unknown output rank")
    axis = int(attr(node, "axis")) % rank
    layouts = [a.g.layouts.get(n) for n in node.input]
    tracked = [l for l in layouts if l is not None]
    channel_axis = tracked[0].axis
    if any(l.axis != channel_axis for l in tracked):
        return a.block(node, "inputs disagree on the channel axis")
    if axis != channel_axis:
        if any(l is None for l in layouts) or any(len(l.ids) != len(tracked[0].ids) for l in tracked):
            return a.block(node, "concatenates tracked and untracked channels")
        for l in tracked[1:]:
            a.g.union(tracked[0].ids, l.ids)
        a.g.layouts[node.output[0]] = tracked[0]
        return
    pieces = []
    for name, layout in zip(node.input, layouts):
        if layout is None:  # an input the analysis does not follow keeps all its channels
            size = (a.dims(name) or [None] * rank)[axis]
            if not isinstance(size, int):
                return a.block(node, f"unknown channel count of input '{name}'")
            layout = Layout(axis, a.g.new_ids(size, node.name))
            for i in layout.ids.tolist():
                a.g.frozen[i] = f"{node.name} (Concat): concatenated with channels from '{name}'"
        pieces.append(layout.ids)
    a.g.layouts[node.output[0]] = Layout(axis, np.concatenate(pieces))


def split(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    axis = int(attr(node, "axis", 0)) % rank
    if axis != layout.axis:
        for out in node.output:
            a.g.layouts[out] = layout
        return
    sizes = attr(node, "split")
    from_input = sizes is None and len(node.input) > 1 and bool(node.input[1])
    if from_input:
        sizes = a.const(node.input[1])
        if sizes is None:
            return a.block(node, "split sizes are not constant")
    if sizes is None:
        count = len(node.output)
        if len(layout.ids) % count:
            return a.block(node, "uneven split")
        sizes = [len(layout.ids) // count] * count
    bounds = np.cumsum([0] + [int(s) for s in sizes])
    pieces = [layout.ids[bounds[i]: bounds[i + 1]] for i in range(len(sizes))]
    for out, ids in zip(node.output, pieces):
        a.g.layouts[out] = Layout(axis, ids)

    def edit(kept: Kept, m: ModelEdit) -> None:
        new = np.array([len(kept(ids)) for ids in pieces], dtype=np.int64)
        if from_input:
            m.set_input(node.name, 1, new)
        elif m.model.opset_import and _opset(m.model) >= 13:
            # explicit sizes as an input (opset 13+); an equal split may no longer be equal
            name = f"{node.name}.pruned.split"
            m.model.graph.initializer.append(numpy_helper.from_array(new, name))
            n = m.nodes[node.name]
            if len(n.input) == 1:
                n.input.append(name)
            else:
                n.input[1] = name
            for at in list(n.attribute):
                if at.name in ("split", "num_outputs"):
                    n.attribute.remove(at)
        else:
            m.set_attr(node.name, "split", [int(v) for v in new])

    a.g.edits.append(Edit(node.name, edit))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def slice_(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    if len(node.input) == 1:  # opset < 10: attributes
        starts, ends, axes, steps = attr(node, "starts"), attr(node, "ends"), attr(node, "axes"), None
    else:
        starts, ends = a.const(node.input[1]), a.const(node.input[2])
        axes = a.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        steps = a.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None) or \
                (len(node.input) > 4 and node.input[4] and steps is None):
            return a.block(node, "non-constant slice bounds")
    axes = list(range(len(starts))) if axes is None else [int(x) % rank for x in axes]
    if layout.axis not in axes:
        a.g.layouts[node.output[0]] = layout
        return
    k = axes.index(layout.axis)
    if steps is not None and int(steps[k]) != 1 or len(node.input) == 1:
        return a.block(node, "a strided or attribute slice of the channels")
    count = len(layout.ids)
    start, stop, _ = slice(int(starts[k]), int(ends[k])).indices(count)
    ids = layout.ids
    a.g.layouts[node.output[0]] = Layout(layout.axis, ids[start:stop])

    def edit(kept: Kept, m: ModelEdit) -> None:
        keep = kept(ids)
        new_start, new_stop = int(np.sum(keep < start)), int(np.sum(keep < stop))
        for index, value in ((1, new_start), (2, new_stop)):
            arr = m.array(node.name, index).copy()
            arr[k] = value
            m.set_input(node.name, index, arr)

    a.g.edits.append(Edit(node.name, edit))


def transpose(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    perm = attr(node, "perm") or list(reversed(range(rank)))
    a.g.layouts[node.output[0]] = Layout(list(perm).index(layout.axis), layout.ids)


def _moved_axis(axis: int, removed: list[int]) -> int:
    return axis - sum(1 for r in removed if r < axis)


def squeeze(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    axes = _axis_list(a, node, 1)
    if axes is None:
        return a.block(node, "squeezed axes not known")
    axes = [x % rank for x in axes]
    if layout.axis in axes:
        return a.block(node, "squeezes the channel axis")
    a.g.layouts[node.output[0]] = Layout(_moved_axis(layout.axis, axes), layout.ids)


def unsqueeze(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    out_rank = a.rank(node.output[0])
    axes = _axis_list(a, node, 1)
    if axes is None or out_rank is None:
        return a.block(node, "unsqueezed axes not known")
    kept_axes = [i for i in range(out_rank) if i not in {x % out_rank for x in axes}]
    a.g.layouts[node.output[0]] = Layout(kept_axes[layout.axis], layout.ids)


def reduce(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    axes = _axis_list(a, node, 1)
    axes = list(range(rank)) if axes is None and not (len(node.input) > 1 and node.input[1]) else axes
    if axes is None:
        return a.block(node, "reduced axes not known")
    axes = [x % rank for x in axes]
    if layout.axis in axes:
        return a.block(node, "reduces over the channels")
    moved = layout.axis if attr(node, "keepdims", 1) else _moved_axis(layout.axis, axes)
    a.g.layouts[node.output[0]] = Layout(moved, layout.ids)


def softmax(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    if int(attr(node, "axis", -1)) % rank == layout.axis:
        return a.block(node, "normalizes over the channels")
    a.g.layouts[node.output[0]] = layout


def layer_norm(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    if layout.axis >= int(attr(node, "axis", -1)) % rank:
        return a.block(node, "normalizes over the channels")
    a.g.layouts[node.output[0]] = layout


def flatten(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    dims = a.dims(node.input[0])
    start = int(attr(node, "axis", 1)) % len(dims)
    _to_features(a, node, layout, dims, start)


def _to_features(a: Analysis, node: onnx.NodeProto, layout: Layout, dims: tuple, start: int, shape_index: int | None = None) -> None:
    """(…, C, H, W) flattened from `start` on: each channel id repeated once per spatial position."""
    if layout.axis < start:
        return a.block(node, "flattens the channels into an earlier axis")
    inner, outer = dims[layout.axis + 1:], dims[start:layout.axis]
    if not all(isinstance(d, int) for d in inner + outer):
        return a.block(node, "unknown spatial size")
    inner_n, outer_n = int(np.prod(inner, dtype=np.int64)), int(np.prod(outer, dtype=np.int64))
    ids = layout.ids
    a.g.layouts[node.output[0]] = Layout(start, np.tile(np.repeat(ids, inner_n), outer_n))
    if shape_index is None:
        return

    def edit(kept: Kept, m: ModelEdit) -> None:
        shape = m.array(node.name, 1).copy()
        if shape[shape_index] > 0:
            shape[shape_index] = len(kept(ids)) * inner_n * outer_n
            m.set_input(node.name, 1, shape)

    a.g.edits.append(Edit(node.name, edit))


def reshape(a: Analysis, node: onnx.NodeProto) -> None:
    """Reshapes that keep the channel axis whole, or flatten it with the axes after it; others block."""
    layout = a.g.layouts[node.input[0]]
    src, dst, target = a.dims(node.input[0]), a.dims(node.output[0]), a.const(node.input[1])
    if src is None or dst is None or target is None:
        return a.block(node, "shape not known")
    c = layout.axis
    for k in range(len(dst) + 1):
        if tuple(dst[:k]) != tuple(src[:c]):
            continue
        if k < len(dst) and dst[k] == src[c] and _same_product(dst[k + 1:], src[c + 1:]):
            if target[k] > 0:
                a.g.edits.append(_reshape_entry_edit(node, k, layout.ids, 1))
            elif target[k] == 0 and k != c:
                break
            a.g.layouts[node.output[0]] = Layout(k, layout.ids)
            return
        if k == len(dst) - 1 and _same_product(dst[k:], src[c:]):
            return _to_features(a, node, layout, src, c, shape_index=k)
    a.block(node, "splits or merges the channel axis")


def _same_product(a_dims, b_dims) -> bool:
    if all(isinstance(d, int) for d in tuple(a_dims) + tuple(b_dims)):
        return int(np.prod(a_dims, dtype=np.int64)) == int(np.prod(b_dims, dtype=np.int64))
    return tuple(a_dims) == tuple(b_dims)


def _reshape_entry_edit(node: onnx.NodeProto, k: int, ids: np.ndarray, factor: int) -> Edit:
    def edit(kept: Kept, m: ModelEdit) -> None:
        shape = m.array(node.name, 1).copy()
        shape[k] = len(kept(ids)) * factor
        m.set_input(node.name, 1, shape)

    return Edit(node.name, edit)


def resize(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    if any(name in a.g.layouts for name in node.input[1:]):
        return a.block(node, "a second channel input")
    sizes_index = 3 if len(node.input) > 3 else None
    if sizes_index and node.input[3]:
        if a.const(node.input[3]) is None:
            return a.block(node, "non-constant sizes")
        a.g.edits.append(_sizes_edit(node, layout))
    a.g.layouts[node.output[0]] = layout


def _sizes_edit(node: onnx.NodeProto, layout: Layout) -> Edit:
    ids, axis = layout.ids, layout.axis

    def edit(kept: Kept, m: ModelEdit) -> None:
        sizes = m.array(node.name, 3).copy()
        sizes[axis] = len(kept(ids))
        m.set_input(node.name, 3, sizes)

    return Edit(node.name, edit)


def pad(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    pads = attr(node, "pads") if len(node.input) < 2 else a.const(node.input[1])
    axes = _axis_list(a, node, 3) if len(node.input) > 3 and node.input[3] else list(range(rank))
    if pads is None or axes is None:
        return a.block(node, "non-constant pads")
    pads, axes = [int(p) for p in pads], [x % rank for x in axes]
    if layout.axis in axes:
        k = axes.index(layout.axis)
        if pads[k] or pads[k + len(axes)]:
            return a.block(node, "pads the channels")
    a.g.layouts[node.output[0]] = layout


def shape(a: Analysis, node: onnx.NodeProto) -> None:
    """Shape reads the channel count: fine when every use picks other dims (YOLO grids take H and W)."""
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    start, end = int(attr(node, "start", 0)), attr(node, "end")
    picked = range(rank)[slice(start, None if end is None else int(end))]
    if layout.axis not in picked:
        return
    offset = layout.axis - picked.start
    for use in a.consumers.get(node.output[0], []):
        if use.op_type == "ConstantOfShape" and len(picked) == rank:  # a constant shaped like the tensor: follows it
            a.shape_of[node.output[0]] = node.input[0]
            continue
        if use.op_type == "Gather" and int(attr(use, "axis", 0)) == 0:
            idx = a.const(use.input[1])
            if idx is not None and offset not in {int(i) % len(picked) for i in np.atleast_1d(idx)}:
                continue
        if use.op_type == "Slice" and len(use.input) >= 3:
            lo, hi = a.const(use.input[1]), a.const(use.input[2])
            if lo is not None and hi is not None and offset not in range(len(picked))[slice(int(lo[0]), int(hi[0]))]:
                continue
        return a.block(node, f"its channel count is read by {use.name} ({use.op_type})")


HANDLERS: dict[str, Callable[[Analysis, onnx.NodeProto], None]] = {
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    "BatchNormalization": per_channel, "InstanceNormalization": per_channel,
    "Concat": concat, "Split": split, "Slice": slice_, "Transpose": transpose, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
    "Flatten": flatten, "Reshape": reshape, "Resize": resize, "Upsample": pass_through, "Pad": pad, "Shape": shape,
    "LayerNormalization": layer_norm,
}


def build_channel_graph(model: onnx.ModelProto) -> ChannelGraph:
    """The dependency graph of `model` (not modified): layouts, classes, producers, consumers, edits, frozen reasons."""
    return Analysis(model).run()
