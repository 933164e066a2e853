"""Relax rewrite: LayerNorm, written out as arithmetic (ONNX before opset 17, tf2onnx) or as TVM's layer_norm op
(LayerNormalization, opset 17+) -> edgekit/kernels/layer_norm.py.

Matches, on float32 tensors with a static shape whose last axis is normalized:

    m = mean(x, axis=-1, keepdims)      d = x - m      v = mean(d ** 2, axis=-1, keepdims)
    y = d / sqrt(v + eps)               [y * gamma]    [+ beta]      gamma, beta constants over the last axis

with every intermediate read only inside the pattern; and layer_norm(x, gamma, beta) over the last axis with both
constant. CPU builds only (the GPU reduction rules take TVM's ops).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from edgekit.compiler.relax_passes import (
    KernelTable,
    bias_vector,
    constant_scalar,
    rewrite_with_kernels,
    skippable_pass,
    static_shape,
    use_counts,
)
from edgekit.kernels import layer_norm as kernel


def _last_axis_mean(call: relax.Call, ndim: int) -> bool:
    axes = [int(a) for a in (call.attrs.axis or [])]
    return bool(call.attrs.keepdims) and len(axes) == 1 and axes[0] % ndim == ndim - 1


def _vector(expr: relax.Expr | None, shape: tuple[int, ...], default: float) -> np.ndarray | None:
    """A constant broadcast over the last axis only, as a [width] vector (`default` where there is none)."""
    if expr is None:
        return np.full(shape[-1], default, np.float32)
    return bias_vector(expr, shape[-1], len(shape) - 1, len(shape))


def _patterns():
    """(pattern, parts): the normalization with gamma and beta, gamma only, beta only, neither (biggest first)."""
    x = wildcard()
    d = is_op("relax.subtract")(x, is_op("relax.mean")(x))
    two, eps = is_const(), is_const()
    y = is_op("relax.divide")(
        d, is_op("relax.sqrt")(is_op("relax.add")(is_op("relax.mean")(is_op("relax.power")(d, two)), eps))
    )
    gamma, beta = is_const(), is_const()
    scaled = is_op("relax.multiply")(y, gamma)
    parts = {"x": x, "d": d, "two": two, "eps": eps, "y": y}
    yield is_op("relax.add")(scaled, beta), parts | {"gamma": gamma, "beta": beta, "scaled": scaled}
    yield scaled, parts | {"gamma": gamma, "beta": None, "scaled": scaled}
    yield is_op("relax.add")(y, beta), parts | {"gamma": None, "beta": beta, "scaled": None}
    yield y, parts | {"gamma": None, "beta": None, "scaled": None}


def _rewrite(func: relax.Function, pattern, parts: dict, kernels: KernelTable, lanes: int) -> relax.Function:
    uses = use_counts(func)
    var2val = relax.analysis.get_var2val(func)
    var_of = {value: var for var, value in var2val.items()}

    def value(expr: relax.Expr) -> relax.Expr:
        return var2val.get(expr, expr) if isinstance(expr, relax.Var) else expr

    def used(expr: relax.Expr, times: int = 1) -> bool:
        var = expr if isinstance(expr, relax.Var) else var_of.get(expr)
        return uses.get(var, 0) == times

    def rewriter(expr: relax.Expr, m: dict) -> relax.Expr:
        x, d, y = m[parts["x"]], m[parts["d"]], m[parts["y"]]
        shape = static_shape(x)
        if shape is None or x.ty.dtype != "float32" or static_shape(expr) != shape:
            return expr
        # the chain's links, as bound: mean(x); sqrt(v + eps); v + eps; v = mean(d ** 2); d ** 2
        mean_x, sqrt = d.args[1], y.args[1]
        plus_eps = value(sqrt).args[0]
        var = value(plus_eps).args[0]
        square = value(var).args[0]
        if not (_last_axis_mean(value(mean_x), len(shape)) and _last_axis_mean(value(var), len(shape))):
            return expr
        eps_value = constant_scalar(m[parts["eps"]])
        if constant_scalar(m[parts["two"]]) != 2.0 or eps_value is None:
            return expr
        lanes_here = kernel.lanes_for(shape[-1], lanes)
        gamma = _vector(m.get(parts["gamma"]) if parts["gamma"] else None, shape, 1.0)
        beta = _vector(m.get(parts["beta"]) if parts["beta"] else None, shape, 0.0)
        if lanes_here is None or gamma is None or beta is None:
            return expr
        # d feeds the square and the division; every other link feeds one op
        inner = [mean_x, sqrt, plus_eps, var, square] + [
            m[p] for p in (parts["y"], parts["scaled"]) if p is not None and not m[p].same_as(expr)
        ]
        if not used(d, 2) or not all(used(e) for e in inner):
            return expr
        key = "layer_norm_" + "_".join(map(str, shape)) + f"_eps{eps_value:g}"
        func = kernels.get(key, lambda: kernel.layer_norm_func(shape, eps_value, lanes_here))
        args = [x, relax.const(gamma), relax.const(beta)]
        return relax.call_tir(func, args, relax.TensorType(shape, "float32"))

    return relax.dpl.rewrite_call(pattern, rewriter, func)


def _rewrite_op(func: relax.Function, kernels: KernelTable, lanes: int) -> relax.Function:
    """relax.nn.layer_norm (ONNX LayerNormalization, opset 17+) over the last axis, constant gamma and beta."""
    pattern = is_op("relax.nn.layer_norm")(wildcard(), is_const(), is_const())

    def rewriter(expr: relax.Expr, m: dict) -> relax.Expr:
        x, gamma, beta = expr.args
        shape = static_shape(x)
        if shape is None or x.ty.dtype != "float32":
            return expr
        axes = [int(a) % len(shape) for a in expr.attrs.axes]
        gamma, beta = _vector(gamma, shape, 1.0), _vector(beta, shape, 0.0)
        lanes_here = kernel.lanes_for(shape[-1], lanes)
        if axes != [len(shape) - 1] or not (expr.attrs.center and expr.attrs.scale) or lanes_here is None:
            return expr
        if gamma is None or beta is None:
            return expr
        eps = float(expr.attrs.epsilon)
        key = "layer_norm_" + "_".join(map(str, shape)) + f"_eps{eps:g}"
        func = kernels.get(key, lambda: kernel.layer_norm_func(shape, eps, lanes_here))
        return relax.call_tir(func, [x, relax.const(gamma), relax.const(beta)], relax.TensorType(shape, "float32"))

    return relax.dpl.rewrite_call(pattern, rewriter, func)


def fuse_layer_norms(mod: tvm.IRModule, lanes: int) -> tvm.IRModule:
    """`lanes`: the target's fp32 vector width (schedules.tiles.simd)."""

    def rewrite(func: relax.Function, kernels: KernelTable) -> relax.Function:
        for pattern, parts in _patterns():
            func = _rewrite(func, pattern, parts, kernels, lanes)
        return _rewrite_op(func, kernels, lanes)

    return rewrite_with_kernels(mod, rewrite)


def layer_norm_pass(lanes: int, log: list | None = None) -> tvm.transform.Pass:
    return skippable_pass("LayerNorm", lambda mod: fuse_layer_norms(mod, lanes), log)
