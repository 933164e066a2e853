"""Models written with onnxscript, as users' exporters write them (Constant nodes, CastLike, nested If).
A module of its own without `from __future__ import annotations`: onnxscript reads the type annotations."""

import onnx
from onnxscript import FLOAT, INT64, script
from onnxscript import opset17 as op


@script()
def _vad(x: FLOAT[1, 8], sr: INT64) -> FLOAT[1, 8]:
    if sr == 16000:
        y = op.Mul(x, op.Constant(value_float=2.0))
    else:
        if sr == 8000:
            y = op.Mul(x, op.Constant(value_float=3.0))
        else:
            y = op.Mul(x, op.Constant(value_float=4.0))
    return op.Relu(y)


def onnxscript_vad() -> onnx.ModelProto:
    """What onnxscript writes for a branch on the sample rate: Equal(sr, CastLike(Constant(16000))) -> If, with a
    nested If of the same kind in the else branch and the branches' scales as Constant nodes (no initializers)."""
    return _vad.to_model_proto()
