"""LSTM / GRU / RNN on a GPU: edgekit's recurrence kernel (a hand-written CPU TIR kernel, kernels/recurrent.py)
rebuilt as its GPU twin (kernels/recurrent_gpu.py: a block per direction, a thread per hidden unit), from the
RecurrentSpec the kernel records. Same parameters, so the Relax call around it is unchanged."""

from __future__ import annotations

from tvm.s_tir import Schedule

from edgekit.compiler.schedules.base import Knobs, Rule, RuleContext
from edgekit.kernels.recurrent import SPEC_ATTR, spec_of
from edgekit.kernels.recurrent_gpu import gpu_sequence_func


class GpuRecurrent(Rule):
    name = "gpu-recurrent"
    replaces_kernel = "recurrent"
    marks_constant_params = False

    def applies(self, sch: Schedule, ctx: RuleContext) -> bool:
        attrs = sch.mod["main"].attrs
        return attrs is not None and str(attrs.get("edgekit.kernel", "")) == self.replaces_kernel

    def apply(self, sch: Schedule, ctx: RuleContext, knobs: Knobs | None = None) -> str:
        func = sch.mod["main"]
        limit = int(ctx.target.attrs.get("max_num_threads", 1024))
        spec = spec_of(func)
        if spec.hidden > limit:
            raise ValueError(f"hidden size {spec.hidden} needs more than the target's {limit} threads per block")
        twin = gpu_sequence_func(spec)
        for key, value in func.attrs.items():  # the Relax build's attributes; not the CPU kernel's markers
            if key not in ("edgekit.kernel", SPEC_ATTR):
                twin = twin.with_attr(key, value)
        sch.mod["main"] = twin  # type: ignore[index]
        return self.name
