"""Relax rewrite: softmax over the last axis -> edgekit/kernels/softmax.py (CPU builds; before fast_math, which
would otherwise turn it into TVM's fast_softmax)."""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from edgekit.compiler.relax_passes import KernelTable, rewrite_with_kernels, skippable_pass, static_shape
from edgekit.kernels import softmax as kernel

MIN_ROWS = 8  # a handful of rows (a classifier's 1 x 10 scores): TVM's own op, no parallel loop to pay for


def _rewrite(func: relax.Function, kernels: KernelTable, lanes: int) -> relax.Function:
    def rewriter(expr: relax.Expr, m: dict) -> relax.Expr:
        x = expr.args[0]
        shape = static_shape(x)
        if shape is None or x.ty.dtype != "float32" or int(expr.attrs.axis) % len(shape) != len(shape) - 1:
            return expr
        if shape[-1] < lanes or math.prod(shape[:-1]) < MIN_ROWS:
            return expr
        func = kernels.get("softmax_" + "_".join(map(str, shape)), lambda: kernel.softmax_func(shape, lanes))
        return relax.call_tir(func, [x], relax.TensorType(shape, "float32"))

    return relax.dpl.rewrite_call(is_op("relax.nn.softmax")(wildcard()), rewriter, func)


def lower_softmaxes(mod: tvm.IRModule, lanes: int) -> tvm.IRModule:
    """`lanes`: the target's fp32 vector width (schedules.tiles.simd)."""
    return rewrite_with_kernels(mod, lambda func, kernels: _rewrite(func, kernels, lanes))


def softmax_pass(lanes: int, log: list | None = None) -> tvm.transform.Pass:
    return skippable_pass("Softmax", lambda mod: lower_softmaxes(mod, lanes), log)
