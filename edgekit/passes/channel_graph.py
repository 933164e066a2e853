"""Channel dependency graph of an ONNX model: which channels must be removed together (the data structures and
the walk; the per-op handlers are channel_ops.py and channel_shape_ops.py, the entry point channels.py).

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
UNARY_PASS = frozenset(
    """Relu Sigmoid Tanh LeakyRelu HardSigmoid HardSwish Clip Elu Selu Celu Softplus Softsign Erf Exp
    Log Sqrt Neg Abs Identity Dropout Cast Floor Ceil Round Reciprocal Sin Cos Gelu Mish ThresholdedRelu Sign IsNaN
    MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool""".split()
)
ELEMENTWISE = frozenset(
    "Add Sub Mul Div Pow Max Min Sum Mean Where PRelu Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor".split()
)
PER_CHANNEL_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
REDUCE = frozenset(
    "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp ReduceSumSquare".split()
)
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
        tensor = numpy_helper.from_array(
            np.ascontiguousarray(value.astype(numpy_helper.to_array(self.inits[old]).dtype)), name
        )
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
    from edgekit.onnxkit.graph import random_inputs, resolve_input_specs
    from edgekit.onnxkit.tools import ort_session

    elem = {
        vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
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
    """The walk over the graph and what handlers read (shapes, constants, consumers); channels.build_channel_graph
    runs it with the handlers of channel_ops.py and channel_shape_ops.py."""

    def __init__(self, model: onnx.ModelProto):
        self.g = ChannelGraph(model)
        inferred = onnx.shape_inference.infer_shapes(batch_one(model), data_prop=True)
        self.shapes: dict[str, tuple] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
                )
        if any(None in v for v in self.shapes.values()) or any(
            o not in self.shapes for n in model.graph.node for o in n.output if o
        ):
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
    def run(self, handler_for: Callable[[onnx.NodeProto], tuple[Handler | None, bool]]) -> ChannelGraph:
        """Visit every node in order; handler_for(node) -> (handler or None, whether it takes channels on any input)."""
        for node in self.model_nodes():
            if node.op_type == "ConstantOfShape" and node.input[0] in self.shape_of:
                self.g.layouts[node.output[0]] = self.g.layouts[self.shape_of[node.input[0]]]
                continue
            if not any(name in self.g.layouts for name in node.input) and node.op_type not in WEIGHT_OPS:
                continue
            handler, any_input = handler_for(node)
            if handler is None:
                self.block(node, "not channel-aware")
            elif node.input[0] not in self.g.layouts and not any_input:
                self.block(node, "channels arrive on a secondary input")
            else:
                handler(self, node)
        for out in self.g.model.graph.output:
            self.g.freeze(out.name, f"reaches the model output '{out.name}'")
        return self.g

    def model_nodes(self):
        return list(self.g.model.graph.node)


# --- handlers ----------------------------------------------------------------------------------------


Handler = Callable[[Analysis, onnx.NodeProto], None]


def axis_list(a: Analysis, node: onnx.NodeProto, input_index: int, attr_name: str = "axes") -> list[int] | None:
    """Axes from the attribute (old opsets) or the constant input (new ones); None when not constant."""
    value = attr(node, attr_name)
    if value is None and len(node.input) > input_index and node.input[input_index]:
        value = a.const(node.input[input_index])
        if value is None:
            return None
    return None if value is None else [int(v) for v in np.atleast_1d(value)]
