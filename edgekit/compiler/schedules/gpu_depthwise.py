"""Depthwise and grouped NCHW convolution on a GPU (dlight has no rule for it: only its Fallback fits).

Each thread computes a run of `ROW` neighbouring output pixels of one channel row in registers, so every
input value it loads serves up to ROW x kw taps; the zero padding is inlined (a bounds check per tap) and the
epilogue (bias, activation, residual) is folded into the register write-back."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.compiler.schedules.tir import (
    extent,
    inline_intermediates,
    largest_divisor,
    reverse_inline_epilogue,
    single_reduction,
    the_reduction_is,
    unbound_blocks,
)

ROW = 4  # outputs per thread along W
THREADS = 128  # threads per block


class GpuDepthwiseConv(Rule):
    name = "gpu-conv2d-depthwise"
    marks_constant_params = False

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        return the_reduction_is(sch, "group_conv2d_nchw")

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        conv = single_reduction(sch)
        for producer in sch.get_producers(conv):
            sch.compute_inline(producer)
        inline_intermediates(sch, conv)
        store = sch.cache_write(conv, 0, "local")
        reverse_inline_epilogue(sch, store)
        n, c, h, w, rc, rh, rw = sch.get_loops(conv)
        depthwise = extent(sch, rc) == 1
        wo, wi = sch.split(w, [None, largest_divisor(extent(sch, w), ROW)])
        sch.reorder(n, c, h, wo, rc, rh, rw, wi)
        bx, tx = sch.split(sch.fuse(n, c, h, wo), [None, THREADS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.reverse_compute_at(store, tx)
        sch.decompose_reduction(conv, rc)
        sch.unroll(wi)
        left = unbound_blocks(sch.mod["main"])
        if left:  # an epilogue the store could not absorb: the dispatcher takes the GPU fallback instead
            raise ValueError(f"blocks {left} are not thread-bound")
        return self.name if depthwise else "gpu-conv2d-grouped"
