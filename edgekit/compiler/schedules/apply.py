"""Scheduling a whole module: every PrimFunc offered the rules of its target kind (dispatch.schedule_prim_func)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tvm

import edgekit.core.interrupts as interrupts
from edgekit.compiler.schedules.analysis import constant_params, task_key
from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext, RuleResult
from edgekit.compiler.schedules.dispatch import schedule_prim_func


def schedule_functions(
    mod: tvm.IRModule,
    ctx: RuleContext,
    rules: Sequence[Rule],
    fallback: Rule,
    tuning: Mapping[str, Knobs] | None = None,
) -> tuple[tvm.IRModule, dict[str, RuleResult]]:
    """Every PrimFunc of `mod` scheduled by its rule (tuned knobs from `tuning` where it has the task's key).
    Returns the module and {PrimFunc name: RuleResult}."""
    constants = constant_params(mod)
    report: dict[str, RuleResult] = {}
    for gv, func in list(mod.functions.items()):
        interrupts.check()  # between PrimFuncs: a signal TVM's C++ frames swallowed stops the build here
        if isinstance(func, tvm.tirx.PrimFunc):
            knobs = tuning.get(task_key(func, ctx.target)) if tuning else None
            mod[gv], report[gv.name_hint] = schedule_prim_func(
                func, ctx, knobs, constants.get(gv.name_hint, ()), rules, fallback
            )
    return mod, report
