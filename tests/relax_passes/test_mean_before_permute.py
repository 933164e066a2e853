"""MeanBeforePermute: mean(clip(permute(y))) over the permuted H, W -> permute(mean(clip(y))) over y's own axes."""

from __future__ import annotations

import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from edgekit.compiler.relax_passes import mutator_pass
from edgekit.compiler.relax_passes.mean_before_permute import MeanBeforePermute

run = mutator_pass(MeanBeforePermute, "MeanBeforePermute")


def test_global_pool_of_nhwc_moves_before_the_transpose() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 7, 7, 8), "float32")) -> R.Tensor((1, 8, 1, 1), "float32"):
            with R.dataflow():
                p = R.permute_dims(x, [0, 3, 1, 2])  # NHWC -> NCHW, as ConvertLayout leaves it before the mean
                c = R.clip(p, R.prim_value(T.float32(0)), R.prim_value(T.float32(6)))
                m = R.mean(c, axis=[2, 3], keepdims=True)
                R.output(m)
            return m

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 7, 7, 8), "float32")) -> R.Tensor((1, 8, 1, 1), "float32"):
            with R.dataflow():
                p = R.permute_dims(x, [0, 3, 1, 2])  # now dead (DeadCodeElimination follows in the pipeline)
                c = R.clip(p, R.prim_value(T.float32(0)), R.prim_value(T.float32(6)))  # noqa: F841 - dead
                c2 = R.clip(x, R.prim_value(T.float32(0)), R.prim_value(T.float32(6)))
                m2 = R.mean(c2, axis=[1, 2], keepdims=True)  # NCHW axes 2, 3 are NHWC axes 1, 2
                m = R.permute_dims(m2, [0, 3, 1, 2])  # only the 1x1x8 result is transposed
                R.output(m)
            return m

    tvm.ir.assert_structural_equal(run(Before), Expected)


def test_mean_without_keepdims_is_left_alone() -> None:
    # without keepdims the reduced axes vanish: the permutation no longer maps onto the result
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 7, 7, 8), "float32")) -> R.Tensor((1, 8), "float32"):
            with R.dataflow():
                p = R.permute_dims(x, [0, 3, 1, 2])
                m = R.mean(p, axis=[2, 3], keepdims=False)
                R.output(m)
            return m

    tvm.ir.assert_structural_equal(run(Before), Before)
