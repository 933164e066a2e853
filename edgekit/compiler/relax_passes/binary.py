"""Lower binarized layers (XNOR-Net style) in a Relax module to edgekit's XNOR-popcount kernels.

Run after `from_onnx(..., keep_params_in_input=False)` and `relax.transform.FoldConstant()`: edgekit's
binarized ONNX graphs unpack 1-bit weights with standard ops (BitShift/BitwiseAnd/Cast/Mul...), which
FoldConstant turns back into a constant float tensor whose rows are ±alpha_o. Recognized:

    conv2d(where(greater_equal(x, 0), 1, -1), W) [+ bias]      W[o] in {+alpha_o, -alpha_o}
    matmul(where(greater_equal(x, 0), 1, -1), W) [+ bias]      W [K, O] (Gemm after import), columns ±alpha_o

Each becomes call_tir(pack, x) -> call_tir(binary kernel, packed, bits, ..., alpha, bias): the weights are
packed to bits here (numpy) and alpha (and the bias) go into the kernel's float epilogue.
Binary weights with float activations ("BWN") cannot use XNOR-popcount and are left alone (reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from edgekit.compiler.relax_passes import KernelTable, bias_vector, constant_array, rewrite_with_kernels
from edgekit.kernels import binary as kb
from edgekit.kernels import binary_flat as kf

# |W[o]| may differ from alpha_o by this much (relative) and still count as binary: unpacking computes
# (2b - 1) * alpha in fp32, which is exact, so this only absorbs graphs that stored alpha per element.
ALPHA_RTOL = 1e-6


# ----------------------------------------------------------------------------------------------------------
# Patterns
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Patterns:
    x: relax.dpl.DFPattern = field(default_factory=wildcard)
    zero: relax.dpl.DFPattern = field(default_factory=is_const)
    pos: relax.dpl.DFPattern = field(default_factory=is_const)
    neg: relax.dpl.DFPattern = field(default_factory=is_const)
    weight: relax.dpl.DFPattern = field(default_factory=is_const)
    bias: relax.dpl.DFPattern = field(default_factory=is_const)

    @property
    def sign(self) -> relax.dpl.DFPattern:
        return is_op("relax.where")(is_op("relax.greater_equal")(self.x, self.zero), self.pos, self.neg)

    def layer(self, op: str, activations: relax.dpl.DFPattern | None = None) -> relax.dpl.DFPattern:
        return is_op(op)(self.sign if activations is None else activations, self.weight)

    def with_bias(self, core: relax.dpl.DFPattern) -> relax.dpl.DFPattern:
        return is_op("relax.add")(core, self.bias)


# ----------------------------------------------------------------------------------------------------------
# Numeric checks (pass-time)
# ----------------------------------------------------------------------------------------------------------


def _is_scalar(expr: relax.Expr, value: float) -> bool:
    arr = constant_array(expr)
    return arr.size == 1 and float(arr.reshape(())) == value


def binary_alpha(weight: np.ndarray, axis: int = 0) -> np.ndarray | None:
    """alpha_o if every slice along `axis` is ±alpha_o (alpha_o > 0), else None."""
    w = np.moveaxis(np.asarray(weight, dtype=np.float32), axis, 0).reshape(weight.shape[axis], -1)
    mag = np.abs(w)
    alpha = mag.max(axis=1)
    if np.any(alpha <= 0) or np.any(np.abs(mag - alpha[:, None]) > ALPHA_RTOL * alpha[:, None]):
        return None
    return alpha.astype(np.float32)


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


# ----------------------------------------------------------------------------------------------------------
# Emitting kernels
# ----------------------------------------------------------------------------------------------------------


def _key(prefix: str, spec, isa: kb.Isa | None = None) -> str:
    fields = "_".join(str(v) for v in vars(spec).values())
    return f"{prefix}_{fields}" + (f"_{isa.name}" if isa else "")


def emit_binary_conv(
    kernels: KernelTable,
    x: relax.Expr,
    spec: kb.ConvSpec,
    weight: np.ndarray,
    alpha: np.ndarray,
    bias: np.ndarray,
    isa: kb.Isa,
) -> relax.Expr:
    """call_tir(pack) -> call_tir(conv) with the weights packed now: the flat-plane kernel (binary_flat) where
    the row kernel would waste vector lanes on narrow rows, the row kernel otherwise."""
    bits, base = kb.conv_weights(weight, spec)
    if kf.applies(spec, isa.lanes):
        packed_shape, make_pack, make_conv = (
            kf.shifted_shape(spec, isa),
            lambda: kf.shifted_pack_func(spec, isa),
            kf.conv_func,
        )
        table, prefix, bits = kf.epilogue_terms(base), "xnor_conv_flat", kf.kernel_weights(bits, isa)
    else:
        packed_shape, make_pack, make_conv = spec.packed_shape, lambda: kb.conv_pack_func(spec), kb.conv_func
        table, prefix = base, "xnor_conv"
    # the packing depends on the input and the packed layout only (not on O or the epilogue)
    pack_key = f"{prefix}_pack_" + "_".join(
        map(str, (*packed_shape, spec.in_channels, spec.height, spec.width, spec.pad))
    )
    pack = kernels.get(pack_key, make_pack)
    conv = kernels.get(_key(prefix, spec, isa), lambda: make_conv(spec, isa))
    packed = relax.call_tir(pack, [x], relax.TensorType(packed_shape, "uint64"))
    args = [packed, relax.const(bits, "uint64"), relax.const(table, "int32"), relax.const(alpha), relax.const(bias)]
    return relax.call_tir(conv, args, relax.TensorType(spec.out_shape, "float32"))


def emit_binary_dense(
    kernels: KernelTable,
    x: relax.Expr,
    spec: kb.DenseSpec,
    weight: np.ndarray,
    alpha: np.ndarray,
    bias: np.ndarray,
    isa: kb.Isa,
) -> relax.Expr:
    """weight: [O, K] (signs only matter)."""
    pack = kernels.get(f"xnor_dense_pack_{spec.batch}_{spec.in_features}", lambda: kb.dense_pack_func(spec))
    dense = kernels.get(_key("xnor_dense", spec, isa), lambda: kb.dense_func(spec, isa))
    packed = relax.call_tir(pack, [x], relax.TensorType((spec.batch, spec.kw), "uint64"))
    args = [packed, relax.const(kb.dense_weights(weight, spec), "uint64"), relax.const(alpha), relax.const(bias)]
    return relax.call_tir(dense, args, relax.TensorType((spec.batch, spec.out_features), "float32"))


# ----------------------------------------------------------------------------------------------------------
# Per-layer rewriters: return (replacement or None, report entry)
# ----------------------------------------------------------------------------------------------------------


def _sign_ok(pat: _Patterns, m: dict) -> str | None:
    if not (_is_scalar(m[pat.zero], 0.0) and _is_scalar(m[pat.pos], 1.0) and _is_scalar(m[pat.neg], -1.0)):
        return "activation is where(x >= t, a, b) but not where(x >= 0, 1, -1)"
    return None


def _conv_layer(
    call: relax.Call, pat: _Patterns, m: dict, bias: relax.Expr | None, isa: kb.Isa, kernels: KernelTable
) -> tuple[relax.Expr | None, str]:
    attrs = call.attrs
    weight = constant_array(m[pat.weight])
    strides, padding, dilation = (
        [int(v) for v in attrs.strides],
        [int(v) for v in attrs.padding],
        [int(v) for v in attrs.dilation],
    )
    if attrs.groups != 1 or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW":
        return (
            None,
            f"groups={attrs.groups}, layout {attrs.data_layout}/{attrs.kernel_layout}: only dense NCHW/OIHW convs",
        )
    if dilation != [1, 1] or len(set(strides)) != 1 or len(set(padding)) != 1 or weight.shape[2] != weight.shape[3]:
        return (
            None,
            f"strides {strides}, padding {padding}, dilation {dilation}, kernel {weight.shape[2:]}: "
            "needs square kernel, equal strides/pads, no dilation",
        )
    if padding[0] > 1 or strides[0] > 2:
        return None, f"padding {padding[0]} / stride {strides[0]}: kernel supports pad 0/1, stride 1/2"
    if (why := _sign_ok(pat, m)) is not None:
        return None, why
    alpha = binary_alpha(weight, 0)
    if alpha is None:
        return None, "activations binary but weights are not ±alpha per output channel"
    n, c, h, w = _shape(m[pat.x])
    if m[pat.x].ty.dtype != "float32":
        return None, f"input dtype {m[pat.x].ty.dtype}: kernels pack float32"
    bias_vec = bias_vector(bias, weight.shape[0], 1, 4)
    if bias_vec is None:
        return None, "bias is not per output channel"
    spec = kb.ConvSpec(n, c, h, w, weight.shape[0], weight.shape[2], strides[0], padding[0], "float32")
    return emit_binary_conv(
        kernels, m[pat.x], spec, weight, alpha, bias_vec, isa
    ), f"binary_conv2d {spec.kernel}x{spec.kernel} s{spec.stride} p{spec.pad} {c}->{spec.out_channels} {h}x{w}"


def _dense_layer(
    call: relax.Call, pat: _Patterns, m: dict, bias: relax.Expr | None, isa: kb.Isa, kernels: KernelTable
) -> tuple[relax.Expr | None, str]:
    weight = constant_array(m[pat.weight])  # [K, O]: the importer transposes Gemm's B when transB=1
    xshape = _shape(m[pat.x])
    if weight.ndim != 2 or len(xshape) != 2:
        return None, f"matmul of ranks {len(xshape)} x {weight.ndim}: only [N, K] x [K, O]"
    if (why := _sign_ok(pat, m)) is not None:
        return None, why
    alpha = binary_alpha(weight, 1)
    if alpha is None:
        return None, "activations binary but weights are not ±alpha per output feature"
    bias_vec = bias_vector(bias, weight.shape[1], 1, 2)
    if bias_vec is None:
        return None, "bias is not per output feature"
    spec = kb.DenseSpec(xshape[0], xshape[1], weight.shape[1], "float32")
    return emit_binary_dense(
        kernels, m[pat.x], spec, weight.T, alpha, bias_vec, isa
    ), f"binary_dense {spec.in_features}->{spec.out_features} batch {spec.batch}"


_LAYERS = {"relax.nn.conv2d": ("conv2d", _conv_layer), "relax.matmul": ("dense", _dense_layer)}


# ----------------------------------------------------------------------------------------------------------
# The pass
# ----------------------------------------------------------------------------------------------------------


def lower_binary_layers(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, list[dict]]:
    """Replace binarized conv2d / matmul layers with XNOR-popcount kernels for `target`.

    Returns the new module and a report: one dict per binarized layer, lowered or skipped
    ({"op", "status": "lowered" | "skipped", "detail"/"reason"})."""
    isa = kb.isa_for_target(target)
    report: list[dict] = []
    seen: set = set()  # layer calls already reported (a skipped layer is matched again by the next pattern)

    def rewrite(func: relax.Function, kernels: KernelTable) -> relax.Function:
        for op, (kind, lower) in _LAYERS.items():
            # with bias first: once the bare layer is rewritten the add can no longer be folded in
            for with_bias in (True, False):
                func = _rewrite(func, op, kind, lower, with_bias, isa, kernels, report, seen)
            func = _report_bwn(func, op, kind, report, seen)
        return func

    return rewrite_with_kernels(mod, rewrite), report


def _rewrite(
    func: relax.Function,
    op: str,
    kind: str,
    lower,
    with_bias: bool,
    isa: kb.Isa,
    kernels: KernelTable,
    report: list[dict],
    seen: set,
) -> relax.Function:
    pat = _Patterns()
    core = pat.layer(op)
    pattern = pat.with_bias(core) if with_bias else core

    def rewriter(expr: relax.Expr, m: dict) -> relax.Expr:
        call = m[core]
        new, detail = lower(call, pat, m, m.get(pat.bias) if with_bias else None, isa, kernels)
        if call not in seen:
            seen.add(call)
            report.append(
                {"op": kind, "status": "lowered", "detail": detail}
                if new is not None
                else {"op": kind, "status": "skipped", "reason": detail}
            )
        return expr if new is None else new

    return relax.dpl.rewrite_call(pattern, rewriter, func)


def _report_bwn(func: relax.Function, op: str, kind: str, report: list[dict], seen: set) -> relax.Function:
    """Binary weights on float activations: reported, left as a float layer (XNOR needs both binary)."""
    pat = _Patterns()
    pattern = pat.layer(op, activations=wildcard())

    def rewriter(expr: relax.Expr, m: dict) -> relax.Expr:
        if expr in seen:
            return expr
        seen.add(expr)
        axis = 0 if op == "relax.nn.conv2d" else 1
        weight = constant_array(m[pat.weight])
        if weight.ndim >= 2 and binary_alpha(weight, axis) is not None:
            report.append(
                {
                    "op": kind,
                    "status": "skipped",
                    "reason": "binary weights with float activations (BWN): not XNOR-able, left as a float layer",
                }
            )
        return expr

    return relax.dpl.rewrite_call(pattern, rewriter, func)
