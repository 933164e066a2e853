"""The dispatcher: every fused PrimFunc gets the first rule in RULES that applies; a rule that fails is
replaced by the fallback, and the reason is recorded in the RuleResult (and so in meta.json).

Adding a rule: write a `Rule` subclass in its own file (see base.py), put an instance in the list of its
target kind below (CPU_RULES, CPU_INT8_RULES, GPU_RULES), in priority order; compiler/pipeline.rules_for picks
the list for a build.
"""

from __future__ import annotations

from collections.abc import Sequence

import tvm
from tvm.s_tir import Schedule

import edgekit.core.interrupts as interrupts
from edgekit.compiler.schedules.base import (
    CONST_PARAMS_ATTR,
    Knobs,
    Rule,
    RuleContext,
    RuleResult,
)
from edgekit.compiler.schedules.conv import ConvNHWC
from edgekit.compiler.schedules.dense import Dense
from edgekit.compiler.schedules.depthwise import DepthwiseConv
from edgekit.compiler.schedules.dlight_reduction import DlightReduction
from edgekit.compiler.schedules.fallback import Fallback
from edgekit.compiler.schedules.gpu_depthwise import GpuDepthwiseConv
from edgekit.compiler.schedules.gpu_dlight import GPU_FALLBACK, dlight_gpu_rules
from edgekit.compiler.schedules.gpu_recurrent import GpuRecurrent
from edgekit.compiler.schedules.injective import Injective
from edgekit.compiler.schedules.int8_conv import Int8Conv
from edgekit.compiler.schedules.reduction import ReductionVec
from edgekit.compiler.schedules.tiles import (
    default_knobs,
    format_knobs,
    knob_space,
    tile_dims,
)
from edgekit.compiler.schedules.winograd import WinogradInput, WinogradOutput
from edgekit.core.errors import message_line

CPU_RULES: list[Rule] = [
    WinogradInput(),
    WinogradOutput(),
    Injective(),
    ConvNHWC(),
    DepthwiseConv(),
    Dense(),
    ReductionVec(),
    DlightReduction(),
]
CPU_INT8_RULES: list[Rule] = [Int8Conv(), *CPU_RULES]  # the float layers of a quantized model get the fp32 rules
GPU_RULES: list[Rule] = [GpuRecurrent(), GpuDepthwiseConv(), *dlight_gpu_rules()]  # GPU_FALLBACK for the rest
KERNEL_RESULTS = {
    "mbconv": "mbconv kernel",
    "recurrent": "recurrent kernel",
    "block_sparse_matmul": "block-sparse kernel",
    "layer_norm": "layer-norm kernel",
    "softmax": "softmax kernel",
}  # the rest: XNOR kernels
FALLBACK = Fallback()
KERNEL_ATTR = "edgekit.kernel"  # hand-written TIR (edgekit/kernels): already scheduled


def pick_rule(sch: Schedule, ctx: RuleContext, rules: Sequence[Rule] = CPU_RULES, fallback: Rule = FALLBACK) -> Rule:
    return next((r for r in rules if r.applies(sch, ctx)), fallback)


def schedule_prim_func(
    func: tvm.tirx.PrimFunc,
    ctx: RuleContext,
    knobs: Knobs | None = None,
    constant_params: Sequence[int] = (),
    rules: Sequence[Rule] = CPU_RULES,
    fallback: Rule = FALLBACK,
) -> tuple[tvm.tirx.PrimFunc, RuleResult]:
    """Apply the first applicable rule. `knobs` (from a tuning database) override a tunable rule's defaults; if
    the rule fails with them it is retried with its defaults (a stale database never breaks a build).
    `constant_params`: parameters every caller passes a constant; only their layouts may change at compile time."""
    if func.attrs is not None and KERNEL_ATTR in func.attrs:
        return _hand_written(func, ctx, rules)
    try:
        rule = pick_rule(Schedule(func), ctx, rules, fallback)
        why = ""
    except Exception as exc:  # noqa: BLE001 - reported: the fallback's RuleResult carries the reason
        interrupts.check()
        rule, why = fallback, f"{type(exc).__name__}"
    if constant_params and rule.marks_constant_params:
        func = func.with_attr(CONST_PARAMS_ATTR, sorted(constant_params))
    if rule is not fallback:
        if knobs and rule.knob_kind:
            sch = Schedule(func)
            try:
                name = rule.apply(sch, ctx, knobs)  # before reading sch.mod: apply schedules it in place
                return sch.mod["main"], RuleResult(name, dict(knobs))
            except Exception as exc:  # noqa: BLE001 - reported in the RuleResult
                interrupts.check()
                why = f"tuned knobs failed: {message_line(exc, 160)}"
        sch = Schedule(func)
        try:
            name = rule.apply(sch, ctx)
            return sch.mod["main"], RuleResult(name, None, why)
        except Exception as exc:  # noqa: BLE001 - a rule bug must never break the build: reported in the RuleResult
            interrupts.check()
            why = f"{type(rule).__name__} failed: {message_line(exc, 160)}"
    sch = Schedule(func)
    try:
        fallback.apply(sch, ctx)
        return sch.mod["main"], RuleResult(fallback.name, None, why)
    except Exception as exc:  # noqa: BLE001 - reported in the RuleResult
        interrupts.check()
        return func, RuleResult("none", None, f"{why}; fallback failed: {message_line(exc, 160)}".lstrip("; "))


def _hand_written(
    func: tvm.tirx.PrimFunc, ctx: RuleContext, rules: Sequence[Rule]
) -> tuple[tvm.tirx.PrimFunc, RuleResult]:
    """An edgekit kernel: kept as written, or rebuilt by the rule that replaces it for this target kind."""
    kernel = str(func.attrs[KERNEL_ATTR])
    rule = next((r for r in rules if r.replaces_kernel == kernel), None)
    if rule is None:
        return func, RuleResult(KERNEL_RESULTS.get(kernel, "xnor-popcount kernel"))
    sch = Schedule(func)
    try:
        return sch.mod["main"] if rule.apply(sch, ctx) else func, RuleResult(rule.name)
    except Exception as exc:  # noqa: BLE001 - reported; a GPU build then refuses the unbound kernel by name
        interrupts.check()
        return func, RuleResult("none", None, f"{rule.name} failed: {message_line(exc, 160)}")


def tunable_space(
    func: tvm.tirx.PrimFunc, ctx: RuleContext
) -> tuple[str, Knobs, dict[str, list], dict[str, int]] | None:
    """(knob kind, default knobs, knob space, dims) of a PrimFunc whose rule has knobs, else None."""
    try:
        sch = Schedule(func)
        kind = pick_rule(sch, ctx).knob_kind
        if kind is None:
            return None
        dims = tile_dims(sch, kind)
    except Exception:  # noqa: BLE001 - not a schedulable PrimFunc: not tunable (the tuner reports the task list)
        interrupts.check()
        return None
    if kind == "dense" and dims["row_n"] == 1:
        # a GEMV streams each weight once: the tuner's cold-cache timing (weights from DRAM) picked 8 lanes for
        # MobileNetV2's classifier (-20 % there), which ran 20-40 % slower inside the model than the default
        return None
    return kind, default_knobs(kind, dims, ctx.threads, ctx.caps), knob_space(kind, dims, ctx.threads, ctx.caps), dims


__all__ = [
    "CPU_RULES",
    "CPU_INT8_RULES",
    "GPU_RULES",
    "FALLBACK",
    "GPU_FALLBACK",
    "pick_rule",
    "schedule_prim_func",
    "tunable_space",
    "format_knobs",
]
