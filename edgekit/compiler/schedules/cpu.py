"""edgekit's CPU build: fast untuned TVM code for x86-64 / AArch64 / ARMv7.

TVM 0.27's default CPU pipeline applies no schedule at all (every op is a naive single-threaded loop).
`schedule_cpu` runs the Relax passes of compiler/pipeline.py (NHWC, fusion, rewrites), then gives every fused
PrimFunc the first rule of schedules/dispatch.py that applies:

  winograd-input/-output  the transforms of a Winograd F(4x4, 3x3) conv
  injective               elementwise / transpose / reshape chains: inlined, parallel + vectorized
  conv2d-nhwc-regblock    dense conv (any stride/padding/kernel): register tile of output pixels x channel lanes
  conv2d-nhwc-depthwise   the same tile shape for depthwise (and grouped) conv
  dense                   matmul/Gemm/batched matmul: register tile of rows x output-feature lanes
  reduction-vec           pooling / mean over non-innermost axes: channels vectorized, rows in parallel
  dlight-reduction        softmax / layer norm (dlight's CPU Reduction rule: rows in parallel)
  fallback-parallel       what a rule that raised is replaced by (the reason is in its RuleResult)

Tile sizes follow the target's vector registers (TargetCaps); the tunable rules' knobs come from a tuning
database when BuildOptions.tuning has the PrimFunc's key (schedules/analysis.task_key).
"""
from __future__ import annotations

import tvm
from tvm import relax

import edgekit.interrupts as interrupts
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.pipeline import prepare_fp32
from edgekit.compiler.relax_passes import RewriteLog
from edgekit.compiler.schedules.analysis import constant_params, cpu_count, effective_threads, fold_weight_prepacks, task_key
from edgekit.compiler.schedules.base import RuleContext, RuleResult
from edgekit.compiler.schedules.dispatch import schedule_prim_func

Report = dict[str, RuleResult]


def planned_threads(opts: BuildOptions) -> int:
    """The threads a build's parallel loops are planned for: --threads, else all cores of this machine."""
    return opts.threads or cpu_count()


def schedule_cpu(mod: tvm.IRModule, target: tvm.target.Target, opts: BuildOptions = BuildOptions(),
                 log: RewriteLog | None = None) -> tuple[tvm.IRModule, Report]:
    """The Relax passes and per-PrimFunc schedules of the CPU build, without code generation. Returns the module
    and {PrimFunc name: RuleResult}."""
    threads = planned_threads(opts)
    mod = prepare_fp32(mod, opts, RuleContext.for_target(target, threads).caps, threads, log)
    ctx = RuleContext.for_target(target, effective_threads(mod, threads), opts.prepack)
    constants = constant_params(mod)
    report: Report = {}
    for gv, func in list(mod.functions.items()):
        interrupts.check()  # between PrimFuncs: a signal TVM's C++ frames swallowed stops the build here
        if isinstance(func, tvm.tirx.PrimFunc):
            knobs = opts.tuning.get(task_key(func, target)) if opts.tuning else None
            mod[gv], report[gv.name_hint] = schedule_prim_func(func, ctx, knobs, constants.get(gv.name_hint, ()))
    return fold_weight_prepacks(mod), report


def build_cpu(mod: tvm.IRModule, target: tvm.target.Target, opts: BuildOptions = BuildOptions(),
              log: RewriteLog | None = None) -> tuple[tvm.runtime.Executable, Report]:
    mod, report = schedule_cpu(mod, target, opts, log)
    executable = relax.build(mod, target=target)
    interrupts.check()
    return executable, report
