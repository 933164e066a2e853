"""WinogradConv: a 3x3 stride-1 NHWC conv -> input transform, batched matmul with U = G g G^T, output transform.

The transforms are emitted with the module's own TE builders (input_transform / output_transform, checked
numerically by tests/test_winograd.py); U is recomputed here entry by entry from the standard G."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import mutator_pass
from edgekit.compiler.relax_passes.winograd import (
    INPUT_BLOCK,
    OUTPUT_BLOCK,
    WinogradConv,
    input_transform,
    output_transform,
)

from .ir import build, const

run = mutator_pass(WinogradConv, "WinogradConv")
# F(4x4, 3x3) for the interpolation points 0, +-1, +-2, infinity (Lavin & Gray 2015)
F = Fraction
G = [
    [F(1, 4), 0, 0],
    [F(-1, 6), F(-1, 6), F(-1, 6)],
    [F(-1, 6), F(1, 6), F(-1, 6)],
    [F(1, 24), F(1, 12), F(1, 6)],
    [F(1, 24), F(-1, 12), F(1, 6)],
    [0, 0, 1],
]


def conv(c: int, stride: int = 1) -> tuple[tvm.IRModule, np.ndarray]:
    """main(x[1, 16, 16, c]) = conv2d NHWC / HWIO 3x3 padding 1: 16 output tiles of 4x4, the minimum."""
    # multiples of 576 = 24 * 24, G's largest denominator squared: every term of U is an integer, so U is exact
    # in float64 whatever the summation order (the pass's einsum and the loop below agree bit for bit)
    w = (np.random.default_rng(0).integers(-3, 4, (3, 3, c, c)) * 576).astype("float32")

    def body(bb, x):
        return relax.op.nn.conv2d(
            x,
            const(w, "float32"),
            strides=stride,
            padding=1,
            data_layout="NHWC",
            kernel_layout="HWIO",
        )

    return build(body, x=((1, 16, 16, c), "float32")), w


def test_3x3_conv_becomes_three_winograd_calls() -> None:
    before, w = conv(16)
    u = np.zeros((36, 16, 16), np.float64)  # U[a * 6 + b] = sum_ij G[a][i] g[i, j] G[b][j]
    for a in range(6):
        for b in range(6):
            for i in range(3):
                for j in range(3):
                    u[a * 6 + b] += float(G[a][i] * G[b][j]) * w[i, j]

    def expected(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        # opaque input transform (8), output transform fusable with elementwise consumers (4): FuseOps patterns
        v = bb.emit(
            bb.call_te(
                input_transform, x, 1, 1, 16, 16, primfunc_name_hint=INPUT_BLOCK, primfunc_attrs={"op_pattern": 8}
            )
        )
        m = bb.emit(relax.op.matmul(v, const(u, "float32")))
        return bb.call_te(
            output_transform, m, 1, 16, 16, primfunc_name_hint=OUTPUT_BLOCK, primfunc_attrs={"op_pattern": 4}
        )

    tvm.ir.assert_structural_equal(run(before), build(expected, x=((1, 16, 16, 16), "float32")))


def test_narrow_and_strided_convs_are_left_alone() -> None:
    for before, _ in (conv(8), conv(16, stride=2)):  # below MIN_CHANNELS; stride 2 is not F(4x4, 3x3)
        tvm.ir.assert_structural_equal(run(before), before)
