"""int8 builds: QDQ lowering + uint8 x int8 -> int32 conv kernels (AVX-512 VNNI `vpdpbusd` where the target has it).

compiler/pipeline.prepare_int8 lowers the QDQ graph to integer Relax ops (exact vs onnxruntime) and packs the
eligible convs; here every fused PrimFunc gets the int8 conv rule (schedules/int8_conv.py) or, for anything else,
the fp32 rules (dtype-agnostic). Float layers left in a quantized model fold their weight re-layouts at compile
time, as the fp32 build does.
"""
from __future__ import annotations

import tvm
from tvm import relax

import edgekit.interrupts as interrupts
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.pipeline import prepare_int8
from edgekit.compiler.schedules.analysis import constant_params, fold_weight_prepacks
from edgekit.compiler.schedules.base import RuleContext, RuleResult
from edgekit.compiler.schedules.cpu import planned_threads
from edgekit.compiler.schedules.dispatch import RULES, schedule_prim_func
from edgekit.compiler.schedules.int8_conv import Int8Conv

INT8_RULES = [Int8Conv(), *RULES]
Report = dict[str, RuleResult]


def schedule_int8(mod: tvm.IRModule, target: tvm.target.Target, opts: BuildOptions = BuildOptions(),
                  log: list | None = None) -> tuple[tvm.IRModule, Report, list[dict]]:
    """Returns the scheduled module, {PrimFunc: RuleResult} and lower_qdq's per-layer report. The tuning
    database applies to the float layers' tunable rules, as in the fp32 build."""
    from edgekit.compiler.schedules.analysis import task_key

    ctx = RuleContext.for_target(target, planned_threads(opts), opts.prepack)
    mod, layers = prepare_int8(mod, ctx.caps, log)
    constants = constant_params(mod)
    report: Report = {}
    for gv, func in list(mod.functions.items()):
        interrupts.check()
        if isinstance(func, tvm.tirx.PrimFunc):
            knobs = opts.tuning.get(task_key(func, target)) if opts.tuning else None
            mod[gv], report[gv.name_hint] = schedule_prim_func(func, ctx, knobs, constants.get(gv.name_hint, ()), INT8_RULES)
    return fold_weight_prepacks(mod), report, layers


def build_int8(mod: tvm.IRModule, target: tvm.target.Target, opts: BuildOptions = BuildOptions()
               ) -> tuple[tvm.runtime.Executable, Report, list[dict]]:
    mod, report, layers = schedule_int8(mod, target, opts)
    executable = relax.build(mod, target=target)
    interrupts.check()
    return executable, report, layers


__all__ = ["build_int8", "schedule_int8", "prepare_int8", "INT8_RULES"]
