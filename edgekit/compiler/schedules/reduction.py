"""Pooling / mean over non-innermost axes: channels (innermost in NHWC) vectorized inside the reduction."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tir import (
    PARALLEL_MIN_ELEMS,
    block_work,
    extent,
    inline_elementwise,
    inline_pad,
    iter_kinds,
    other_spatial,
    par_vec,
    pick_lanes,
    reduces_innermost,
    reduction_blocks,
    single_reduction,
    vectorize_lanes,
)


class ReductionVec(Rule):
    name = "reduction-vec"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        reds = reduction_blocks(sch)
        return len(reds) == 1 and not reduces_innermost(sch, reds[0])

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """Pooling / mean over non-innermost axes: innermost spatial axis (channels in NHWC) moved inside the
        reduction and vectorized, leading spatial axes in parallel."""
        inline_pad(sch, single_reduction(sch))
        inline_elementwise(sch, keep=set())
        red = single_reduction(sch)
        for blk in other_spatial(sch, red):
            par_vec(sch, blk, ctx.threads)
        kinds = iter_kinds(sch, red)
        loops = sch.get_loops(red)
        spatial, reduce_ = loops[: kinds.index("R")], loops[kinds.index("R") :]
        c_o, c_i = sch.split(spatial[-1], [None, pick_lanes(extent(sch, spatial[-1]), prefer=(32, 16, 64, 8))])
        sch.reorder(*spatial[:-1], c_o, *reduce_, c_i)
        par = sch.fuse(*spatial[:-1], c_o)
        if ctx.threads > 1 and block_work(sch, red) >= PARALLEL_MIN_ELEMS * 8:
            sch.parallel(par)
        vectorize_lanes(sch, c_i, unroll_outer=False)
        sch.decompose_reduction(red, reduce_[0])
        return self.name
