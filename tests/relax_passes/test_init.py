"""relax_passes/__init__.py: a failing rewrite is recorded as skipped where the pipeline gives a log, raised
where it gives none; mutator_pass copies the PrimFuncs a mutator emits into the result."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax, topi
from tvm.script import ir as I
from tvm.script import relax as R

from edgekit.compiler.relax_passes import mutator_pass, skippable_pass


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            y = R.nn.relu(x)
            R.output(y)
        return y


@relax.expr_functor.mutator
class Failing(relax.PyExprMutator):
    """Raises on the first call it visits, with a multi-line message (only the last line is logged)."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        raise ValueError("context the log leaves out\nrelu not supported")


@relax.expr_functor.mutator
class ReluAsTe(relax.PyExprMutator):
    """relu -> call_tir of a TE kernel: a PrimFunc the builder emits, which must reach the result."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        return self.builder_.call_te(topi.nn.relu, call.args[0], primfunc_name_hint="te_relu")


def test_failing_rewrite_is_logged_as_skipped() -> None:
    log: list[dict] = []
    out = mutator_pass(Failing, "Failing", log)(Before)
    assert log == [{"pass": "Failing", "skipped": "relu not supported"}]
    tvm.ir.assert_structural_equal(out, Before)  # the build goes on without the rewrite


def test_failing_rewrite_raises_without_a_log() -> None:
    with pytest.raises(ValueError, match="relu not supported"):
        mutator_pass(Failing, "Failing")(Before)


def test_skip_fallback_and_log_fields() -> None:
    # on_skip replaces "module unchanged"; logged_as and the extra fields go into the log entry
    def fail(mod: tvm.IRModule) -> tvm.IRModule:
        raise RuntimeError("no")

    log: list[dict] = []
    fallback = mutator_pass(ReluAsTe, "ReluAsTe")
    out = skippable_pass("Outer", fail, log, on_skip=fallback, logged_as="Inner", fallback="te")(Before)
    assert log == [{"pass": "Inner", "skipped": "no", "fallback": "te"}]
    assert [gv.name_hint for gv in out.get_global_vars()] == ["main", "te_relu"]


def test_emitted_primfuncs_are_copied() -> None:
    out = mutator_pass(ReluAsTe, "ReluAsTe")(Before)
    te_relu = out.get_global_var("te_relu")
    assert isinstance(out[te_relu], tvm.tirx.PrimFunc)
    call = out["main"].body.blocks[0].bindings[0].value
    assert call.op.name == "relax.call_tir" and call.args[0].same_as(te_relu)
