"""NHWC for every conv (edgekit's conv rules tile channels-last), with a fallback that cannot fail.

TVM's ConvertLayout rewrites the whole function at once: one op whose layout inference breaks ("Invalid SLayout:
can't find S in source layout ABCDE", from the 5-D stack TVM's importer made of Max/Min) used to fail the whole
build. If it raises, each conv is converted on its own instead: transposes into NHWC / HWIO before it and back to
NCHW after, with back-to-back transpose pairs between consecutive convs cancelled. Slower than a whole-graph
conversion (the transposes around elementwise ops stay), never wrong; the log (meta.json's rewrites_skipped)
says it happened and why.
"""

from __future__ import annotations

import tvm
from tvm import relax

from edgekit.compiler.relax_passes import RewriteLog, binding_of, mutator_pass, skippable_pass

# conv2d_transpose pinned to NCHW: ConvertLayout would otherwise carry NHWC into it, and TVM has no NHWC
# legalization for it (the op then reaches VM codegen un-lowered: "cannot emit this Relax operator")
NHWC = {"relax.nn.conv2d": ["NHWC", "HWIO"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}
TO_NHWC, TO_NCHW, OIHW_TO_HWIO = [0, 2, 3, 1], [0, 3, 1, 2], [2, 3, 1, 0]
FALLBACK = "per-operator NHWC: transposes around each conv"


@relax.expr_functor.mutator
class PerOperatorNhwc(relax.PyExprMutator):
    """conv2d(x, w) in NCHW / OIHW -> transpose(conv2d_nhwc(transpose(x), transpose(w))); a transpose into NHWC of a
    transpose out of NHWC is dropped."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(tvm.ir.Op.get("relax.nn.conv2d")):
            return call
        a, (x, w) = call.attrs, call.args
        if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout != "NCHW":
            return call
        y = relax.op.nn.conv2d(
            self._to_nhwc(x),
            relax.op.permute_dims(w, OIHW_TO_HWIO),
            strides=a.strides,
            padding=a.padding,
            dilation=a.dilation,
            groups=a.groups,
            data_layout="NHWC",
            kernel_layout="HWIO",
            out_dtype=a.out_dtype,
        )
        return relax.op.permute_dims(self.builder_.emit(y), TO_NCHW)

    def _to_nhwc(self, x: relax.Expr) -> relax.Expr:
        back = binding_of(self, x, "relax.permute_dims")
        if back is not None and back.attrs.axes is not None and [int(v) for v in back.attrs.axes] == TO_NCHW:
            return back.args[0]  # the previous conv's NHWC output, before its transpose back
        return relax.op.permute_dims(x, TO_NHWC)


def nhwc_layout(log: RewriteLog | None = None) -> tvm.transform.Pass:
    """ConvertLayout(NHWC); if it raises, PerOperatorNhwc (recorded in `log`; without a log the error is raised)."""
    # ConvertLayout is looked up when the pass runs, not when the pass list is made, so a failure at either
    # point (tests replace it with one that raises) takes the per-operator fallback
    return skippable_pass(
        "EdgekitNhwcLayout",
        lambda mod: relax.transform.ConvertLayout(NHWC)(mod),
        log,
        logged_as="ConvertLayout",
        on_skip=mutator_pass(PerOperatorNhwc, "PerOperatorNhwc"),
        fallback=FALLBACK,
    )
