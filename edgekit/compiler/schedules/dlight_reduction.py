"""Softmax / layer norm (reductions over the innermost axis): dlight's CPU Reduction rule, rows in parallel."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tir import PARALLEL_MIN_ELEMS, block_work, blocks, reduction_blocks
from edgekit.compiler.tvm_patches import schedules_without_parallel


class DlightReduction(Rule):
    name = "dlight-reduction"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return bool(reduction_blocks(sch))

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        from tvm.s_tir import dlight

        work = max(block_work(sch, b) for b in blocks(sch))
        if ctx.threads > 1 and work >= PARALLEL_MIN_ELEMS * 8:
            new = dlight.cpu.Reduction().apply(sch.mod["main"], ctx.target, False)
        else:  # the same rule without its parallel loop (small rows: a thread-pool barrier costs more)
            with schedules_without_parallel():
                new = dlight.cpu.Reduction().apply(sch.mod["main"], ctx.target, False)
        if new is None:
            raise ValueError("dlight Reduction does not apply")
        sch.mod["main"] = new.mod["main"]  # type: ignore[index]
        return self.name
