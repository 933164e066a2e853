"""Elementwise / transpose / reshape chains: inlined into the outputs, each output parallel + vectorized."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tir import blocks, inline_elementwise, par_vec, reduction_blocks


class Injective(Rule):
    name = "injective"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return not reduction_blocks(sch)

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """Elementwise / layout chains: inline into the outputs, then parallel + vectorize each output."""
        inline_elementwise(sch, keep=set())
        for blk in blocks(sch):
            par_vec(sch, blk, ctx.threads)
        return self.name
