"""Depthwise and grouped NHWC convolution: channels are both the reduction's and the output's vector lanes."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tiles import regblock, resolve_knobs, tile_dims
from edgekit.compiler.schedules.tir import extent, single_reduction, the_reduction_is


class DepthwiseConv(Rule):
    name = "conv2d-nhwc-depthwise"
    knob_kind = "depthwise"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return the_reduction_is(sch, "group_conv2d_nhwc")

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """Depthwise (or grouped) NHWC conv: channels are both the reduction's and the output's vector lanes.
        Depthwise is memory-bound, so the zero padding is inlined (a bounds check per tap, no padded copy)."""
        conv = single_reduction(sch)
        k = resolve_knobs("depthwise", tile_dims(sch, "depthwise"), ctx.threads, knobs, ctx.caps)
        for prod in sch.get_producers(conv):
            sch.compute_inline(prod)
        n, h, w, co, kh, kw, ci = sch.get_loops(conv)
        regblock(sch, conv, outer=[n, h], row=(w, k["row"]), col=(co, k["vec"]), red=[kh, kw, ci], knobs=k)
        return "conv2d-nhwc-depthwise" if extent(sch, ci) == 1 else "conv2d-nhwc-grouped"
