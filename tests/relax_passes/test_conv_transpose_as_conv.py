"""ConvTransposeAsConv: stride = kernel conv2d_transpose -> 1x1 conv to Cout*k*k channels + depth-to-space."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgekit.compiler.relax_passes import mutator_pass
from edgekit.compiler.relax_passes.conv_transpose_as_conv import ConvTransposeAsConv

from .ir import Body, build

run = mutator_pass(ConvTransposeAsConv, "ConvTransposeAsConv")
W = np.arange(2 * 3 * 2 * 2, dtype="float32").reshape(2, 3, 2, 2)  # [Cin 2, Cout 3, kh 2, kw 2]


def module(body: Body) -> tvm.IRModule:
    """main(x[1, 2, 4, 5]) = body(bb, x); the weight is a constant, as after import."""
    return build(body, x=((1, 2, 4, 5), "float32"))


def test_upsampling_transpose_becomes_1x1_conv_and_depth_to_space() -> None:
    before = module(lambda bb, x: relax.op.nn.conv2d_transpose(x, relax.const(W), strides=2))
    # row (co, i, j) of the 1x1 weight is input-channel vector W[:, co, i, j], written out element by element
    w1x1 = np.zeros((3 * 2 * 2, 2, 1, 1), "float32")
    for co in range(3):
        for i in range(2):
            for j in range(2):
                w1x1[(co * 2 + i) * 2 + j, :, 0, 0] = W[:, co, i, j]

    def expected(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        z = bb.emit(relax.op.nn.conv2d(x, relax.const(w1x1)))  # [1, 12, 4, 5]
        z = bb.emit(relax.op.reshape(z, (1, 3, 2, 2, 4, 5)))  # (n, co, i, j, h, w)
        z = bb.emit(relax.op.permute_dims(z, [0, 1, 4, 2, 5, 3]))  # (n, co, h, i, w, j)
        return relax.op.reshape(z, (1, 3, 8, 10))

    tvm.ir.assert_structural_equal(run(before), module(expected))


def test_overlapping_transpose_is_left_alone() -> None:
    # stride 1 < kernel 2: output patches overlap, not a depth-to-space
    before = module(lambda bb, x: relax.op.nn.conv2d_transpose(x, relax.const(W), strides=1))
    tvm.ir.assert_structural_equal(run(before), before)
