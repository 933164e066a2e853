"""TVM's dlight GPU rules (matmul, GEMV, reduction, general reduction, fallback) as edgekit rules.

dlight's `apply` returns None where its rule does not fit; here that is `applies() == False`, so the dispatcher
moves on to the next rule and reports which one scheduled each kernel."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm.s_tir import Schedule, dlight

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext


class DlightGpu(Rule):
    """One dlight GPU rule; `make` builds it (dlight rules are cheap objects, built per use)."""

    marks_constant_params = False  # GPU weights keep their layout: no compile-time re-layout pass runs

    def __init__(self, name: str, make: Callable[[], object]) -> None:
        self.name = name
        self._make = make

    def _scheduled(self, sch: Schedule, ctx: RuleContext) -> Schedule | None:
        with ctx.target:
            return self._make().apply(sch.mod["main"], ctx.target, False)

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        try:
            return self._scheduled(sch, ctx) is not None
        except tvm.error.TVMError:
            return False

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        new = self._scheduled(sch, ctx)
        if new is None:
            raise ValueError(f"{self.name} does not apply")
        sch.mod["main"] = new.mod["main"]  # type: ignore[index]
        return self.name


def dlight_gpu_rules() -> list[Rule]:
    return [
        DlightGpu("gpu-matmul", dlight.gpu.Matmul),
        DlightGpu("gpu-gemv", dlight.gpu.GEMV),
        DlightGpu("gpu-reduction", dlight.gpu.Reduction),
        DlightGpu("gpu-general-reduction", dlight.gpu.GeneralReduction),
    ]


# spatial loops bound to blocks x threads, reductions serial per thread: what a kernel no rule fits gets
GPU_FALLBACK = DlightGpu("gpu-fallback", dlight.gpu.Fallback)
