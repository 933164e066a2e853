"""The safe default for any PrimFunc, and what a rule that failed is replaced by."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tir import PARALLEL_MIN_ELEMS, block_work, blocks, iter_kinds, par_vec


class Fallback(Rule):
    name = "fallback-parallel"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return True

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """Safe default for anything: per block, leading spatial loops in parallel, innermost spatial vectorized."""
        for blk in blocks(sch):
            kinds = iter_kinds(sch, blk)
            loops = sch.get_loops(blk)
            if len(loops) != len(kinds):
                continue  # loops do not map 1:1 onto block iters: leave it alone
            lead = len(kinds) - len(kinds.lstrip("S"))
            if "R" not in kinds:
                par_vec(sch, blk, ctx.threads)
            elif lead and ctx.threads > 1 and block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
                sch.parallel(sch.fuse(*loops[:lead]) if lead > 1 else loops[0])
        return self.name
