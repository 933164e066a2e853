"""ONNX sequences of a static length as plain tensors, before TVM's import.

TVM 0.27's importer converts sequence ops only in part (SplitToSequence -> SequenceAt fails with "'TupleGetItem'
object has no attribute 'value'"). With the input shapes fixed, every sequence a vision / audio export builds has
a length known at compile time, so each sequence value is tracked here as the list of its element tensors and
its ops become tensor ops: SequenceConstruct / SequenceEmpty / SequenceInsert / SequenceErase edit the list,
SplitToSequence is a Split (+ Squeeze for keepdims=0), SequenceAt an Identity of the element, SequenceLength a
constant, ConcatFromSequence a Concat (of Unsqueezed elements for new_axis=1). A sequence that leaves the graph,
enters a Loop / If, or has a computed index or split stays as it is (the importer then names what it cannot do).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgekit.compiler.onnx_builder import NodeBuilder, constant_values, inferred_shapes
from edgekit.passes.opset import default_opset

SEQUENCE_OPS = (
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceInsert",
    "SequenceErase",
    "SequenceAt",
    "SequenceLength",
    "SplitToSequence",
    "ConcatFromSequence",
)


def _attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _index(consts: dict[str, np.ndarray], node: onnx.NodeProto, i: int, length: int, default: int | None) -> int | None:
    """A sequence position input (negative counts from the end), or `default` where the input is absent."""
    if len(node.input) <= i or not node.input[i]:
        return default
    if node.input[i] not in consts:
        return None
    pos = int(np.asarray(consts[node.input[i]]).reshape(-1)[0])
    return pos + length if pos < 0 else pos


def _axis_op(g: NodeBuilder, op: str, x: str, axis: int, opset: int) -> str:
    """Squeeze / Unsqueeze of one axis: the axes an input from opset 13, an attribute before."""
    if opset >= 13:
        return g.op(op, [x, g.const(np.array([axis], np.int64), "axes")])
    return g.op(op, [x], axes=[axis])


def _split_sizes(node: onnx.NodeProto, consts: dict, shapes: dict) -> list[int] | None:
    dims = shapes.get(node.input[0])
    axis = _attr(node, "axis", 0)
    if not dims or dims[axis] is None:
        return None
    total = dims[axis]
    if len(node.input) < 2 or not node.input[1]:
        return [1] * total
    if node.input[1] not in consts:
        return None
    split = np.asarray(consts[node.input[1]]).reshape(-1)
    if np.asarray(consts[node.input[1]]).ndim == 0:  # a scalar: equal chunks, the last one shorter
        size = int(split[0])
        return [size] * (total // size) + ([total % size] if total % size else [])
    return [int(s) for s in split]


def _lower(
    node: onnx.NodeProto, seqs: dict[str, list[str]], consts: dict, shapes: dict, g: NodeBuilder, opset: int
) -> bool:
    """Record or rewrite one sequence op; False where its sequence or an index is not static."""
    op, out = node.op_type, node.output[0]
    items = seqs.get(node.input[0]) if node.input else None
    if op == "SequenceConstruct":
        seqs[out] = list(node.input)
    elif op == "SequenceEmpty":
        seqs[out] = []
    elif op == "SplitToSequence":
        sizes, axis = _split_sizes(node, consts, shapes), _attr(node, "axis", 0)
        if sizes is None:
            return False
        parts = [g.name("part") for _ in sizes]
        if opset >= 13:
            split = helper.make_node(
                "Split", [node.input[0], g.const(np.array(sizes, np.int64), "split")], parts, axis=axis
            )
        else:  # opset 11-12: the sizes are an attribute
            split = helper.make_node("Split", [node.input[0]], parts, axis=axis, split=sizes)
        split.name = g.name("Split")
        g.nodes.append(split)
        if len(node.input) < 2 and not _attr(node, "keepdims", 1):
            parts = [_axis_op(g, "Squeeze", p, axis, opset) for p in parts]
        seqs[out] = parts
    elif items is None:
        return False
    elif op in ("SequenceInsert", "SequenceErase"):
        pos = _index(
            consts,
            node,
            2 if op == "SequenceInsert" else 1,
            len(items),
            len(items) if op == "SequenceInsert" else len(items) - 1,
        )
        if pos is None:
            return False
        seqs[out] = (
            items[:pos] + [node.input[1]] + items[pos:] if op == "SequenceInsert" else items[:pos] + items[pos + 1 :]
        )
    elif op == "SequenceAt":
        pos = _index(consts, node, 1, len(items), None)
        if pos is None or not 0 <= pos < len(items):
            return False
        g.op("Identity", [items[pos]], out)
    elif op == "SequenceLength":
        g.op("Identity", [g.const(np.array(len(items), np.int64), "length")], out)
    else:  # ConcatFromSequence
        axis, new_axis = _attr(node, "axis", 0), _attr(node, "new_axis", 0)
        if not items:
            return False
        if new_axis:
            items = [_axis_op(g, "Unsqueeze", e, axis, opset) for e in items]
        g.op("Concat", items, out, axis=axis)
    return True


def fold_static_sequences(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its static-length sequences as tensors (the model itself where it has no sequence op, or
    where one of its sequences is not static)."""
    if not any(n.op_type in SEQUENCE_OPS for n in model.graph.node):
        return model
    consts, shapes, opset = constant_values(model), inferred_shapes(model), default_opset(model)
    seqs: dict[str, list[str]] = {}
    nodes: list[onnx.NodeProto] = []
    builder = NodeBuilder("sequence")
    for node in model.graph.node:
        if node.op_type not in SEQUENCE_OPS:
            if any(i in seqs for i in node.input):  # a Loop / If / custom op reading a sequence: leave it all
                return model
            nodes.append(node)
            continue
        before = len(builder.nodes)
        if not _lower(node, seqs, consts, shapes, builder, opset):
            return model
        nodes.extend(builder.nodes[before:])
    if any(o.name in seqs for o in model.graph.output):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(builder.inits)
    kept = [vi for vi in out.graph.value_info if vi.name not in seqs]  # the sequence-typed value infos are gone
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept)
    return out
