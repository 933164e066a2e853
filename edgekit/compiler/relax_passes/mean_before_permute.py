"""Global average pooling of NHWC networks: mean over H, W with channels as vector lanes."""

from __future__ import annotations

import tvm
from tvm import relax

from edgekit.compiler.relax_passes import binding_of


@relax.expr_functor.mutator
class MeanBeforePermute(relax.PyExprMutator):
    """mean(act(permute(y, p)), axes, keepdims) -> permute(mean(act(y), p[axes], keepdims), p), act = clip or none:
    global average pooling of an NHWC network (ConvertLayout leaves mean in NCHW) then reduces over H, W with
    channels as vector lanes, the clip fuses into the conv before it, and only a 1x1xC tensor is permuted
    (MobileNetV2: a 7x7x1280 transpose+clip pass of 27 us gone)."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(tvm.ir.Op.get("relax.mean")) or not call.attrs.keepdims or call.attrs.axis is None:
            return call
        clip = binding_of(self, call.args[0], "relax.clip")
        permute = binding_of(self, clip.args[0] if clip is not None else call.args[0], "relax.permute_dims")
        if permute is None or permute.attrs.axes is None:
            return call
        p = [int(a) for a in permute.attrs.axes]
        y = permute.args[0]
        if clip is not None:
            y = relax.op.clip(y, clip.args[1], clip.args[2])
        axes = [p[int(a) % len(p)] for a in call.attrs.axis]
        return relax.op.permute_dims(relax.op.mean(y, axes, keepdims=True), p)
