"""Bilinear Resize between Q/DQ with onnxruntime's float arithmetic.

onnxruntime runs DequantizeLinear -> Resize(linear) -> QuantizeLinear unfused: a float bilinear resize whose
result is quantized. Its dequantized inputs sit on the grid s_x * integer and its ×2 weights are 1/16, 3/16,
9/16, so the exact result often lands on a rounding tie of the output's quantization: how the float sum is
rounded decides the uint8 result. TVM's resize2d interpolates in another order, which put an OCR text
detector's upsampled map one step off onnxruntime's in ~1 % of its elements. onnxruntime 1.32's NCHW kernel
(core/providers/cpu/tensor/upsample.cc, UpsampleBilinear) computes per output pixel, in float32:

    y = ((dx2*dy2 * X11 + dx1*dy2 * X21) + dx2*dy1 * X12) + dx1*dy1 * X22

with each weight product rounded first, and dx1 = |x_in - x1|, dx2 = |x_in - x2| from the clamped source
coordinate (both 0.5 where x1 == x2 at the border). This rewrite computes exactly that: gathers of the four
corners, each product rounded to float32 through float64 (exact there, and not contractible into an FMA), the
sums in float32 in that order. Later onnxruntime versions may interpolate separably; the test that compares
against the installed onnxruntime bit for bit is what notices.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from edgekit.compiler.relax_passes import prim_float, static_shape

_F32 = np.float32
_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


def source_coordinates(n_in: int, n_out: int, mode: str, scale: float | None = None) -> np.ndarray:
    """The source coordinate of each output index, as onnxruntime computes it (float32; scale = out / in unless
    given, as Upsample and Resize with `scales` give it)."""
    scale, x = _F32(n_out) / _F32(n_in) if scale is None else _F32(scale), np.arange(n_out, dtype=_F32)
    if mode == "asymmetric":
        return x / scale
    if mode == "align_corners":
        return np.zeros(n_out, _F32) if n_out == 1 else x * _F32(n_in - 1) / _F32(n_out - 1)
    if mode == "pytorch_half_pixel" and n_out == 1:
        return np.zeros(1, _F32)
    return (x + _F32(0.5)) / scale - _F32(0.5)


def axis_taps(
    n_in: int, n_out: int, mode: str, scale: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i1, i2, d1, d2) per output index: the two source indices and onnxruntime's distances to them."""
    c = np.clip(source_coordinates(n_in, n_out, mode, scale), _F32(0), _F32(n_in - 1)).astype(_F32)
    i1 = np.minimum(c.astype(np.int64), n_in - 1)
    i2 = np.minimum(i1 + 1, n_in - 1)
    d1, d2 = np.abs(c - i1.astype(_F32)), np.abs(c - i2.astype(_F32))
    border = i1 == i2
    d1[border], d2[border] = 0.5, 0.5
    return i1, i2, d1.astype(_F32), d2.astype(_F32)


def ort_bilinear(
    x: relax.Expr, shape: tuple[int, ...], out_hw: tuple[int, int], mode: str, scales: tuple[float, float] | None = None
) -> relax.Expr:
    """onnxruntime's bilinear resize of a static NCHW `x` to `out_hw` (scales: the (H, W) scales, if given)."""
    y1, y2, dy1, dy2 = axis_taps(shape[2], out_hw[0], mode, scales and scales[0])
    x1, x2, dx1, dx2 = axis_taps(shape[3], out_hw[1], mode, scales and scales[1])
    rows = [relax.op.take(x, relax.const(i.astype("int32")), axis=2) for i in (y1, y2)]
    corners = [
        relax.op.take(r, relax.const(i.astype("int32")), axis=3) for r in rows for i in (x1, x2)
    ]  # X11 X21 X12 X22
    weights = [np.outer(dy, dx).astype(_F32) for dy in (dy2, dy1) for dx in (dx2, dx1)]
    total = None
    for corner, weight in zip(corners, weights):
        product = relax.op.multiply(
            relax.op.astype(corner, "float64"), relax.const(weight.astype(np.float64), "float64")
        )
        term = relax.op.astype(product, "float32")
        total = term if total is None else relax.op.add(total, term)
    return total


def lower_quantized_bilinear_resizes(func: relax.Function) -> tuple[relax.Function, list[dict]]:
    """quantize(resize2d(dequantize(x), linear)) on a static 4-D NCHW tensor -> onnxruntime's bilinear sum,
    still between the same dequantize and quantize."""
    dequantized = is_op("relax.dequantize")(wildcard(), wildcard(), wildcard())
    resize = is_op("relax.image.resize2d")(dequantized, wildcard())
    pattern = is_op("relax.quantize")(resize, wildcard(), wildcard())
    report: list[dict] = []

    def rewrite(expr: relax.Expr, m: dict) -> relax.Expr:
        call = m[resize]
        attrs, shape, out_shape = call.attrs, static_shape(m[dequantized]), static_shape(call)
        mode = str(attrs.coordinate_transformation_mode)
        if (
            shape is None
            or out_shape is None
            or len(shape) != 4
            or str(attrs.layout) != "NCHW"
            or str(attrs.method) != "linear"
            or mode not in _MODES
            or any(prim_float(r) != 0 for r in attrs.roi)
            or str(call.ty.dtype) != "float32"
        ):
            return expr  # other layouts, modes and dtypes: TVM's resize2d as imported
        new = ort_bilinear(m[dequantized], shape, out_shape[2:], mode)
        report.append(
            {
                "op": "resize",
                "status": "lowered",
                "detail": f"bilinear {shape[2]}x{shape[3]} -> {out_shape[2]}x{out_shape[3]} ({mode}), "
                "onnxruntime's sum order",
            }
        )
        return relax.op.quantize(new, *expr.args[1:], axis=expr.attrs.axis, out_dtype=expr.attrs.out_dtype)

    return rewrite_call(pattern, rewrite, func), report
