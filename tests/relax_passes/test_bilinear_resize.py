"""lower_quantized_bilinear_resizes: quantize(resize2d(dq(x), linear)) -> onnxruntime's four-corner float sum."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import reporting_pass
from edgekit.compiler.relax_passes.bilinear_resize import lower_quantized_bilinear_resizes

from .ir import build, const

X = ((1, 1, 2, 2), "uint8")


def qdq_resize(method: str) -> tvm.IRModule:
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        d = bb.emit(relax.op.dequantize(x, const(0.5, "float32"), const(0, "uint8")))
        r = bb.emit(relax.op.image.resize2d(d, (4, 4), method=method, coordinate_transformation_mode="half_pixel"))
        return relax.op.quantize(r, const(0.5, "float32"), const(0, "uint8"), out_dtype="uint8")

    return build(body, x=X)


def run(mod: tvm.IRModule, report: list[dict]) -> tvm.IRModule:
    return reporting_pass(lower_quantized_bilinear_resizes, "LowerQuantizedBilinearResizes", report)(mod)


def test_linear_resize_becomes_ordered_four_corner_sum() -> None:
    # 2 -> 4, half_pixel: source coordinate (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1];
    # taps i1 = floor, i2 = i1 + 1 (clamped), d1 = c - i1, d2 = i2 - c, both 0.5 where i1 == i2 (the border)
    i1, i2 = np.array([0, 0, 0, 1]), np.array([1, 1, 1, 1])
    d1, d2 = np.array([0, 0.25, 0.75, 0.5]), np.array([1, 0.75, 0.25, 0.5])

    def expected(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        d = bb.emit(relax.op.dequantize(x, const(0.5, "float32"), const(0, "uint8")))
        total = None
        # y = ((dx2*dy2 * X11 + dx1*dy2 * X21) + dx2*dy1 * X12) + dx1*dy1 * X22, each product rounded to float32
        for yi, dy in ((i1, d2), (i2, d1)):
            row = bb.emit(relax.op.take(d, const(yi, "int32"), axis=2))
            for xi, dx in ((i1, d2), (i2, d1)):
                corner = bb.emit(relax.op.take(row, const(xi, "int32"), axis=3))
                weight = const(np.outer(dy, dx), "float64")
                product = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(corner, "float64")), weight))
                term = bb.emit(relax.op.astype(product, "float32"))
                total = term if total is None else bb.emit(relax.op.add(total, term))
        return relax.op.quantize(total, const(0.5, "float32"), const(0, "uint8"), out_dtype="uint8")

    report: list[dict] = []
    tvm.ir.assert_structural_equal(run(qdq_resize("linear"), report), build(expected, x=X))
    assert report == [
        {"op": "resize", "status": "lowered", "detail": "bilinear 2x2 -> 4x4 (half_pixel), onnxruntime's sum order"}
    ]


def test_nearest_resize_is_left_alone() -> None:
    before = qdq_resize("nearest_neighbor")
    report: list[dict] = []
    tvm.ir.assert_structural_equal(run(before, report), before)
    assert report == []
