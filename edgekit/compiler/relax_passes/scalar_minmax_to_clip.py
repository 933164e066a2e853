"""The ONNX importer emits Clip (ReLU6) and Max/Min with a scalar as call_tir(maximum/minimum, (x, scalar)).
Opaque call_tirs block ConvertLayout (NCHW<->NHWC transposes around every ReLU6) and conv epilogue fusion:
turn them back into relax.clip."""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.s_tir import Schedule

import edgekit.core.interrupts as interrupts
from edgekit.compiler.relax_passes import binding_of, prim_float
from edgekit.compiler.schedules.tir import blocks, is_load, iter_kinds


@relax.expr_functor.mutator
class ScalarMinMaxToClip(relax.PyExprMutator):
    """call_tir(maximum, (x, lo)) -> clip(x, lo, inf); call_tir(minimum, (that, hi)) -> clip(x, lo, hi)."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self._call_tir = tvm.ir.Op.get("relax.call_tir")

    def _match(self, expr: relax.Expr) -> tuple[str, relax.Expr, float] | None:
        """(kind, x, bound) when expr is call_tir of an elementwise max/min of x and a scalar constant."""
        if not isinstance(expr, relax.Call) or not expr.op.same_as(self._call_tir):
            return None
        if not isinstance(expr.args[0], tvm.ir.GlobalVar) or not isinstance(expr.args[1], relax.Tuple):
            return None
        fields = expr.args[1].fields
        if (
            len(fields) != 2
            or not isinstance(fields[1], tvm.ir.expr.Constant)
            or getattr(fields[1].ty, "ndim", -1) != 0
        ):
            return None
        kind = scalar_minmax_kind(self.mod_[expr.args[0]])
        return None if kind is None else (kind, fields[0], float(fields[1].value.numpy()))

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        m = self._match(call)
        if m is None:
            return self.visit_expr_post_order(call)
        kind, x, bound = m
        x = self.visit_expr(x)
        lo, hi = (bound, math.inf) if kind == "max" else (-math.inf, bound)
        inner = binding_of(self, x, "relax.clip")
        # min(max(y, lo), hi) = one clip of y, unless lo > hi: that is hi everywhere (ONNX Clip), clip's
        # max(min(y, hi), lo) would be lo, so the two stay apart
        if (
            kind == "min"
            and inner is not None
            and math.isinf(prim_float(inner.args[2]))
            and prim_float(inner.args[1]) <= hi
        ):
            x, lo = inner.args[0], prim_float(inner.args[1])
        dtype = call.ty.dtype if hasattr(call.ty, "dtype") else "float32"
        return relax.op.clip(
            x, relax.prim_value(tvm.tirx.FloatImm(dtype, lo)), relax.prim_value(tvm.tirx.FloatImm(dtype, hi))
        )


def scalar_minmax_kind(func: tvm.tirx.PrimFunc) -> str | None:
    """'max'/'min' if func is one elementwise T.max/T.min block of a tensor and a 0-d buffer (else None)."""
    try:
        sch = Schedule(func)
        found = blocks(sch)
    except Exception:  # noqa: BLE001 - a probe: a PrimFunc TVM cannot schedule is not the pattern, the call stays
        interrupts.check()
        return None
    if len(found) != 1 or iter_kinds(sch, found[0]).strip("S"):
        return None
    value = sch.get(found[0]).body.value
    kind = {tvm.tirx.Max: "max", tvm.tirx.Min: "min"}.get(type(value))
    if kind is None or not is_load(value.b) or len(value.b.indices) != 0:
        return None
    return kind
