"""lower_qlinear_softmaxes: quantize(softmax(dq(x))) -> onnxruntime's QLinearSoftmax (exp table, ordered sum)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import reporting_pass
from edgekit.compiler.relax_passes.qlinear_softmax import lower_qlinear_softmaxes

from .ir import build, const

S = 1 / 256  # s_x = s_y: a power of two keeps the table's float64 arithmetic free of order-dependent rounding


def qdq_softmax(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
    d = bb.emit(relax.op.dequantize(x, const(S, "float32"), const(0, "uint8")))
    s = bb.emit(relax.op.nn.softmax(d, axis=-1))
    return relax.op.quantize(s, const(S, "float32"), const(0, "uint8"), out_dtype="uint8")


def run(mod: tvm.IRModule, report: list[dict]) -> tvm.IRModule:
    return reporting_pass(lower_qlinear_softmaxes, "LowerQLinearSoftmaxes", report)(mod)


def test_uint8_softmax_becomes_table_lookup_and_ordered_sum() -> None:
    d = 8
    # qlinear_softmax.cc: shift = max(0, ln(FLT_MAX / D) - 5), T[i] = exp((i - 255) * s_x + shift)
    shift = max(0.0, np.log(float(np.finfo(np.float32).max) / d) - 5)
    table = np.exp((np.arange(256) - 255) * S + shift).astype("float32")

    def expected(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        xi = bb.emit(relax.op.astype(x, "int32"))
        offset = bb.emit(relax.op.subtract(const(255, "int32"), bb.emit(relax.op.max(xi, axis=1, keepdims=True))))
        t = bb.emit(relax.op.take(const(table, "float32"), bb.emit(relax.op.add(xi, offset)), axis=0, mode="clip"))
        scaled_t = bb.emit(relax.op.multiply(t, const(256.0, "float32")))  # floor(1 / s_y)
        # the sum is the cumulative sum's last element: a sequential loop, onnxruntime's order
        total = bb.emit(relax.op.strided_slice(bb.emit(relax.op.cumsum(t, axis=1)), axes=[1], begin=[d - 1], end=[d]))
        rounded = bb.emit(relax.op.round(bb.emit(relax.op.divide(scaled_t, total))))
        q = bb.emit(relax.op.add(rounded, const(0.0, "float32")))  # + z_y
        return relax.op.astype(bb.emit(relax.op.minimum(q, const(255.0, "float32"))), "uint8")

    report: list[dict] = []
    x = ((2, d), "uint8")
    tvm.ir.assert_structural_equal(run(build(qdq_softmax, x=x), report), build(expected, x=x))
    assert report == [{"op": "softmax", "status": "lowered", "detail": "QLinearSoftmax uint8 in 2x8, axis 1"}]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the pass's own finiteness probe
def test_softmax_over_one_element_is_left_alone() -> None:
    # D = 1: T[255] * floor(1 / s_y) overflows float32 (onnxruntime's own product does too): not lowered
    before = build(qdq_softmax, x=((2, 1), "uint8"))
    report: list[dict] = []
    tvm.ir.assert_structural_equal(run(before, report), before)
    assert report == []
