"""The layers every weight-editing pass works on: Conv / Gemm / MatMul nodes whose weight is an initializer.

One place knows where the output and input features of each op's weight are (Conv [O, C, kh, kw]; Gemm
[K, O] unless transB=1; MatMul [.., K, O]), so quantize, binarize, prune and lowrank read the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _attr_int(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def output_axis(node: onnx.NodeProto, weight_ndim: int) -> int:
    """The axis of the weight that indexes the layer's output features."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if _attr_int(node, "transB") == 1 else 1
    return weight_ndim - 1  # MatMul(x, W[.., K, N])


def input_axis(node: onnx.NodeProto, out_axis: int) -> int:
    """The reduction (input-feature) axis of the weight: Conv's C, the K of Gemm / 2-D MatMul."""
    return 1 if node.op_type == "Conv" else (1 - out_axis if node.op_type == "Gemm" else 0)


@dataclass
class WeightLayer:
    node: onnx.NodeProto
    weight: np.ndarray
    axis: int  # output-feature axis of the weight
    init_name: str
    index: int = 0  # the node's position in graph.node

    @property
    def in_axis(self) -> int:
        return input_axis(self.node, self.axis)

    @property
    def stored_transposed(self) -> bool:
        """A 2-D weight stored [K, O] (Gemm transB=0, MatMul) rather than [O, K]."""
        return self.node.op_type != "Conv" and self.axis == 1

    def rows(self) -> np.ndarray:
        """The weight as [O, K]: one row per output feature (Conv: K = C·kh·kw in (C, kh, kw) order)."""
        if self.node.op_type == "Conv":
            return self.weight.reshape(self.weight.shape[0], -1)
        return self.weight.T if self.stored_transposed else self.weight


def weight_layers(model: onnx.ModelProto, *, float_only: bool = True) -> list[WeightLayer]:
    """Conv/Gemm/MatMul nodes whose weight (input 1) is an initializer (fp32 unless not float_only), in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    layers = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        init = inits[node.input[1]]
        if float_only and init.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        layers.append(WeightLayer(node, w, output_axis(node, w.ndim), init.name, index))
    return layers
