"""Dense NHWC convolution (any stride, padding, kernel): a register tile of output pixels x channel lanes."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tiles import prepack_weights, regblock, resolve_knobs, tile_dims
from edgekit.compiler.schedules.tir import extent, single_reduction, the_reduction_is


class ConvNHWC(Rule):
    name = "conv2d-nhwc-regblock"
    knob_kind = "conv"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return the_reduction_is(sch, "conv2d_nhwc")

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """Dense NHWC conv: (n, h, co/V, w/R, kh, kw, ci, R, V) with an R x V accumulator tile in registers."""
        conv = single_reduction(sch)
        k = resolve_knobs("conv", tile_dims(sch, "conv"), ctx.threads, knobs, ctx.caps)
        n, h, w, co, kh, kw, ci = sch.get_loops(conv)
        extents = tuple(extent(sch, loop) for loop in (kh, kw, ci, co))
        regblock(sch, conv, outer=[n, h], row=(w, k["row"]), col=(co, k["vec"]), red=[kh, kw, ci], knobs=k)
        if ctx.prepack:
            prepack_weights(sch, conv, extents, int(k["vec"]))
        return self.name
