"""qdq: QDQ conv layers -> integer conv + requantize (lower_qdq_layers); per-tensor Q/DQ -> elementwise (expand_qdq).

Parameters are powers of two so the folded constants (bias correction, requantize multiplier) are exact and
written out by hand below."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import reporting_pass
from edgekit.compiler.relax_passes.qdq import expand_qdq, lower_qdq_layers

from .ir import build, const

W = np.array([[1, -2], [3, 4]], "int8").reshape(2, 2, 1, 1)  # OIHW, per-output-channel scales 1/4, 1/8
X = ((1, 2, 4, 4), "uint8")


def qdq_conv(x_dtype: str = "uint8") -> tvm.IRModule:
    """quantize(conv2d(dq(x), dq(W)) + reshape(dq(b))) as onnxruntime's quantizer writes a layer and TVM imports it."""

    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        dx = bb.emit(relax.op.dequantize(x, const(0.5, "float32"), const(3, x_dtype), axis=1))
        sw, zw = const([0.25, 0.125], "float32"), const([0, 0], "int8")
        dw = bb.emit(relax.op.dequantize(const(W, "int8"), sw, zw, axis=0))
        y = bb.emit(relax.op.nn.conv2d(dx, dw, padding=1))
        # bias on the accumulator's scale s_x * s_w
        sb, zb = const([0.125, 0.0625], "float32"), const([0, 0], "int32")
        db = bb.emit(relax.op.dequantize(const([8, -16], "int32"), sb, zb, axis=0))
        b = bb.emit(relax.op.reshape(db, (1, 2, 1, 1)))
        s = bb.emit(relax.op.add(y, b))
        return relax.op.quantize(s, const(0.25, "float32"), const(10, "uint8"), axis=1, out_dtype="uint8")

    return build(body, x=(X[0], x_dtype))


def test_qdq_conv_becomes_integer_conv_and_requantize() -> None:
    def expected(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        xp = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 1, 1, 1, 1], pad_value=3.0))  # padded with z_x: dequantizes to 0
        acc = bb.emit(relax.op.nn.conv2d(xp, const(W, "int8"), out_dtype="int32"))
        # b - z_x * sum(W[o]) = [8 - 3 * (1 - 2), -16 - 3 * (3 + 4)]
        acc = bb.emit(relax.op.add(acc, const(np.array([11, -37]).reshape(1, 2, 1, 1), "int32")))
        # M = s_x * s_w / s_y = 0.5 * [1/4, 1/8] / (1/4)
        multiplier = const(np.array([0.5, 0.25]).reshape(1, 2, 1, 1), "float32")
        scaled = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), multiplier))
        rounded = bb.emit(relax.op.round(scaled))
        low = bb.emit(relax.op.maximum(rounded, const(-10.0, "float32")))  # [0 - z_y, 255 - z_y]
        clamped = bb.emit(relax.op.minimum(low, const(245.0, "float32")))
        return relax.op.astype(bb.emit(relax.op.add(clamped, const(10.0, "float32"))), "uint8")

    report: list[dict] = []
    out = reporting_pass(lower_qdq_layers, "LowerQDQLayers", report)(qdq_conv())
    tvm.ir.assert_structural_equal(out, build(expected, x=X))
    assert report == [{"op": "conv2d", "status": "lowered", "detail": "conv2d 1x1 s1 g1 2->2 in 1x2x4x4"}]


def test_int8_activations_stay_float_and_are_reported() -> None:
    before = qdq_conv("int8")
    report: list[dict] = []
    tvm.ir.assert_structural_equal(reporting_pass(lower_qdq_layers, "LowerQDQLayers", report)(before), before)
    assert report == [
        {
            "op": "conv2d",
            "status": "skipped",
            "shape": "1x2x6x6",
            "reason": "activations int8 -> uint8: only uint8 (U8S8) is lowered",
        }
    ]


def test_expand_qdq_per_tensor() -> None:
    def before(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        d = bb.emit(relax.op.dequantize(x, const(0.5, "float32"), const(3, "uint8")))
        r = bb.emit(relax.op.nn.relu(d))
        return relax.op.quantize(r, const(0.25, "float32"), const(10, "uint8"), out_dtype="uint8")

    def expected(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        shifted = bb.emit(relax.op.subtract(bb.emit(relax.op.astype(x, "int32")), const(3, "int32")))
        d = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(shifted, "float32")), const(0.5, "float32")))  # (x-z) s
        r = bb.emit(relax.op.nn.relu(d))
        rounded = bb.emit(relax.op.round(bb.emit(relax.op.divide(r, const(0.25, "float32")))))  # round(x / s) + z
        q = bb.emit(relax.op.add(rounded, const(10.0, "float32")))
        low = bb.emit(relax.op.maximum(q, const(0.0, "float32")))
        clamped = bb.emit(relax.op.minimum(low, const(255.0, "float32")))
        return relax.op.astype(clamped, "uint8")

    tvm.ir.assert_structural_equal(expand_qdq(build(before, x=X)), build(expected, x=X))
