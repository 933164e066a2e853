"""Lower ONNX QDQ int8 layers (as imported by from_onnx) to integer Relax ops.

onnxruntime's static QDQ quantizer (edgekit.passes.quantize: U8 asymmetric activations, per-channel
symmetric S8 weights, int32 bias with scale s_x*s_w) leaves every layer as

    quantize(add(conv2d(dequantize(x_q, s_x, z_x), dequantize(W_q, s_w, 0)), reshape(dequantize(b_q))), s_y, z_y)
    quantize(add(matmul(dequantize(x_q, ..), permute_dims(dequantize(W_q, ..))), dequantize(b_q)), s_y, z_y)

(ReLU is folded by the quantizer into the output range: z_y = 0 clamps at 0). TVM imports that as float
math on dequantized tensors. This pass rewrites each such layer into what onnxruntime's QLinearConv /
QGemm kernels compute:

    acc = conv2d(pad(x_q, value=z_x), W_q, out_dtype=int32) + (b_q - z_x * sum(W_q[o]))     exact integers
    y_q = clip(round_half_even(float32(acc) * M[o]), -z_y, 255 - z_y) + z_y                  M = s_x*s_w[o]/s_y (fp32)

so activations stay uint8 between layers and the kernels are uint8 x int8 -> int32 (VNNI-friendly:
padding with z_x instead of 0 keeps the activation operand unsigned and the correction a constant).
MaxPool between Q/DQ with identical parameters becomes a uint8 max pool (monotonic: exact).
Residual adds of two uint8 tensors take QLinearAdd's arithmetic (qlinear_add.py), softmaxes QLinearSoftmax's
(qlinear_softmax.py), bilinear resizes onnxruntime's float sum order (bilinear_resize.py); means and everything else
stay dequantize -> float -> quantize (TVM fuses them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, rewrite_call, wildcard

from edgekit.compiler.relax_passes import constant_array, constant_scalar
from edgekit.compiler.relax_passes.bilinear_resize import lower_quantized_bilinear_resizes
from edgekit.compiler.relax_passes.qlinear_add import lower_qlinear_adds
from edgekit.compiler.relax_passes.qlinear_softmax import lower_qlinear_softmaxes

# The bias DQ scale must equal s_x*s_w (what ORT's QLinearConv assumes when it adds b_q as is).
BIAS_SCALE_RTOL = 1e-5
_U8_MIN, _U8_MAX = 0, 255


# ----------------------------------------------------------------------------------------------------------
# Patterns
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Patterns:
    x: DFPattern = field(default_factory=wildcard)
    sx: DFPattern = field(default_factory=is_const)
    zx: DFPattern = field(default_factory=is_const)
    w: DFPattern = field(default_factory=is_const)
    sw: DFPattern = field(default_factory=is_const)
    zw: DFPattern = field(default_factory=is_const)
    b: DFPattern = field(default_factory=is_const)
    sb: DFPattern = field(default_factory=is_const)
    zb: DFPattern = field(default_factory=is_const)
    sy: DFPattern = field(default_factory=is_const)
    zy: DFPattern = field(default_factory=is_const)
    core: DFPattern | None = None  # the conv2d / matmul / max_pool2d call, set by the layer pattern
    wt: DFPattern | None = None  # permute_dims of the weight (matmul only)

    def __post_init__(self) -> None:
        # built once: matches are looked up by these very pattern objects
        self.dq_x = is_op("relax.dequantize")(self.x, self.sx, self.zx)
        self.dq_w = is_op("relax.dequantize")(self.w, self.sw, self.zw)
        dq_b = is_op("relax.dequantize")(self.b, self.sb, self.zb)
        self.bias = dq_b | is_op("relax.reshape")(dq_b, wildcard())

    def quantized(self, core: DFPattern) -> DFPattern:
        self.core = core
        return is_op("relax.quantize")(is_op("relax.add")(core, self.bias) | core, self.sy, self.zy)


def conv_pattern(p: _Patterns) -> DFPattern:
    return p.quantized(is_op("relax.nn.conv2d")(p.dq_x, p.dq_w))


def dense_pattern(p: _Patterns) -> DFPattern:
    p.wt = is_op("relax.permute_dims")(p.dq_w)
    return p.quantized(is_op("relax.matmul")(p.dq_x, p.wt | p.dq_w))


def pool_pattern(p: _Patterns) -> DFPattern:
    p.core = is_op("relax.nn.max_pool2d")(p.dq_x)
    return is_op("relax.quantize")(p.core, p.sy, p.zy)


# ----------------------------------------------------------------------------------------------------------
# Constants and checks
# ----------------------------------------------------------------------------------------------------------


def _dtype(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def _activation_params(p: _Patterns, m: dict) -> tuple[float, int, float, int] | str:
    """(s_x, z_x, s_y, z_y) of a uint8 per-tensor layer, or why it is not one."""
    sx, zx, sy, zy = (constant_scalar(m[q]) for q in (p.sx, p.zx, p.sy, p.zy))
    if None in (sx, zx, sy, zy):
        return "per-channel activation quantization"
    if _dtype(m[p.x]) != "uint8" or _dtype(m[p.zy]) != "uint8":
        return f"activations {_dtype(m[p.x])} -> {_dtype(m[p.zy])}: only uint8 (U8S8) is lowered"
    return float(sx), int(zx), float(sy), int(zy)


def _weight_params(p: _Patterns, m: dict, out_axis: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(W_q int8, s_w per output channel) of a symmetric int8 weight, or why not."""
    w = constant_array(m[p.w])
    if w.dtype != np.int8:
        return f"weights {w.dtype}: only int8 is lowered"
    if np.any(constant_array(m[p.zw]) != 0):
        return "weights have a nonzero zero point (asymmetric)"
    sw = constant_array(m[p.sw]).astype(np.float32).reshape(-1)
    channels = w.shape[out_axis]
    if sw.size not in (1, channels):
        return f"weight scale of size {sw.size} for {channels} output channels (blocked?)"
    if sw.size > 1 and int(m[p.dq_w].attrs.axis) % w.ndim != out_axis:
        return "weight scales not along the output-channel axis"
    return w, np.broadcast_to(sw, (channels,)).copy()


def _int_bias(p: _Patterns, m: dict, sx: float, sw: np.ndarray) -> np.ndarray | str:
    """The int32 bias (zeros when absent), checked to be on the accumulator's scale s_x*s_w."""
    if p.b not in m:
        return np.zeros(sw.shape, np.int32)
    b = constant_array(m[p.b])
    if b.dtype != np.int32 or np.any(constant_array(m[p.zb]) != 0):
        return f"bias is {b.dtype} with zero point: needs int32 with zero point 0"
    sb = np.broadcast_to(constant_array(m[p.sb]).astype(np.float32).reshape(-1), sw.shape)
    if not np.allclose(sb, np.float32(sx) * sw, rtol=BIAS_SCALE_RTOL, atol=0):
        return "bias scale is not s_x * s_w"
    return np.broadcast_to(b.reshape(-1), sw.shape).astype(np.int32)


def requant_multiplier(sx: float, sw: np.ndarray, sy: float) -> np.ndarray:
    """M = s_x * s_w / s_y in fp32, evaluated in the order onnxruntime's QLinearConv does."""
    return (np.float32(sx) * sw.astype(np.float32)) / np.float32(sy)


# ----------------------------------------------------------------------------------------------------------
# Emitting integer layers
# ----------------------------------------------------------------------------------------------------------


def requantize(acc: relax.Expr, multiplier: np.ndarray, zy: int, channel_axis: int, ndim: int) -> relax.Expr:
    """int32 accumulator -> uint8 like MlasRequantizeOutput: fp32 scale, round half to even, clamp, + z_y."""
    shape = [1] * ndim
    shape[channel_axis] = multiplier.size
    scaled = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(multiplier.reshape(shape), "float32"))
    # max/min with scalar constants rather than clip: ConvertLayout has layout rules for binary ops only
    rounded = relax.op.round(scaled)
    clamped = relax.op.minimum(relax.op.maximum(rounded, _f32(_U8_MIN - zy)), _f32(_U8_MAX - zy))
    return relax.op.astype(relax.op.add(clamped, _f32(zy)), "uint8")


def _f32(value: float) -> relax.Expr:
    return relax.const(float(value), "float32")


def _add_channel_const(acc: relax.Expr, values: np.ndarray, channel_axis: int, ndim: int) -> relax.Expr:
    shape = [1] * ndim
    shape[channel_axis] = values.size
    return relax.op.add(acc, relax.const(values.reshape(shape).astype(np.int32), "int32"))


def _conv_layer(p: _Patterns, m: dict) -> tuple[relax.Expr | None, str]:
    call = m[p.core]
    attrs = call.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None, f"layout {attrs.data_layout}/{attrs.kernel_layout}: only NCHW/OIHW (as imported)"
    act = _activation_params(p, m)
    weights = _weight_params(p, m, out_axis=0) if not isinstance(act, str) else act
    if isinstance(weights, str):
        return None, weights
    sx, zx, sy, zy = act
    w, sw = weights
    bias = _int_bias(p, m, sx, sw)
    if isinstance(bias, str):
        return None, bias
    pt, pl, pb, pr = (int(v) for v in attrs.padding)
    x = m[p.x]
    if any((pt, pl, pb, pr)):  # pad with z_x: the padded value dequantizes to exactly 0.0
        x = relax.op.nn.pad(x, [0, 0, 0, 0, pt, pb, pl, pr], pad_value=float(zx))
    acc = relax.op.nn.conv2d(
        x,
        relax.const(w, "int8"),
        strides=attrs.strides,
        padding=0,
        dilation=attrs.dilation,
        groups=attrs.groups,
        out_dtype="int32",
    )
    # sum_k (x - z_x) w = sum_k x w - z_x sum_k w: the correction folds into the int32 bias
    corrected = bias.astype(np.int64) - zx * w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    acc = _add_channel_const(acc, _checked_int32(corrected), 1, 4)
    out = requantize(acc, requant_multiplier(sx, sw, sy), zy, 1, 4)
    kh, kw = w.shape[2:]
    detail = (
        f"conv2d {kh}x{kw} s{int(attrs.strides[0])} g{int(attrs.groups)} "
        f"{w.shape[1] * int(attrs.groups)}->{w.shape[0]} in {'x'.join(map(str, _shape(m[p.x])))}"
    )
    return out, detail


def _dense_layer(p: _Patterns, m: dict) -> tuple[relax.Expr | None, str]:
    transposed = p.wt in m
    act = _activation_params(p, m)
    w_raw = constant_array(m[p.w])
    if w_raw.ndim != 2:
        return None, f"weight of rank {w_raw.ndim}: only 2-D"
    if transposed and [int(a) for a in (m[p.wt].attrs.axes or [1, 0])] != [1, 0]:
        return None, "weight permutation is not a transpose"
    weights = _weight_params(p, m, out_axis=0 if transposed else 1) if not isinstance(act, str) else act
    if isinstance(weights, str):
        return None, weights
    sx, zx, sy, zy = act
    w, sw = weights
    w_kn = w.T if transposed else w  # [K, O]
    bias = _int_bias(p, m, sx, sw)
    if isinstance(bias, str):
        return None, bias
    ndim = len(_shape(m[p.x]))
    acc = relax.op.matmul(m[p.x], relax.const(np.ascontiguousarray(w_kn), "int8"), out_dtype="int32")
    corrected = bias.astype(np.int64) - zx * w_kn.astype(np.int64).sum(axis=0)
    acc = _add_channel_const(acc, _checked_int32(corrected), ndim - 1, ndim)
    out = requantize(acc, requant_multiplier(sx, sw, sy), zy, ndim - 1, ndim)
    return out, f"dense {w_kn.shape[0]}->{w_kn.shape[1]} in {'x'.join(map(str, _shape(m[p.x])))}"


def _pool_layer(p: _Patterns, m: dict) -> tuple[relax.Expr | None, str]:
    act = _activation_params(p, m)
    if isinstance(act, str):
        return None, act
    sx, zx, sy, zy = act
    if np.float32(sx) != np.float32(sy) or zx != zy:
        return None, "max pool changes quantization parameters"
    a = m[p.core].attrs
    out = relax.op.nn.max_pool2d(
        m[p.x],
        pool_size=a.pool_size,
        strides=a.strides,
        padding=a.padding,
        dilation=a.dilation,
        ceil_mode=a.ceil_mode,
        layout=a.layout,
        out_layout=a.out_layout,
    )
    return out, f"max_pool2d uint8 in {'x'.join(map(str, _shape(m[p.x])))}"


def _checked_int32(values: np.ndarray) -> np.ndarray:
    info = np.iinfo(np.int32)
    if values.min() < info.min or values.max() > info.max:
        raise OverflowError("bias - z_x*sum(W) does not fit int32")
    return values.astype(np.int32)


# ----------------------------------------------------------------------------------------------------------
# The pass
# ----------------------------------------------------------------------------------------------------------

_Lower = Callable[[_Patterns, dict], tuple[relax.Expr | None, str]]
_LAYERS: list[tuple[str, Callable[[_Patterns], DFPattern], _Lower]] = [
    ("conv2d", conv_pattern, _conv_layer),
    ("dense", dense_pattern, _dense_layer),
    ("max_pool2d", pool_pattern, _pool_layer),
]
_FLOAT_LAYERS = {"relax.nn.conv2d": "conv2d", "relax.matmul": "dense"}


def lower_qdq_layers(func: relax.Function) -> tuple[relax.Function, list[dict]]:
    """Rewrite the QDQ conv2d / matmul (/ max pool) layers of a Relax function into integer ops. Returns the
    function and a report, one dict per layer: {"op", "status": "lowered" | "skipped", "detail" | "reason"};
    float conv2d/matmul calls left in the function are reported as skipped, with the reason."""
    report: list[dict] = []
    skipped: dict[str, str] = {}  # structural text of the skipped core call -> reason (rewrites may revisit)
    for kind, make_pattern, lower in _LAYERS:
        func = _rewrite(func, kind, make_pattern, lower, report, skipped)
    return func, report + _leftover_float_layers(func, skipped)


def qdq_passes(report: list[dict]) -> list[tvm.transform.Pass]:
    """The integer lowerings of a QDQ model, each its own pass; every one appends its per-layer report."""
    from edgekit.compiler.relax_passes import reporting_pass

    return [
        reporting_pass(lower_qdq_layers, "LowerQDQLayers", report),
        reporting_pass(lower_qlinear_adds, "LowerQLinearAdds", report),
        reporting_pass(lower_qlinear_softmaxes, "LowerQLinearSoftmaxes", report),
        reporting_pass(lower_quantized_bilinear_resizes, "LowerQuantizedBilinearResizes", report),
        relax.transform.DeadCodeElimination(),
    ]


def lower_qdq(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[dict]]:
    """qdq_passes on their own (tests): the module and the per-layer report."""
    report: list[dict] = []
    return tvm.transform.Sequential(qdq_passes(report))(mod), report


def _rewrite(
    func: relax.Function,
    kind: str,
    make_pattern: Callable[[_Patterns], DFPattern],
    lower: _Lower,
    report: list[dict],
    skipped: dict[str, str],
) -> relax.Function:
    p = _Patterns()
    pattern = make_pattern(p)

    def rewriter(expr: relax.Expr, m: dict) -> relax.Expr:
        try:
            new, text = lower(p, m)
        except OverflowError as exc:
            new, text = None, str(exc)
        if new is None:
            if kind != "max_pool2d":
                skipped[str(m[p.core])] = text
            return expr
        report.append({"op": kind, "status": "lowered", "detail": text})
        return new

    return rewrite_call(pattern, rewriter, func)


def _leftover_float_layers(func: relax.Function, skipped: dict[str, str]) -> list[dict]:
    """conv2d/matmul calls still on float tensors after the rewrites, each with the reason it stayed."""
    left: list[dict] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in _FLOAT_LAYERS:
            if "float" in _dtype(expr):
                reason = skipped.get(str(expr), "not a DequantizeLinear -> layer -> QuantizeLinear pattern")
                left.append(
                    {
                        "op": _FLOAT_LAYERS[expr.op.name],
                        "status": "skipped",
                        "reason": reason,
                        "shape": "x".join(map(str, _shape(expr))),
                    }
                )

    relax.analysis.post_order_visit(func, visit)
    return left


# ----------------------------------------------------------------------------------------------------------
# Per-tensor Q/DQ as elementwise ops (for layout passes)
# ----------------------------------------------------------------------------------------------------------


def _expand_dequantize(expr: relax.Expr, m: dict, x: DFPattern, s: DFPattern, z: DFPattern) -> relax.Expr:
    scale, zero = constant_scalar(m[s]), constant_scalar(m[z])
    if scale is None or zero is None or str(expr.attrs.out_dtype) != "float32":
        return expr
    # what relax's legalizer emits: float32(int32(x) - z) * s
    shifted = relax.op.subtract(relax.op.astype(m[x], "int32"), relax.const(int(zero), "int32"))
    return relax.op.multiply(relax.op.astype(shifted, "float32"), _f32(np.float32(scale)))


def _expand_quantize(expr: relax.Expr, m: dict, x: DFPattern, s: DFPattern, z: DFPattern) -> relax.Expr:
    scale, zero = constant_scalar(m[s]), constant_scalar(m[z])
    dtype = str(expr.attrs.out_dtype)
    if scale is None or zero is None or dtype not in ("uint8", "int8") or _dtype(m[x]) != "float32":
        return expr
    info = np.iinfo(dtype)
    # round(x / s) + z clamped to the type, as relax's legalizer and onnxruntime's QuantizeLinear compute it
    q = relax.op.add(relax.op.round(relax.op.divide(m[x], _f32(np.float32(scale)))), _f32(zero))
    return relax.op.astype(relax.op.minimum(relax.op.maximum(q, _f32(info.min)), _f32(info.max)), dtype)


@tvm.transform.module_pass(opt_level=0, name="ExpandQDQ")
def expand_qdq(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Per-tensor quantize/dequantize -> the same math as elementwise Relax ops (bit-identical to their
    legalization). ConvertLayout has no rule for relax.quantize/dequantize: left as they are, every residual
    add of an NHWC network would sit between two transposes."""
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, relax.Function):
            continue
        for op, expand in (("relax.dequantize", _expand_dequantize), ("relax.quantize", _expand_quantize)):
            x, s, z = wildcard(), is_const(), is_const()
            func = rewrite_call(is_op(op)(x, s, z), lambda e, m, f=expand, x=x, s=s, z=z: f(e, m, x, s, z), func)
        out[gv] = func
    return out
