"""MaxPool's second output, the argmax indices, which segmentation nets (SegNet, ENet) feed to MaxUnpool: TVM
0.27's converter returns only the values ("Missing outputs during conversion. Expected 2 but Got 1").

MaxPool nodes whose Indices output is used become edgekit's ai.edgekit::MaxPoolWithIndices before the import
(the others keep TVM's pooling); its converter gathers the kernel's taps of the padded input as strided slices,
takes the first maximum over them, as onnxruntime does (its scan replaces the running max only on a strictly
greater value, rows then columns), and turns the tap into onnxruntime's flat index into the input
(((n * C + c) * H + h) * W + w; storage_order 1: ... * W * H + w * H + h).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from edgekit.compiler.recurrent import EDGEKIT_DOMAIN

POOL_INDICES_OP = "MaxPoolWithIndices"


def _returns_indices(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "MaxPool" and node.domain in ("", "ai.onnx") and len(node.output) > 1 and bool(node.output[1])
    )


def lower_pool_indices(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with each MaxPool that has a named Indices output renamed to edgekit's op (the model if none)."""
    if not any(_returns_indices(n) for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if _returns_indices(node):
            node.op_type, node.domain = POOL_INDICES_OP, EDGEKIT_DOMAIN
    if not any(o.domain == EDGEKIT_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(EDGEKIT_DOMAIN, 1))
    return out


def _geometry(shape: list[int], attr: dict) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(kernel, strides, dilations, pads [top, left, bottom, right], output size) of a 2-D MaxPool."""
    kernel = [int(k) for k in attr["kernel_shape"]]
    strides = [int(s) for s in attr.get("strides", (1, 1))]
    dilations = [int(d) for d in attr.get("dilations", (1, 1))]
    pads = [int(p) for p in attr.get("pads", (0, 0, 0, 0))]
    auto_pad = attr.get("auto_pad", b"NOTSET").decode()
    if len(shape) != 4 or len(kernel) != 2 or auto_pad not in ("NOTSET", "VALID"):
        raise ValueError(
            f"MaxPool with Indices on a {len(shape)}-D input, auto_pad {auto_pad}: edgekit computes the indices "
            "of 2-D pooling with explicit pads"
        )
    rounding = math.ceil if int(attr.get("ceil_mode", 0)) else math.floor
    out = []
    for axis in range(2):
        span = (kernel[axis] - 1) * dilations[axis] + 1
        n = rounding((shape[2 + axis] + pads[axis] + pads[axis + 2] - span) / strides[axis]) + 1
        if (n - 1) * strides[axis] >= shape[2 + axis] + pads[axis]:  # a last window starting in the padding is dropped
            n -= 1
        out.append(n)
    return kernel, strides, dilations, pads, out


class MaxPoolIndicesConverter:
    """TVM ONNX-importer converter for ai.edgekit::MaxPoolWithIndices: (values, int64 indices)."""

    @classmethod
    def get_converter(cls, _opset: int):
        return cls._convert

    @classmethod
    def _convert(cls, bb, inputs: list, attr: dict, _params) -> object:
        from tvm import relax

        shape = [int(d) for d in inputs[0].ty.shape]
        kernel, strides, dilations, pads, (oh, ow) = _geometry(shape, attr)
        n, c, h, w = shape
        # pad with -inf so that padding never wins; bottom / right far enough for every window (ceil_mode)
        need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip((oh, ow), strides, kernel, dilations)]
        pad_width = [0, 0, 0, 0, pads[0], max(0, need[0] - h - pads[0]), pads[1], max(0, need[1] - w - pads[1])]
        padded = bb.emit(relax.op.nn.pad(inputs[0], pad_width, pad_value=float("-inf")))
        taps = [
            relax.op.strided_slice(
                padded,
                [2, 3],
                [i * dilations[0], j * dilations[1]],
                [i * dilations[0] + (oh - 1) * strides[0] + 1, j * dilations[1] + (ow - 1) * strides[1] + 1],
                strides,
            )
            for i in range(kernel[0])
            for j in range(kernel[1])
        ]
        stacked = bb.emit(relax.op.stack(taps, axis=0))
        values = bb.emit(relax.op.max(stacked, axis=0))
        tap = bb.emit(relax.op.astype(relax.op.argmax(stacked, axis=0), "int64"))  # the first maximum
        tap_row = relax.op.floor_divide(tap, relax.const(kernel[1], "int64"))
        tap_col = relax.op.subtract(tap, relax.op.multiply(tap_row, relax.const(kernel[1], "int64")))
        row0 = (np.arange(oh, dtype=np.int64) * strides[0] - pads[0]).reshape(1, 1, oh, 1)
        col0 = (np.arange(ow, dtype=np.int64) * strides[1] - pads[1]).reshape(1, 1, 1, ow)
        row = relax.op.add(relax.const(row0, "int64"), relax.op.multiply(tap_row, relax.const(dilations[0], "int64")))
        col = relax.op.add(relax.const(col0, "int64"), relax.op.multiply(tap_col, relax.const(dilations[1], "int64")))
        plane = relax.const((np.arange(n * c, dtype=np.int64) * h * w).reshape(n, c, 1, 1), "int64")
        if int(attr.get("storage_order", 0)):
            flat = relax.op.add(relax.op.multiply(col, relax.const(h, "int64")), row)
        else:
            flat = relax.op.add(relax.op.multiply(row, relax.const(w, "int64")), col)
        indices = bb.emit(relax.op.add(plane, flat))
        return relax.Tuple([values, indices])
