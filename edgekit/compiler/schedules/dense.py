"""Matmul / Gemm / batched matmul: a register tile of rows x output-feature lanes."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tiles import prepack_dense_weights, regblock, resolve_knobs, tile_dims
from edgekit.compiler.schedules.tir import is_matmul, reduction_blocks, single_reduction


class Dense(Rule):
    name = "dense"
    knob_kind = "dense"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        reds = reduction_blocks(sch)
        return len(reds) == 1 and is_matmul(sch, reds[0])

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """(batch.., M, N, K) matmul: (batch, M/R, N/V, K, R, V) with an R x V accumulator tile in registers."""
        mm = single_reduction(sch)
        kn = resolve_knobs("dense", tile_dims(sch, "dense"), ctx.threads, knobs, ctx.caps)
        *batch, i, j, k = sch.get_loops(mm)
        regblock(sch, mm, outer=list(batch), row=(i, kn["row"]), col=(j, kn["vec"]), red=[k], knobs=kn)
        if ctx.prepack:
            prepack_dense_weights(sch, mm, int(kn["vec"]))
        return self.name
