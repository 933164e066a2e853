"""lower_qlinear_adds: quantize(dq(a) + dq(b)) -> onnxruntime's QLinearAdd arithmetic (fma chain in float64).

s_a / s_c = 2, s_b / s_c = 1 and fixed = z_c - (2 * z_a + 1 * z_b) = 1 - (4 + 4) = -7: exact, written by hand."""

from __future__ import annotations

import tvm
from tvm import relax

from edgekit.compiler.relax_passes import reporting_pass
from edgekit.compiler.relax_passes.qlinear_add import lower_qlinear_adds

from .ir import build, const

U8 = ((1, 8), "uint8")


def qdq_add(bb: relax.BlockBuilder, a: relax.Var, b: relax.Var) -> relax.Expr:
    da = bb.emit(relax.op.dequantize(a, const(0.5, "float32"), const(2, "uint8")))
    db = bb.emit(relax.op.dequantize(b, const(0.25, "float32"), const(4, "uint8")))
    s = bb.emit(relax.op.add(da, db))
    return relax.op.quantize(s, const(0.25, "float32"), const(1, "uint8"), out_dtype="uint8")


def run(mod: tvm.IRModule, report: list[dict]) -> tvm.IRModule:
    return reporting_pass(lower_qlinear_adds, "LowerQLinearAdds", report)(mod)


def test_uint8_residual_add_becomes_qlinear_add_math() -> None:
    def f64(v: float) -> relax.Constant:
        return const(v, "float64")

    def expected(bb: relax.BlockBuilder, a: relax.Var, b: relax.Var) -> relax.Expr:
        a_ra = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(a, "float64")), f64(2.0)))  # a * r_a
        b_rb = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(b, "float64")), f64(1.0)))
        inner = bb.emit(relax.op.astype(bb.emit(relax.op.add(b_rb, f64(-7.0))), "float32"))  # float32(b r_b + fixed)
        summed = bb.emit(relax.op.add(a_ra, bb.emit(relax.op.astype(inner, "float64"))))  # a r_a + inner
        rounded = bb.emit(relax.op.round(bb.emit(relax.op.astype(summed, "float32"))))
        low = bb.emit(relax.op.maximum(rounded, const(0.0, "float32")))
        clamped = bb.emit(relax.op.minimum(low, const(255.0, "float32")))
        return relax.op.astype(clamped, "uint8")

    report: list[dict] = []
    tvm.ir.assert_structural_equal(run(build(qdq_add, a=U8, b=U8), report), build(expected, a=U8, b=U8))
    assert report == [{"op": "add", "status": "lowered", "detail": "QLinearAdd uint8 in 1x8"}]


def test_broadcast_add_is_left_alone() -> None:
    before = build(qdq_add, a=U8, b=((1, 1), "uint8"))  # QLinearAdd's formula is for same-shape operands only
    report: list[dict] = []
    tvm.ir.assert_structural_equal(run(before, report), before)
    assert report == []
