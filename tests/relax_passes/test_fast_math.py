"""FastSigmoid (float32 sigmoid -> the polynomial-exp TE kernel) and fast_math (TVM's FastMathTransform, skippable).

The Expected modules emit their kernels with the same TE functions the passes use (_fast_sigmoid, topi.fast_erf):
what is checked is which call replaced which op; the kernels' numerics are tested with the builds."""

from __future__ import annotations

import tvm
from tvm import relax, topi

from edgekit.compiler.relax_passes import mutator_pass
from edgekit.compiler.relax_passes.fast_math import FastSigmoid, _fast_sigmoid, fast_math

from .ir import Body, build


def module(body: Body, dtype: str = "float32") -> tvm.IRModule:
    return build(body, x=((2, 8), dtype))


def test_float32_sigmoid_becomes_fast_sigmoid_kernel() -> None:
    before = module(lambda bb, x: relax.op.sigmoid(x))
    expected = module(lambda bb, x: bb.call_te(_fast_sigmoid, x))  # call_tir(_fast_sigmoid, (x,)) + its PrimFunc
    tvm.ir.assert_structural_equal(mutator_pass(FastSigmoid, "FastSigmoid")(before), expected)


def test_float16_sigmoid_is_left_alone() -> None:
    before = module(lambda bb, x: relax.op.sigmoid(x), "float16")
    tvm.ir.assert_structural_equal(mutator_pass(FastSigmoid, "FastSigmoid")(before), before)


def test_fast_math_swaps_erf_for_fast_erf() -> None:
    before = module(lambda bb, x: relax.op.erf(x))
    expected = module(lambda bb, x: bb.call_te(topi.fast_erf, x))
    tvm.ir.assert_structural_equal(fast_math(None)(before), expected)
