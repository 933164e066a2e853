"""Tiny hand-built ONNX graphs for the unit tests of passes/ (channel analysis, opset, sparse storage): a builder
that names every node after its output, and the pruning step of structured.run applied to a chosen set of channels.
Imported as a plain module, as realworld.py is."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.passes.channel_graph import ChannelGraph, ModelEdit


class Graph:
    """Nodes in the order added; `model(*outputs)` closes the graph. Each op's (first) output is named as the node."""

    def __init__(self, shape: tuple[int, ...] = (1, 4, 6, 6), opset: int = 17, seed: int = 0) -> None:
        self.shape, self.opset = shape, opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        array = np.asarray(value)
        array = array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int64)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs) -> str:
        outs = [name] + [f"{name}:{i}" for i in range(1, outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, name: str, group: int = 1, k: int = 1) -> str:
        w = self.const(f"{name}.w", self.rng.standard_normal((cout, cin // group, k, k)))
        b = self.const(f"{name}.b", self.rng.standard_normal(cout))
        return self.op("Conv", [x, w, b], name, group=group, pads=[k // 2] * 4)

    def model(self, *outputs: str) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)
        ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "tiny", [x], ys, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])


def prune_channels(graph: ChannelGraph, drop: list[int]) -> onnx.ModelProto:
    """A copy of the analysed model with the classes of the atomic channels `drop` removed: every edit applied, as
    structured.run applies them once it has chosen (without its BN folding or bias compensation)."""
    out = onnx.ModelProto()
    out.CopyFrom(graph.model)
    all_roots = graph.roots(np.arange(len(graph.parent)))
    keep = ~np.isin(all_roots, graph.roots(np.asarray(drop, np.int64)))
    edit = ModelEdit(out)
    for e in graph.edits:
        e.apply(lambda ids: np.nonzero(keep[ids])[0], edit)
    return out


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    from edgekit.onnxkit.tools import ort_session

    return ort_session(model).run(None, {"x": x})
