"""pack_int8_convs: an NHWC u8 x HWIO s8 -> s32 conv -> call_tir of the packed-weight kernel; the zero-point pad
ConvertLayout leaves between two transposes is folded into the kernel.

The kernels come from their TE builders (conv2d_u8s8_te / conv2d_s8s8_te, tested numerically with the int8
builds); the packed weights [CO/16, KH, KW, CI/4, 16, 4] and the sdot correction are recomputed here."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes.pack_int8_convs import (
    CONV_BLOCK,
    CONV_BLOCK_7BIT,
    conv2d_s8s8_te,
    conv2d_u8s8_te,
    pack_int8_convs,
)

from .ir import build, const

X = ((1, 4, 4, 6), "uint8")  # 6 input channels: padded to 8 in the packed weight


def weight(co: int = 16, big: bool = False) -> np.ndarray:
    w = np.random.default_rng(0).integers(-64, 65, (3, 3, 6, co)).astype("int8")  # HWIO
    if big:
        w[0, 0, 0, 0] = 100  # |w| > 64: the 7-bit (vpmaddubsw) kernel would overflow int16
    return w


def packed(w: np.ndarray) -> np.ndarray:
    """wp[ob, h, w, cb, lane, k] = W[h, w, 4 cb + k, 16 ob + lane], zero for the padded input channels."""
    kh, kw, ci, co = w.shape
    wp = np.zeros((co // 16, kh, kw, 2, 16, 4), "int8")
    for ob, h, x, cb, lane, k in np.ndindex(*wp.shape):
        if 4 * cb + k < ci:
            wp[ob, h, x, cb, lane, k] = w[h, x, 4 * cb + k, 16 * ob + lane]
    return wp


def int8_conv(w: np.ndarray, padding: int = 1) -> tvm.IRModule:
    return build(
        lambda bb, x: relax.op.nn.conv2d(
            x, const(w, "int8"), padding=padding, data_layout="NHWC", kernel_layout="HWIO", out_dtype="int32"
        ),
        x=X,
    )


def test_conv_becomes_packed_u8s8_kernel() -> None:
    w = weight(big=True)
    # call_te(kernel, x, packed weights, strides, pads (t, l, b, r), dilation, pad value, block name)
    expected = build(
        lambda bb, x: bb.call_te(
            conv2d_u8s8_te,
            x,
            const(packed(w), "int8"),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            0,
            CONV_BLOCK,
            primfunc_name_hint="conv2d_u8s8",
        ),
        x=X,
    )
    tvm.ir.assert_structural_equal(pack_int8_convs()(int8_conv(w)), expected)


def test_zero_point_pad_between_transposes_folds_into_the_kernel() -> None:
    w = weight()  # |w| <= 64: the 7-bit kernel

    def before(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        # what lower_qdq's pad with z_x looks like after ConvertLayout: pad has no layout rule, so it stays NCHW
        nchw = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2]))
        pad = bb.emit(relax.op.nn.pad(nchw, [0, 0, 0, 0, 1, 1, 2, 2], pad_value=3.0))
        nhwc = bb.emit(relax.op.permute_dims(pad, [0, 2, 3, 1]))
        return relax.op.nn.conv2d(nhwc, const(w, "int8"), data_layout="NHWC", kernel_layout="HWIO", out_dtype="int32")

    # the transposes and the pad die; the kernel pads (top 1, left 2, bottom 1, right 2) with the zero point 3
    expected = build(
        lambda bb, x: bb.call_te(
            conv2d_u8s8_te,
            x,
            const(packed(w), "int8"),
            (1, 1),
            (1, 2, 1, 2),
            (1, 1),
            3,
            CONV_BLOCK_7BIT,
            primfunc_name_hint="conv2d_u8s8",
        ),
        x=X,
    )
    tvm.ir.assert_structural_equal(pack_int8_convs()(build(before, x=X)), expected)


def test_same_signed_dot_kernel_gets_the_shift_correction() -> None:
    w = weight()
    correction = np.array([128 * int(w[..., o].astype(np.int64).sum()) for o in range(16)], "int32")  # 128 * sum(W[o])
    expected = build(
        lambda bb, x: bb.call_te(
            conv2d_s8s8_te,
            x,
            const(packed(w), "int8"),
            const(correction, "int32"),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            0,
            primfunc_name_hint="conv2d_s8s8",
        ),
        x=X,
    )
    tvm.ir.assert_structural_equal(pack_int8_convs(same_signed_dot=True)(int8_conv(w)), expected)


def test_output_channels_not_a_multiple_of_16_are_left_alone() -> None:
    before = int8_conv(weight(co=8))
    tvm.ir.assert_structural_equal(pack_int8_convs()(before), before)
