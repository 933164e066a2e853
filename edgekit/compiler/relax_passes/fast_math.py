"""erf / exp / tanh / softmax / sigmoid -> TVM's vectorizable polynomial versions (topi.fast_*). libm's erff/expf
are scalar calls: GELU's erf alone was 40% of the small ViT, and the SiLU epilogues of a YOLO-style detector's
convs cost more than the convs. Max error ~1e-7 on the zoo (validated like everything else)."""

from __future__ import annotations

import tvm
from tvm import relax, te, topi

from edgekit.compiler.relax_passes import RewriteLog, skippable_pass


def _fast_sigmoid(x: te.Tensor) -> te.Tensor:
    # 1 / (1 + e^-x) with the polynomial exp (its input is clamped to +-88, so the tails are exactly 0 and 1 in
    # float32, as with libm); tir.sigmoid would lower to one scalar expf call per element
    return topi.divide(
        tvm.tirx.const(1.0, x.dtype), topi.add(tvm.tirx.const(1.0, x.dtype), topi.fast_exp(topi.negative(x)))
    )


@relax.expr_functor.mutator
class FastSigmoid(relax.PyExprMutator):
    """relax.sigmoid (SiLU, LSTM/GRU gates, hard attention) -> _fast_sigmoid; FastMathTransform has no sigmoid."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if call.op.same_as(tvm.ir.Op.get("relax.sigmoid")) and call.args[0].ty.dtype == "float32":
            return self.builder_.call_te(_fast_sigmoid, call.args[0])
        return call


def fast_math(log: RewriteLog | None = None) -> tvm.transform.Pass:
    return skippable_pass("EdgekitFastMath", relax.transform.FastMathTransform(), log)
