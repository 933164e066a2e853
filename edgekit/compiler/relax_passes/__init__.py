"""Relax rewrites, one per file; compiler/pipeline.py lists them in order for fp32, int8 and binary builds.

A rewrite is a PyExprMutator run over every Relax function by `mutator_pass`. A rewrite that fails does not
pass silently: it raises, or, where the pipeline gives it a log, the failure is recorded there as skipped
(with the reason) and the build goes on without that optimization; the log reaches meta.json and the console.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import message_line

RewriteLog = list  # [{"pass": name, "skipped": reason}]


def skippable_pass(
    name: str,
    run: Callable[[tvm.IRModule], tvm.IRModule],
    log: RewriteLog | None = None,
    on_skip: Callable[[tvm.IRModule], tvm.IRModule] | None = None,
    logged_as: str = "",
    **log_extra,
) -> tvm.transform.Pass:
    """The one pass shape of edgekit's rewrites: a module pass running `run`; if it raises, the failure is
    recorded in `log` and the module goes on unchanged (or through `on_skip`, a fallback); without a log it raises."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        interrupts.check()
        try:
            return run(mod)
        except Exception as exc:  # noqa: BLE001 - recorded as skipped (meta.json, console) or raised
            interrupts.check()
            if log is None:
                raise
            log.append({"pass": logged_as or name, "skipped": message_line(exc), **log_extra})
            return on_skip(mod) if on_skip else mod

    return _pass


def mutator_pass(
    make_mutator: Callable[[tvm.IRModule], relax.PyExprMutator], name: str, log: RewriteLog | None = None
) -> tvm.transform.Pass:
    """A pass running make_mutator(mod) over every Relax function (PrimFuncs the mutator emits are copied into
    the result)."""

    def run(mod: tvm.IRModule) -> tvm.IRModule:
        mutator = make_mutator(mod)
        out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                out[gv] = mutator.visit_expr(func)
        for gv, func in mutator.builder_.get().functions.items():  # PrimFuncs the mutator emitted (emit_te)
            if isinstance(func, tvm.tirx.PrimFunc) and gv not in out.functions:
                out[gv] = func
        return out

    return skippable_pass(name, run, log)


def reporting_pass(
    rewrite: Callable[[relax.Function], tuple[relax.Function, list[dict]]], name: str, report: list[dict]
) -> tvm.transform.Pass:
    """A pass running a per-function rewrite that also reports what it did per layer (appended to `report`)."""

    def run(mod: tvm.IRModule) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                out[gv], layers = rewrite(func)
                report.extend(layers)
        return out

    return skippable_pass(name, run)


def binding_of(mutator: relax.PyExprMutator, expr: relax.Expr, op_name: str) -> relax.Call | None:
    """The call bound to var `expr` if it is a call of op_name (else None)."""
    if not isinstance(expr, relax.Var):
        return None
    value = mutator.lookup_binding(expr)
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == op_name:
        return value
    return None


def constant_array(expr: relax.Expr) -> np.ndarray:
    """The value of a Relax constant (TVM 0.27 folds constants to GenericConst, which holds it in .value)."""
    value = expr.value if hasattr(expr, "value") else expr.data
    return value.numpy()


def constant_scalar(expr: relax.Expr) -> float | None:
    """A one-element constant's value (None when it has more: per-channel)."""
    arr = constant_array(expr)
    return float(arr.reshape(-1)[0]) if arr.size == 1 else None


def use_counts(func: relax.Function) -> dict:
    """How often each variable of `func` is read (by bindings and the body): 1 = an intermediate a rewrite may
    absorb."""
    counts: dict = {}

    def count(expr) -> None:
        for var in relax.analysis.free_vars(expr):
            counts[var] = counts.get(var, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            count(binding.value)
    count(func.body.body)
    return counts


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """A tensor's shape when every dimension is a known integer; None for unknown rank or symbolic dimensions."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def prim_float(prim_value: relax.Expr) -> float:
    value = prim_value.value
    return float(getattr(value, "value", value))


def bias_vector(bias: relax.Expr | None, channels: int, channel_axis: int, ndim: int) -> np.ndarray | None:
    """The per-output-channel bias vector, or None if the constant is not broadcast along that axis only."""
    if bias is None:
        return np.zeros(channels, dtype=np.float32)
    arr = constant_array(bias).astype(np.float32)
    if arr.ndim > ndim:
        return None
    shape = (1,) * (ndim - arr.ndim) + arr.shape
    arr = arr.reshape(shape)
    if any(d != 1 for i, d in enumerate(shape) if i != channel_axis) or shape[channel_axis] not in (1, channels):
        return None
    return np.broadcast_to(arr.reshape(-1), (channels,)).astype(np.float32).copy()


class KernelTable:
    """PrimFuncs added to the module, one GlobalVar per distinct kernel (shapes repeat across layers).

    A BlockBuilder over the module hands out GlobalVars that carry the PrimFunc's type, which call_tir
    needs, and picks unused names."""

    def __init__(self, mod: tvm.IRModule) -> None:
        self.builder = relax.BlockBuilder(mod)
        self.funcs: dict[str, relax.GlobalVar] = {}

    def get(self, key: str, make: Callable[[], tvm.tirx.PrimFunc]) -> relax.GlobalVar:
        if key not in self.funcs:
            # private (no global_symbol): TVMScript names every PrimFunc after its Python def
            # op_pattern kOpaque (8): FuseOps leaves it alone and AnnotateTIROpPattern (sblocks only) skips it
            func = make().without_attr("global_symbol").with_attr("op_pattern", 8)
            self.funcs[key] = self.builder.add_func(func, key)
        return self.funcs[key]

    def module(self) -> tvm.IRModule:
        return self.builder.get()


def rewrite_with_kernels(
    mod: tvm.IRModule, rewrite: Callable[[relax.Function, KernelTable], relax.Function]
) -> tvm.IRModule:
    """`rewrite` run over every Relax function of `mod` with one KernelTable: the module with the rewritten
    functions and the kernels they call, dead code eliminated."""
    kernels = KernelTable(mod)
    rewritten = {gv: rewrite(f, kernels) for gv, f in list(mod.functions.items()) if isinstance(f, relax.Function)}
    out = kernels.module()
    for gv, func in rewritten.items():
        out[gv] = func
    return relax.transform.DeadCodeElimination()(out)
