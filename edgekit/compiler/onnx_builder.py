"""Building replacement ONNX nodes for the lowerings that run before TVM's import (recurrent.py, spectral.py)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper


class NodeBuilder:
    """New nodes and initializers with fresh, readable names (prefixed by the node being lowered)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.inits, self._ids = prefix, [], [], itertools.count()

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self._ids)}"

    def const(self, array: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))  # ascontiguousarray makes 0-d 1-d
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.name(op_type), **attrs))
        return output

    def reshape(self, x: str, shape: list[int], output: str | None = None) -> str:
        return self.op("Reshape", [x, self.const(np.array(shape, np.int64), "shape")], output)


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs of the main graph, by name."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        value = constant_node_value(node) if node.op_type == "Constant" else None
        if value is not None:
            values[node.output[0]] = value
    return values


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A Constant node's tensor, whichever attribute holds it (value, value_float(s), value_int(s)); None for
    strings and sparse values."""
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    simple = {
        "value_float": (np.float32, lambda a: a.f),
        "value_floats": (np.float32, lambda a: list(a.floats)),
        "value_int": (np.int64, lambda a: a.i),
        "value_ints": (np.int64, lambda a: list(a.ints)),
    }
    if attr.name in simple:
        dtype, read = simple[attr.name]
        return np.array(read(attr), dtype)
    return None


def constant_nodes_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """The main graph's Constant nodes as initializers: TVM's importer reads only the `value` form ("no value in
    Constant" for onnxscript's value_float), and onnxsim keeps Constant nodes it cannot fold around."""
    values = {n.output[0]: constant_node_value(n) for n in model.graph.node if n.op_type == "Constant"}
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [n for n in out.graph.node if not (n.op_type == "Constant" and n.output[0] in values)]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())
    return out


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
    }


def replace_nodes(model: onnx.ModelProto, lowered: dict[int, tuple[list, list]]) -> onnx.ModelProto:
    """A copy of `model` with node i replaced by lowered[i] = (nodes, initializers); initializers only the
    replaced nodes read are dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_nodes, replaced_inputs = [], set()
    for i, node in enumerate(model.graph.node):
        if i not in lowered:
            new_nodes.append(node)
            continue
        nodes, inits = lowered[i]
        replaced_inputs.update(node.input)
        new_nodes += nodes
        out.graph.initializer.extend(inits)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    used = {i for n in new_nodes for i in n.input} | {o.name for o in out.graph.output}
    kept = [t for t in out.graph.initializer if t.name in used or t.name not in replaced_inputs]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out
