"""The two transforms of a Winograd F(4x4, 3x3) conv (edgekit.compiler.relax_passes.winograd); its 36 batched
GEMMs take the dense rule."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.relax_passes import winograd
from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tir import (
    PARALLEL_MIN_ELEMS,
    block_names,
    block_work,
    blocks,
    extent,
    inline_elementwise,
    pick_lanes,
)


class WinogradInput(Rule):
    name = "winograd-input"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return winograd.INPUT_BLOCK in block_names(sch)

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """V[e = (a, b), p, c]: per tile p and channel vector, for each row a of B^T d (6 vectors, computed in
        place from the input with the zero padding as bounds checks), its 6 columns b; a, b and the taps are
        unrolled, so every Select chain folds to one explicit sum."""
        blk = sch.get_sblock(winograd.INPUT_BLOCK)
        e, p, c = sch.get_loops(blk)
        a, b = sch.split(e, [None, winograd.ALPHA])
        c_o, c_i = sch.split(c, [None, pick_lanes(extent(sch, c), prefer=(16, 8))])
        sch.reorder(p, c_o, a, b, c_i)
        if ctx.threads > 1 and block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
            sch.parallel(sch.fuse(p, c_o))
        winograd_first_pass_at(sch, sch.get_sblock(winograd.INPUT_ROWS_BLOCK), at=a, unroll=(a, b), lanes=c_i)
        return self.name


class WinogradOutput(Rule):
    name = "winograd-output"

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return winograd.OUTPUT_BLOCK in block_names(sch)

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        """y[n, h, w, k] with the bias / residual / activation epilogue: h and w split into 4x4 tiles whose 16
        positions are unrolled; the second pass of the output transform (S A) is inlined into the epilogue, the
        first (S = A^T M) computed per output row of the tile."""
        rows = sch.get_sblock(winograd.OUTPUT_ROWS_BLOCK)
        inline_elementwise(sch, keep={rows})
        (blk,) = [b for b in blocks(sch) if sch.get(b).name_hint != winograd.OUTPUT_ROWS_BLOCK]
        n, h, w, k = sch.get_loops(blk)
        h_o, h_i = sch.split(h, [None, winograd.TILE])
        w_o, w_i = sch.split(w, [None, winograd.TILE])
        k_o, k_i = sch.split(k, [None, pick_lanes(extent(sch, k), prefer=(16, 8))])
        sch.reorder(n, h_o, w_o, k_o, h_i, w_i, k_i)
        if ctx.threads > 1 and block_work(sch, blk) >= PARALLEL_MIN_ELEMS:
            sch.parallel(sch.fuse(n, h_o, w_o))
        winograd_first_pass_at(sch, rows, at=h_i, unroll=(h_i, w_i), lanes=k_i)
        return self.name


def winograd_first_pass_at(sch: Schedule, rows, at, unroll: tuple, lanes) -> None:
    """Compute one row of a transform's first pass (6 channel vectors: a stack buffer; a whole 6x6 tile would
    be heap scratch, see regblock) inside loop `at`; unroll the position loops and its 6 taps so every Select
    chain folds; vectorize the channel lanes of both passes."""
    sch.compute_at(rows, at, preserve_unit_loops=True)
    *_, taps, _tile, row_lanes = sch.get_loops(rows)
    for loop in (*unroll, taps):
        sch.unroll(loop)
    sch.vectorize(lanes)
    sch.vectorize(row_lanes)
