"""ScalarMinMaxToClip: the importer's Clip / Max / Min with a scalar (call_tirs) become relax.clip."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, topi
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from edgekit.compiler.relax_passes import mutator_pass
from edgekit.compiler.relax_passes.scalar_minmax_to_clip import ScalarMinMaxToClip

from .ir import build

run = mutator_pass(ScalarMinMaxToClip, "ScalarMinMaxToClip")


def imported(*steps: tuple[Callable, relax.Expr]) -> tvm.IRModule:
    """main(x) = the chain of (topi op, bound) as TVM's ONNX importer emits Clip: bb.emit_te(topi.maximum, x, lo)."""

    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        for op, bound in steps:
            x = bb.emit_te(op, x, bound)
        return x  # bound to the output var gv = x, as in the Expected modules

    return build(body, x=((1, 4), "float32"))


def f32(value: float) -> relax.Constant:
    return relax.const(value, "float32")


def test_relu6_pair_becomes_one_clip() -> None:
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                lv = R.clip(x, R.prim_value(T.float32(0)), R.prim_value(T.float32("inf")))  # noqa: F841 - dead
                lv1 = R.clip(x, R.prim_value(T.float32(0)), R.prim_value(T.float32(6)))  # min(max(x, 0), 6)
                gv = lv1
                R.output(gv)
            return gv

    out = run(imported((topi.maximum, f32(0.0)), (topi.minimum, f32(6.0))))
    tvm.ir.assert_structural_equal(out["main"], Expected["main"])


def test_lone_min_is_clip_from_minus_inf() -> None:
    # -0.5: a bound exact in float32 (the clip keeps the float32 constant's value, not the decimal literal)
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                lv = R.clip(x, R.prim_value(T.float32("-inf")), R.prim_value(T.float32(-0.5)))
                gv = lv
                R.output(gv)
            return gv

    tvm.ir.assert_structural_equal(run(imported((topi.minimum, f32(-0.5))))["main"], Expected["main"])


def test_tensor_bound_is_left_alone() -> None:
    # maximum against a [4] constant is a broadcasting max, not a clip: the call_tir stays
    before = imported((topi.maximum, relax.const([0.0, 1.0, 2.0, 3.0], "float32")))
    tvm.ir.assert_structural_equal(run(before), before)


def test_inverted_bounds_are_not_merged() -> None:
    # Clip(min=6, max=0): ONNX (and the importer's max-then-min) gives min(max(x, 6), 0) = 0 everywhere, while one
    # relax.clip(x, 6, 0) legalizes to max(min(x, 0), 6) = 6: the pair must stay two clips
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                lv = R.clip(x, R.prim_value(T.float32(6)), R.prim_value(T.float32("inf")))
                lv1 = R.clip(lv, R.prim_value(T.float32("-inf")), R.prim_value(T.float32(0)))
                gv = lv1
                R.output(gv)
            return gv

    out = run(imported((topi.maximum, f32(6.0)), (topi.minimum, f32(0.0))))
    tvm.ir.assert_structural_equal(out["main"], Expected["main"])
