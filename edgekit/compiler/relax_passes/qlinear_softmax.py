"""Softmax between Q/DQ with onnxruntime's QLinearSoftmax arithmetic.

onnxruntime fuses DequantizeLinear(x) -> Softmax -> QuantizeLinear (uint8) into QLinearSoftmax, which does not
compute a float softmax. Per row of D values (contrib_ops/cpu/quantization/qlinear_softmax.cc):

    shift = max(0, ln(FLT_MAX / D) - 5)                          (headroom so the sum stays finite)
    T[i]  = float32(exp((i - 255) * s_x + shift))                (a 256-entry table, computed in float64)
    t_j   = T[x_j + 255 - max(x)]
    sum   = t_0 + t_1 + ... + t_{D-1}                            (float32, in this order)
    y_j   = min(255, round_half_even(float32(t_j * floor(1/s_y)) / sum) + z_y)

so it quantizes with floor(1/s_y) instead of 1/s_y, and a float softmax quantized afterwards lands one step off
it on near-ties (a tf2onnx classifier's probabilities were). Measured (onnxruntime 1.32.0) on 300 random
parameter sets x 64 rows: this formula matched onnxruntime's output in every element.

The sum's order is part of the result: a reduction rule could split or vectorize a `sum`, so it is the last
element of a cumulative sum (TOPI's scan, a sequential loop per row). The max is exact in any order.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from edgekit.compiler.relax_passes import constant_scalar, static_shape


def qlinear_softmax_table(sx: float, reduce_len: int) -> np.ndarray:
    """T[i] = exp((i - 255) * s_x + shift) as onnxruntime's QLinearSoftmax builds it (float64, stored float32)."""
    headroom = np.log(np.float64(np.finfo(np.float32).max / np.float32(reduce_len)))
    shift = max(0.0, headroom - 5) / np.float64(np.float32(sx))
    return np.exp((np.arange(256, dtype=np.float64) - 255 + shift) * np.float64(np.float32(sx))).astype(np.float32)


def _qlinear_softmax(
    x: relax.Expr, shape: tuple[int, ...], axis: int, sx: float, sy: float, zy: int
) -> relax.Expr | None:
    table = qlinear_softmax_table(sx, shape[axis])
    multiplier = np.floor(np.float32(1.0) / np.float32(sy))
    if not np.isfinite(table[-1] * multiplier):  # D = 1: onnxruntime's own product overflows there
        return None
    xi = relax.op.astype(x, "int32")
    offset = relax.op.subtract(relax.const(255, "int32"), relax.op.max(xi, axis=axis, keepdims=True))
    t = relax.op.take(relax.const(table), relax.op.add(xi, offset), axis=0, mode="clip")  # in range by construction
    last = shape[axis] - 1
    total = relax.op.strided_slice(relax.op.cumsum(t, axis=axis), axes=[axis], begin=[last], end=[last + 1])
    scaled = relax.op.divide(relax.op.multiply(t, relax.const(multiplier, "float32")), total)
    q = relax.op.add(relax.op.round(scaled), relax.const(float(zy), "float32"))
    return relax.op.astype(relax.op.minimum(q, relax.const(255.0, "float32")), "uint8")


def lower_qlinear_softmaxes(func: relax.Function) -> tuple[relax.Function, list[dict]]:
    """quantize(softmax(dequantize(x))) on per-tensor uint8 -> QLinearSoftmax's math. Opset < 13 softmax (over
    the flattened trailing axes) imports as reshape -> softmax -> reshape, which the pattern allows."""
    x, sx, zx, sy, zy = wildcard(), is_const(), is_const(), is_const(), is_const()
    dequantized = is_op("relax.dequantize")(x, sx, zx)
    softmax = is_op("relax.nn.softmax")(dequantized | is_op("relax.reshape")(dequantized, wildcard()))
    pattern = is_op("relax.quantize")(softmax | is_op("relax.reshape")(softmax, wildcard()), sy, zy)
    report: list[dict] = []

    def rewrite(expr: relax.Expr, m: dict) -> relax.Expr:
        params = [constant_scalar(m[c]) for c in (sx, zx, sy, zy)]
        rows = m[softmax].args[0]
        shape, out_shape = static_shape(rows), static_shape(expr)
        if (
            None in params
            or {str(m[c].ty.dtype) for c in (x, zx, zy)} != {"uint8"}
            or shape is None
            or out_shape is None
        ):
            return expr  # int8, per-channel or dynamic: dequantize-softmax-quantize as imported
        axis = int(m[softmax].attrs.axis) % len(shape)
        x_rows = m[x] if static_shape(m[x]) == shape else relax.op.reshape(m[x], shape)
        new = _qlinear_softmax(x_rows, shape, axis, params[0], params[2], int(params[3]))
        if new is None:
            return expr
        report.append(
            {
                "op": "softmax",
                "status": "lowered",
                "detail": f"QLinearSoftmax uint8 in {'x'.join(map(str, shape))}, axis {axis}",
            }
        )
        return new if shape == out_shape else relax.op.reshape(new, out_shape)

    return rewrite_call(pattern, rewrite, func), report
