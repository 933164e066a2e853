"""Channel dependency graph of an ONNX model: the entry point, and which handler each op gets.

`build_channel_graph(model)` walks the graph (channel_graph.Analysis) with the handlers below: weight layers,
elementwise ops, Concat/Split/Slice (channel_ops.py) and ops that move or read the channel axis
(channel_shape_ops.py). Adding support for an op is one handler and one line here. See channel_graph.py for the
method and the references.
"""

from __future__ import annotations

import onnx

from edgekit.passes import channel_ops as ops
from edgekit.passes import channel_shape_ops as shape_ops
from edgekit.passes.channel_graph import ELEMENTWISE, REDUCE, SOFTMAX, UNARY_PASS, Analysis, ChannelGraph, Handler

HANDLERS: dict[str, Handler] = {
    "Conv": ops.conv,
    "ConvTranspose": ops.conv_transpose,
    "Gemm": ops.gemm,
    "MatMul": ops.matmul,
    "BatchNormalization": ops.per_channel,
    "InstanceNormalization": ops.per_channel,
    "Concat": ops.concat,
    "Split": ops.split,
    "Slice": ops.slice_,
    "Upsample": ops.pass_through,
    "Transpose": shape_ops.transpose,
    "Squeeze": shape_ops.squeeze,
    "Unsqueeze": shape_ops.unsqueeze,
    "Flatten": shape_ops.flatten,
    "Reshape": shape_ops.reshape,
    "Resize": shape_ops.resize,
    "Pad": shape_ops.pad,
    "Shape": shape_ops.shape,
    "LayerNormalization": shape_ops.layer_norm,
    "MaxUnpool": ops.max_unpool,
}
# handlers that follow channels arriving on any input, not only the first
ANY_INPUT = {ops.elementwise, ops.max_unpool, ops.concat, ops.conv, ops.conv_transpose, ops.gemm, ops.matmul}


def handler_for(node: onnx.NodeProto) -> tuple[Handler | None, bool]:
    op = node.op_type
    handler = HANDLERS.get(op) or (
        ops.pass_through
        if op in UNARY_PASS
        else ops.elementwise
        if op in ELEMENTWISE
        else shape_ops.reduce
        if op in REDUCE
        else shape_ops.softmax
        if op in SOFTMAX
        else None
    )
    return handler, handler in ANY_INPUT


def build_channel_graph(model: onnx.ModelProto) -> ChannelGraph:
    """The dependency graph of `model` (not modified): layouts, classes, producers, consumers, edits, frozen reasons."""
    return Analysis(model).run(handler_for)
