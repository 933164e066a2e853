"""What a schedule rule is. After TVM's dlight: a small class that decides itself whether it applies to a fused
PrimFunc and schedules it; the dispatcher (schedules/dispatch.py) is a list of rules in priority order.

To add a rule: write one file with a `Rule` subclass, add an instance to its target kind's list in dispatch.py
(CPU_RULES, CPU_INT8_RULES, GPU_RULES)."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.s_tir import Schedule

from edgekit.targets import TargetCaps

Knobs = dict[str, object]
CONST_PARAMS_ATTR = "edgekit.const_params"  # PrimFunc attr set by schedule_prim_func: indices of constant parameters


@dataclass(frozen=True)
class RuleContext:
    """What every rule may read: the target's capabilities (vector width, registers, VNNI...), the TVM target
    (for dlight), the threads the schedule is planned for, and whether weights may be re-laid out."""

    caps: TargetCaps
    target: tvm.target.Target
    threads: int
    prepack: bool = True

    @classmethod
    def for_target(cls, target: tvm.target.Target, threads: int, prepack: bool = True) -> "RuleContext":
        return cls(TargetCaps.from_tvm(target), target, threads, prepack)


@dataclass(frozen=True)
class RuleResult:
    """The rule a PrimFunc got: its name, the tuned knobs it used (None: the defaults), and why a better rule
    was not applied ("" when the first choice worked)."""

    rule: str
    knobs: Knobs | None = None
    fallback_reason: str = ""

    def to_json(self) -> dict:
        return {"rule": self.rule, "knobs": self.knobs, "fallback_reason": self.fallback_reason}


class Rule:
    """A schedule rule. `applies` inspects the PrimFunc's sblocks; `apply` schedules it in place and returns the
    name to report (a rule may report a variant, e.g. depthwise vs grouped). Rules with knobs also give their
    `knob_kind` ("conv", "depthwise", "dense": see tiles.py), which the tuner searches."""

    name: str = "?"
    knob_kind: str | None = None
    # the PrimFunc gets CONST_PARAMS_ATTR (which parameters are constants, so weights may be re-laid out at
    # compile time); a rule whose weights a Relax pass already packed says False
    marks_constant_params: bool = True
    # a rule for one of edgekit's hand-written kernels (its "edgekit.kernel" attribute): the dispatcher offers
    # such kernels only to these rules (e.g. the GPU twin of the CPU recurrence kernel)
    replaces_kernel: str | None = None

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        raise NotImplementedError

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.name}>"
