"""Quantization passes: int8 static QDQ (calibrated), int8 dynamic, and int8/int4/int2 weight-only.

int8 activations+weights are onnxruntime.quantization's job (QDQ, per-channel S8 weights, U8 activations:
the fast U8S8 path in ORT); edgekit adds layer selection, reporting and checks around it. Weight-only
int4/int2 is edgekit's own, because ORT's tools have no per-layer int2 and no MSE-searched scales:
weights become INT4/INT2 initializers behind a DequantizeLinear (opset 21 for int4, 25 for int2),
per output channel or blocked along the reduction axis (`block_size`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError
from edgekit.passes import CompressionMethod, LayerReport, MethodContext, PassReport, opset, passes_applied, record_pass
from edgekit.passes.weights import WeightLayer, weight_layers

QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QGemm",
}
SUPPORTED_BITS = (1, 2, 4, 8)
_ML_DTYPE = {8: np.int8, 4: ml_dtypes.int4, 2: ml_dtypes.int2}
_OPSET_FOR_BITS = {8: 21, 4: 21, 2: 25}  # DequantizeLinear with blocks: 21; INT2: 25
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass
class QuantizeConfig:
    bits: int = 8
    weight_only: bool = False  # implied for bits < 8
    dynamic: bool = False  # int8 dynamic (activations quantized at run time): for Gemm/MatMul-heavy models
    method: str = "minmax"  # calibration: minmax | percentile | entropy
    per_channel: bool = True
    block_size: int = 0  # weight-only: 0 = one scale per output channel, else per block of the reduction axis
    keep: tuple[str, ...] | None = None  # layers left at 8 bits ("first", "last", names or globs); default by bits
    layer_bits: dict[str, int] = field(default_factory=dict)  # glob on node name -> bits, overrides --bits
    calibration: list[dict[str, np.ndarray]] | None = None
    # int8: 7-bit weights (onnxruntime's reduce_range), exact on CPUs whose ORT kernels saturate; None = decide
    # for this machine (see needs_reduce_range)
    reduce_range: bool | None = None


INT8_FORMAT_KEY = "edgekit.int8.format"  # metadata_props: "u8s8" (full-range weights) or "u8s7" (reduce_range)


def needs_reduce_range(caps) -> bool:
    """onnxruntime's x86 U8S8 kernels without VNNI add u8 x s8 pairs into int16 with saturation (vpmaddubsw),
    so full-range weights give inexact sums; 7-bit weights cannot saturate (2 x 255 x 64 < 2^15). ORT's own
    quantization docs recommend reduce_range there. VNNI (vpdpbusd, AVX-VNNI) and ARM kernels accumulate in
    int32 exactly."""
    return caps.arch == "x86_64" and not (caps.has_vnni or "avxvnni" in caps.features)


def check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise EdgekitError(f"--bits {bits} is not supported", "choose 8, 4, 2 (quantization) or 1 (binarization)")


def check_not_quantized(model: onnx.ModelProto) -> None:
    done = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    # pruned, factorized or depth-reduced models are still fp32: only a quantizer or binarizer before makes it lossy
    lossy = [p for p in passes_applied(model) if p.startswith("quantize") or p == "binarize"]
    if done or lossy:
        what = f"node '{done[0].name}' is {done[0].op_type}" if done else f"passes already applied: {', '.join(lossy)}"
        raise EdgekitError(f"the model is already quantized ({what})", "compress the fp32 model instead")
    if model.graph.sparse_initializer or any(n.name.startswith("sparse/") for n in model.graph.node):
        raise EdgekitError(
            "the model stores pruned weights sparsely, which quantization cannot read",
            "prune and quantize in one command: compress FP32.onnx --prune R --bits 8 ...",
        )


def resolve_bits(layers: list[WeightLayer], cfg: QuantizeConfig) -> dict[str, int]:
    """Bits per layer name: --bits, then keep (first/last stay at 8), then --layer-bits patterns."""
    keep = cfg.keep if cfg.keep is not None else (("first", "last") if cfg.bits < 8 else ())
    chosen: dict[str, int] = {}
    for i, layer in enumerate(layers):
        name = layer.node.name
        bits = cfg.bits
        if (
            ("first" in keep and i == 0)
            or ("last" in keep and i == len(layers) - 1)
            or any(fnmatch.fnmatch(name, k) for k in keep)
        ):
            bits = 8
        for pattern, pattern_bits in cfg.layer_bits.items():
            if fnmatch.fnmatch(name, pattern):
                check_bits(pattern_bits)
                bits = pattern_bits
        chosen[name] = bits
    return chosen


def sqnr_db(w: np.ndarray, w_hat: np.ndarray) -> float:
    noise = float(np.sum((w.astype(np.float64) - w_hat) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(w.astype(np.float64) ** 2)) / noise)


def _blocks(w: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    """View as [channels, groups, elements]: one scale per (channel, group)."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    if block_size <= 0:
        return moved[:, None, :]
    return moved.reshape(moved.shape[0], -1, block_size)


def quantize_symmetric(w: np.ndarray, bits: int, axis: int, block_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (or per-block) symmetric integers q and scales s with w ≈ q·s, zero point 0.

    The scale is chosen per group by a small grid search minimising ‖w − q·s‖² over clipping ratios
    (max-abs scaling wastes most of the 4 or 2-bit range on rare outliers).
    """
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    g = _blocks(w, axis, block_size).astype(np.float64)
    amax = np.abs(g).max(axis=2, keepdims=True)
    amax[amax == 0] = 1.0
    best_err = np.full(amax.shape, np.inf)
    best_scale = amax / max(qmax, 1)
    # qmax/|qmin| (0.875 for int4, 0.5 for int2) is the ratio at which weights already on a grid (QAT) come back exact
    ratios = np.append(np.linspace(0.3, 1.0, 36), qmax / -qmin) if bits < 8 else (1.0,)
    for ratio in ratios:
        scale = amax * ratio / max(qmax, 1)
        q = np.clip(np.round(g / scale), qmin, qmax)
        err = ((q * scale - g) ** 2).sum(axis=2, keepdims=True)
        better = err < best_err
        best_err, best_scale = np.where(better, err, best_err), np.where(better, scale, best_scale)
    q = np.clip(np.round(g / best_scale), qmin, qmax)
    return q, best_scale[..., 0].astype(np.float32)


def _restore(q: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    moved_shape = (w.shape[axis],) + tuple(np.delete(w.shape, axis))
    return np.moveaxis(q.reshape(moved_shape), 0, axis)


def _weight_only(
    model: onnx.ModelProto,
    layers: list[WeightLayer],
    bits_by_layer: dict[str, int],
    block_size: int,
    report: PassReport,
) -> None:
    """Replace each float weight with INTn initializer -> DequantizeLinear (in place on `model`, a copy)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    new_nodes = []
    for layer in layers:
        bits = bits_by_layer[layer.node.name]
        w, axis = layer.weight, layer.axis
        reduction = int(np.prod(w.shape) // w.shape[axis])
        blocked = block_size > 0 and axis == 0 and reduction % block_size == 0 and w.ndim == 2
        q, scale = quantize_symmetric(w, bits, axis, block_size if blocked else 0)
        w_hat = _restore((q * scale[..., None]).reshape(q.shape[0], -1), w, axis)
        q_arr = _restore(q.reshape(q.shape[0], -1), w, axis).astype(np.int8)
        base = layer.init_name
        graph.initializer.remove(inits[base])
        # packed raw storage (2 or 4 values per byte); a plain int list would cost 4 bytes per value
        q_init = numpy_helper.from_array(q_arr.astype(_ML_DTYPE[bits]), f"{base}.q{bits}")
        if blocked:  # scales shaped like the weight with the blocked axis shrunk
            scale_arr = scale.reshape(w.shape[0], -1)
            dq_attrs = {"axis": 1, "block_size": block_size}
        else:
            scale_arr = scale.reshape(-1)
            dq_attrs = {"axis": axis}
        graph.initializer.extend([q_init, numpy_helper.from_array(scale_arr, f"{base}.scale")])
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [q_init.name, f"{base}.scale"],
                [base],
                name=f"quantize/{layer.node.name}/dq",
                **dq_attrs,
            )
        )
        report.layers.append(
            LayerReport(
                layer.node.name,
                layer.node.op_type,
                bits,
                w.nbytes,
                (q_arr.size * bits + 7) // 8 + scale_arr.nbytes,
                sqnr_db(w, w_hat),
            )
        )
    # DQ nodes produce the old weight names, so consumers are untouched; put them first to keep topological order
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of feed dicts."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(samples)

    def get_next(self):
        return next(self._it, None)


@contextlib.contextmanager
def _quantizer_errors():
    """onnxruntime's quantizer runs the model (calibration) and re-checks it: its failures reach the user as one
    line."""
    try:
        yield
    except EdgekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the user
        interrupts.check()
        from edgekit.onnxkit.tools import ort_error_line

        raise EdgekitError(
            f"onnxruntime's int8 quantizer failed on the model: {ort_error_line(exc)}",
            "the model must run in onnxruntime with float inputs; check it with `edgekit validate` first",
        ) from None


def _int8_sqnr(layer: WeightLayer, q: np.ndarray, scale: np.ndarray) -> float | None:
    """Weight SQNR of onnxruntime's per-channel result; None when its scales run along another axis than the one
    edgekit reads from the node (a Gemm whose transB disagrees with its weight's shape)."""
    axes = [i for i, n in enumerate(q.shape) if n == scale.size] if scale.size > 1 else [None]
    axis = layer.axis if layer.axis in axes else (axes[0] if axes else -1)
    if axis == -1 or q.shape != layer.weight.shape:
        return None
    s = scale if axis is None else scale.reshape([-1 if i == axis else 1 for i in range(q.ndim)])
    return sqnr_db(layer.weight, q.astype(np.float32) * s)


def _reduce_range(cfg: QuantizeConfig) -> bool:
    if cfg.reduce_range is not None:
        return cfg.reduce_range
    from edgekit.targets import TargetCaps

    return needs_reduce_range(TargetCaps.host())


def _ort_int8(
    model: onnx.ModelProto,
    layers: list[WeightLayer],
    bits_by_layer: dict[str, int],
    cfg: QuantizeConfig,
    report: PassReport,
) -> onnx.ModelProto:
    from onnxruntime import quantization as q

    exclude = [name for name, b in bits_by_layer.items() if b > 8]
    reduce_range = _reduce_range(cfg)
    from edgekit.onnxkit.tools import ort_session

    ort_session(model)  # a model onnxruntime cannot load is one error line here, not a traceback from its quantizer
    with tempfile.TemporaryDirectory() as tmp, _quantizer_errors():
        src, pre, dst = Path(tmp) / "in.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        q.quant_pre_process(str(src), str(pre), skip_optimization=False, skip_symbolic_shape=True)
        if cfg.dynamic:
            q.quantize_dynamic(
                str(pre),
                str(dst),
                per_channel=cfg.per_channel,
                reduce_range=reduce_range,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=exclude,
            )
        else:
            if not cfg.calibration:
                raise EdgekitError(
                    "int8 static quantization needs calibration data",
                    "pass --calib data.npz (or --calib digits), or use --dynamic",
                )
            method = {
                "minmax": q.CalibrationMethod.MinMax,
                "percentile": q.CalibrationMethod.Percentile,
                "entropy": q.CalibrationMethod.Entropy,
            }
            q.quantize_static(
                str(pre),
                str(dst),
                _Reader(cfg.calibration),
                quant_format=q.QuantFormat.QDQ,
                per_channel=cfg.per_channel,
                reduce_range=reduce_range,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=method[cfg.method],
                nodes_to_exclude=exclude,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        out = onnx.load(str(dst))
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    for layer in layers:
        qname, sname = f"{layer.init_name}_quantized", f"{layer.init_name}_scale"
        if qname not in inits:
            report.layers.append(
                LayerReport(
                    layer.node.name,
                    layer.node.op_type,
                    None,
                    layer.weight.nbytes,
                    layer.weight.nbytes,
                    None,
                    "kept float",
                )
            )
            continue
        report.layers.append(
            LayerReport(
                layer.node.name,
                layer.node.op_type,
                8,
                layer.weight.nbytes,
                inits[qname].nbytes + inits[sname].nbytes,
                _int8_sqnr(layer, inits[qname], inits[sname]),
            )
        )
    return out


def run(model: onnx.ModelProto, cfg: QuantizeConfig) -> tuple[onnx.ModelProto, PassReport]:
    check_bits(cfg.bits)
    if cfg.bits == 1:
        raise EdgekitError("1-bit is binarization, not quantization", "use edgekit.passes.binarize (compress --bits 1)")
    if cfg.method not in CALIBRATION_METHODS:
        raise EdgekitError(
            f"unknown calibration method '{cfg.method}'", f"choose from {', '.join(CALIBRATION_METHODS)}"
        )
    check_not_quantized(model)
    layers = weight_layers(model)
    if not layers:
        raise EdgekitError(
            "the model has no Conv/Gemm/MatMul layer with float weights to quantize",
            "quantization needs weight layers; compile the model as fp32",
        )
    bits_by_layer = resolve_bits(layers, cfg)
    report = PassReport("quantize", model.ByteSize(), 0, extra={"bits": cfg.bits, "mode": ""})
    notes: list[str] = []
    if cfg.bits == 8 and not cfg.weight_only and all(b == 8 for b in bits_by_layer.values()):
        # per-channel DequantizeLinear has an `axis` from opset 13 on: onnxruntime's quantizer writes it anyway, and
        # an opset-11 result did not load ("Unrecognized attribute: axis for operator DequantizeLinear")
        model = opset.upgrade(model, 13, notes)
        layers = weight_layers(model)
        out = _ort_int8(model, layers, bits_by_layer, cfg, report)
        fmt = "u8s7" if _reduce_range(cfg) else "u8s8"
        out.metadata_props.add(key=INT8_FORMAT_KEY, value=fmt)
        report.extra["int8_format"] = fmt
        weights = "7-bit weights, reduce_range" if fmt == "u8s7" else "full-range weights"
        report.extra["mode"] = (
            "int8 dynamic" if cfg.dynamic else f"int8 static QDQ U8S8 ({cfg.method})"
        ) + f", {weights}"
    else:
        # INT4 / INT2 initializers need opset 21 / 25: convert the model's other ops too, not only the label
        upgraded = opset.upgrade(model, max(_OPSET_FOR_BITS[b] for b in bits_by_layer.values()), notes)
        out = onnx.ModelProto()
        out.CopyFrom(upgraded)
        _weight_only(out, weight_layers(out), bits_by_layer, cfg.block_size, report)
        report.extra["mode"] = f"weight-only int{cfg.bits}" + (
            f" blocks of {cfg.block_size}" if cfg.block_size else " per-channel"
        )
    opset.keep_used_imports(out)
    if notes:
        report.extra["opset"] = "; ".join(notes)
    record_pass(out, f"quantize{cfg.bits}")
    report.size_after = out.ByteSize()
    return out, report


def reduce_range_for(target: str | None) -> bool:
    """7-bit int8 weights when onnxruntime would saturate full-range ones on the target or on this machine
    (where compile validates against onnxruntime)."""
    from edgekit.targets import TargetCaps, load_target

    caps = [TargetCaps.host()] + ([load_target(target).caps()] if target else [])
    return any(needs_reduce_range(c) for c in caps)


def _configure(ctx: MethodContext) -> QuantizeConfig:
    o = ctx.opts
    static_int8 = o.bits == 8 and not o.dynamic and not o.weight_only
    return QuantizeConfig(
        bits=o.bits,
        weight_only=o.weight_only,
        dynamic=o.dynamic,
        method=o.method,
        block_size=o.block_size,
        keep=o.keep,
        layer_bits=o.layer_bits or {},
        calibration=ctx.calibration(o.calib_samples) if static_int8 else None,
        reduce_range=reduce_range_for(o.target),
    )


METHOD = CompressionMethod(
    "quantize",
    wanted=lambda opts: opts.bits not in (None, 1),
    configure=_configure,
    run=run,
    check=lambda opts: check_bits(opts.bits),
)
