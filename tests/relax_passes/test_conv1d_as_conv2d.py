"""Conv1dAsConv2d: conv1d(NCW) -> reshape to a height-1 image, conv2d with (1, s) strides, reshape back."""

from __future__ import annotations

import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from edgekit.compiler.relax_passes import mutator_pass
from edgekit.compiler.relax_passes.conv1d_as_conv2d import Conv1dAsConv2d

run = mutator_pass(Conv1dAsConv2d, "Conv1dAsConv2d")


def test_strided_grouped_conv1d_becomes_conv2d() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 16), "float32"), w: R.Tensor((8, 2, 3), "float32")) -> R.Tensor((1, 8, 8)):
            with R.dataflow():
                y = R.nn.conv1d(x, w, strides=2, padding=(1, 0), dilation=1, groups=2)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4, 16), "float32"), w: R.Tensor((8, 2, 3), "float32")) -> R.Tensor((1, 8, 8)):
            with R.dataflow():
                x2 = R.reshape(x, (1, 4, 1, 16))
                w2 = R.reshape(w, (8, 2, 1, 3))
                # padding (top, left, bottom, right) = (0, l, 0, r): the 1-D (left, right) on the width only
                y2 = R.nn.conv2d(x2, w2, strides=(1, 2), padding=(0, 1, 0, 0), dilation=(1, 1), groups=2)
                y = R.reshape(y2, (1, 8, 8))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(run(Before), Expected)


def test_channels_last_conv1d_is_left_alone() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 16, 4), "float32"), w: R.Tensor((8, 4, 3), "float32")) -> R.Tensor((1, 14, 8)):
            with R.dataflow():
                y = R.nn.conv1d(x, w, data_layout="NWC")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(run(Before), Before)
