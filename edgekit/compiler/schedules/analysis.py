"""Whole-module analyses the CPU build uses around the per-PrimFunc rules: work estimates, constant parameters,
call counts, tuning keys, and the compile-time folding of weight re-layouts."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.s_tir import Schedule

import edgekit.core.interrupts as interrupts
from edgekit.compiler.schedules.dispatch import pick_rule
from edgekit.compiler.schedules.tir import block_work, single_reduction

# A model doing fewer multiply-adds than this in all its convs/matmuls runs single-threaded throughout.
SMALL_MODEL_MACS = 30_000_000


def fold_weight_prepacks(mod: tvm.IRModule) -> tvm.IRModule:
    """Weight re-layouts marked by prepack_weights become their own PrimFuncs (SplitLayoutRewritePreproc),
    which FoldConstant then runs once on the constant weights. The split pass aborts on PrimFuncs without
    sblocks (edgekit's hand-written kernels), so it sees only the marked ones; the rest are put back."""
    marked = {gv for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and has_prepack(func)}
    if not marked:
        return mod
    others = {
        gv: func for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and gv not in marked
    }
    split = relax.transform.SplitLayoutRewritePreproc()(
        tvm.IRModule({gv: func for gv, func in mod.functions.items() if gv not in others}, attrs=mod.attrs)
    )
    for gv, func in others.items():
        split.update_func(gv, func)
    # the split leaves the original PrimFuncs behind, and FoldConstant the re-layout ones: drop what main no
    # longer calls, or relax.build compiles every conv twice
    entries = [gv.name_hint for gv, func in split.functions.items() if isinstance(func, relax.Function)]
    return relax.transform.DeadCodeElimination(entries)(relax.transform.FoldConstant()(split))


def has_prepack(func: tvm.tirx.PrimFunc) -> bool:
    return "meta_schedule.layout_rewrite_preproc" in func.script()


def effective_threads(mod: tvm.IRModule, threads: int) -> int:
    """`threads`, or 1 for a small model (see SMALL_MODEL_MACS): its ops are too short to amortize a
    thread-pool barrier each, and under machine load those barriers dominate (ViT-tiny, digits CNN)."""
    if threads <= 1:
        return threads
    try:
        total = model_macs(mod)
    except Exception:  # noqa: BLE001 - an estimate only: without it every op keeps its own threshold
        interrupts.check()
        return threads
    return 1 if total < SMALL_MODEL_MACS else threads


def model_macs(mod: tvm.IRModule) -> int:
    """Multiply-adds of the prepared module's conv/matmul PrimFuncs, times how often main calls each."""
    calls = call_counts(mod)
    total = 0
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                sch = Schedule(func)
                if pick_rule(sch, None).knob_kind is not None:
                    total += block_work(sch, single_reduction(sch)) * max(1, calls.get(gv.name_hint, 1))
            except Exception:  # noqa: BLE001
                interrupts.check()
                continue
    return total


def constant_params(mod: tvm.IRModule) -> dict[str, set[int]]:
    """Per PrimFunc, the parameters that every call_tir in main passes a constant (weights): only these may
    be re-laid out at compile time (a re-layout of a runtime input would run on every call)."""
    seen: dict[str, set[int]] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir) and isinstance(expr.args[0], tvm.ir.GlobalVar):
            consts = {i for i, arg in enumerate(expr.args[1].fields) if isinstance(arg, tvm.ir.expr.Constant)}
            name = expr.args[0].name_hint
            seen[name] = seen[name] & consts if name in seen else consts

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return seen


def call_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How often the Relax functions call each PrimFunc (identical layers share one PrimFunc)."""
    counts: dict[str, int] = {}

    @relax.expr_functor.visitor
    class _Count(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:  # noqa: D102
            for arg in call.args:
                if isinstance(arg, tvm.ir.GlobalVar):
                    counts[arg.name_hint] = counts.get(arg.name_hint, 0) + 1
            super().visit_call_(call)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            _Count().visit_expr(func)
    return counts


def task_key(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> str:
    """Tuning-database key of a fused PrimFunc (before scheduling): its structural hash. Identical convs of a
    model share one key; the target is recorded once per database (see edgekit.compiler.tuning.db)."""
    import tvm_ffi

    return f"{tvm_ffi.structural_hash(func) & 0xFFFFFFFFFFFFFFFF:016x}"
