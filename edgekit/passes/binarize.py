"""1-bit pass: Conv/Gemm/MatMul weights -> packed sign bits + per-output-channel scale, in standard ONNX.

For a weight W flattened to [O, K] (K = C·kh·kw in (C, kh, kw) order; Gemm transB=0 and MatMul are
transposed to [O, K] first):

    <W>.bits   uint8 [O, ceil(K/8)]   bit j (LSB first) of byte i = [W[o, 8i+j] >= 0]; padding bits 0
    <W>.alpha  float32 [O, 1]          α_o = mean_k |W[o, k]|                      (XNOR-Net scale)

and an unpack subgraph of standard ops (opset >= 18), nodes named `binarize/<node>/...`, whose output
takes W's name:  bits -> Unsqueeze(2) -> BitShift(RIGHT, [0..7]) -> BitwiseAnd(1) -> Reshape [O, 8·nb]
-> Slice [:, :K] -> Cast(float) -> ·2 -> -1 -> ·α -> Reshape(W's shape)  (MatMul: -> Transpose).
So Ŵ = (2b - 1)·α = sign(W)·α with sign(0) = +1, exactly.

mode "xnor" also binarizes the layer's input with Where(GreaterOrEqual(x, 0), 1, -1) (`act_*` nodes;
never Sign: Sign(0) = 0 in ORT and TVM), reusing such a pattern when the exporter already wrote one.
scale_activations multiplies the output by XNOR-Net's K = box_{kh×kw} * mean_c |x| (bias added after).

Never run onnxsim / constant folding on the result: it folds the unpack back into fp32 weights.

References:
    Rastegari et al., "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks",
    ECCV 2016 (α, K). Courbariaux et al., "BinaryConnect", NeurIPS 2015 (binary weights).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import EdgekitError
from edgekit.passes import CompressionMethod, LayerReport, MethodContext, PassReport, opset, record_pass
from edgekit.passes.weights import WeightLayer, weight_layers

MODES = ("weights", "xnor")
MIN_OPSET = 18  # BitwiseAnd
MODE_KEY = "edgekit.binarize.mode"


@dataclass
class BinarizeConfig:
    mode: str = "weights"  # "weights" (BWN) or "xnor" (binary weights + activations)
    keep: tuple[str, ...] = ("first", "last")  # "first", "last", node or weight names / fnmatch patterns
    scale_activations: bool = False  # XNOR-Net K (xnor mode only)


# --- numpy side: the format, and the reference the tests compare against ---------------------------


def binarize_reference(w2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signs ±1 with sign(0) = +1, α [O, 1] float32) of an [O, K] weight."""
    alpha = np.abs(w2d.astype(np.float64)).mean(axis=1, keepdims=True).astype(np.float32)
    return np.where(w2d >= 0, 1.0, -1.0).astype(np.float32), alpha


def pack_signs(w2d: np.ndarray) -> np.ndarray:
    """[O, K] -> uint8 [O, ceil(K/8)], bit j of byte i = (w[8i+j] >= 0), LSB first, zero padding."""
    return np.packbits(w2d >= 0, axis=1, bitorder="little")


def unpack_signs(bits: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_signs as ±1 float32 [O, k] (what the ONNX unpack subgraph computes)."""
    return np.unpackbits(bits, axis=1, count=k, bitorder="little").astype(np.float32) * 2 - 1


# --- graph side ------------------------------------------------------------------------------------


def _targets(model: onnx.ModelProto) -> list[WeightLayer]:
    """The layers a sign can replace: convs with spatial weights, Gemm / MatMul with 2-D weights."""
    return [
        l
        for l in weight_layers(model, float_only=False)
        if (l.weight.ndim >= 3 if l.node.op_type == "Conv" else l.weight.ndim == 2)
    ]


def _kept(targets: list[WeightLayer], keep: tuple[str, ...]) -> dict[str, str]:
    """node name -> the keep entry that keeps it float."""
    kept: dict[str, str] = {}
    for k in keep:
        if k in ("first", "last"):
            if targets:
                kept.setdefault(targets[0 if k == "first" else -1].node.name, k)
            continue
        hits = [t for t in targets if fnmatch.fnmatchcase(t.node.name, k) or fnmatch.fnmatchcase(t.init_name, k)]
        if not hits:
            names = ", ".join(t.node.name for t in targets[:6])
            raise EdgekitError(f"binarize keep '{k}' matches no Conv/Gemm/MatMul", f"node names look like: {names}")
        for t in hits:
            kept.setdefault(t.node.name, k)
    return kept


class _Builder:
    """Collects the new nodes and initializers; names are prefixed per layer."""

    def __init__(self) -> None:
        self.inits: dict[str, onnx.TensorProto] = {}
        self.unpack: list[onnx.NodeProto] = []  # go first: they depend on initializers only

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.setdefault(name, numpy_helper.from_array(np.asarray(value), name))
        return name

    def unpack_weight(self, t: WeightLayer, bits: np.ndarray, alpha: np.ndarray, shape: list[int], k: int) -> None:
        p, (o, nb) = f"binarize/{t.node.name}/", bits.shape

        def node(op: str, inputs: list[str], name: str, output: str | None = None, **attrs) -> str:
            self.unpack.append(helper.make_node(op, inputs, [output or p + name], name=p + name, **attrs))
            return output or p + name

        c = self.const
        x = node(
            "Unsqueeze", [c(f"{t.init_name}.bits", bits), c("binarize/axes_2", np.array([2], np.int64))], "unsqueeze"
        )
        x = node(
            "BitShift",
            [x, c("binarize/shifts", np.arange(8, dtype=np.uint8).reshape(1, 1, 8))],
            "shift",
            direction="RIGHT",
        )
        x = node("BitwiseAnd", [x, c("binarize/u8_one", np.array(1, np.uint8))], "and")
        x = node("Reshape", [x, c(p + "flat_shape", np.array([o, nb * 8], np.int64))], "flatten")
        x = node(
            "Slice",
            [
                x,
                c("binarize/zero_i64", np.array([0], np.int64)),
                c(p + "k", np.array([k], np.int64)),
                c("binarize/one_i64", np.array([1], np.int64)),
            ],
            "slice",
        )
        x = node("Cast", [x], "cast", to=TensorProto.FLOAT)
        x = node("Mul", [x, c("binarize/two", np.array(2, np.float32))], "mul2")
        x = node("Sub", [x, c("binarize/one", np.array(1, np.float32))], "sub1")
        x = node("Mul", [x, c(f"{t.init_name}.alpha", alpha)], "mul_alpha")
        if t.stored_transposed and t.node.op_type == "MatMul":  # MatMul wants [K, O]
            x = node("Reshape", [x, c(p + "shape", np.array([o, k], np.int64))], "reshape")
            node("Transpose", [x], "transpose", output=t.init_name, perm=[1, 0])
        else:  # Gemm transB=0 is switched to transB=1, so [O, K] is its shape too
            node("Reshape", [x, c(p + "shape", np.array(shape, np.int64))], "reshape", output=t.init_name)

    def sign_input(self, t: WeightLayer, x: str) -> list[onnx.NodeProto]:
        """Where(x >= 0, 1, -1) in front of the layer; returns the nodes, rewires the layer's input 0."""
        p = f"binarize/{t.node.name}/"
        ge = helper.make_node(
            "GreaterOrEqual",
            [x, self.const("binarize/zero", np.array(0, np.float32))],
            [p + "act_ge"],
            name=p + "act_ge",
        )
        where = helper.make_node(
            "Where",
            [
                p + "act_ge",
                self.const("binarize/one", np.array(1, np.float32)),
                self.const("binarize/minus_one", np.array(-1, np.float32)),
            ],
            [p + "act_sign"],
            name=p + "act_sign",
        )
        t.node.input[0] = p + "act_sign"
        return [ge, where]

    def scale_output(self, t: WeightLayer, x: str, bias: np.ndarray | None, wshape: list[int]) -> list[onnx.NodeProto]:
        """y = layer(sign x) · K (+ bias after): K = mean_c|x| (Conv: box-filtered like the conv's window)."""
        node, p = t.node, f"binarize/{t.node.name}/"
        y = node.output[0]
        node.output[0] = p + "unscaled"
        conv = node.op_type == "Conv"
        nodes = [
            helper.make_node("Abs", [x], [p + "act_abs"], name=p + "act_abs"),
            helper.make_node(
                "ReduceMean",
                [p + "act_abs", self.const(p + "mean_axes", np.array([1 if conv else -1], np.int64))],
                [p + "act_mean"],
                name=p + "act_mean",
                keepdims=1,
            ),
        ]
        k = p + "act_mean"
        if conv:
            ksize = wshape[2:]
            box = np.full([1, 1, *ksize], 1.0 / np.prod(ksize), np.float32)
            attrs = {
                a.name: helper.get_attribute_value(a)
                for a in node.attribute
                if a.name in ("strides", "pads", "dilations", "auto_pad", "kernel_shape")
            }
            nodes.append(
                helper.make_node("Conv", [k, self.const(p + "box", box)], [p + "act_k"], name=p + "act_k", **attrs)
            )
            k = p + "act_k"
        nodes.append(
            helper.make_node("Mul", [p + "unscaled", k], [p + "scaled" if bias is not None else y], name=p + "scale")
        )
        if bias is not None:
            b = bias.reshape(-1, *[1] * (len(wshape) - 2)) if conv else bias
            nodes.append(
                helper.make_node(
                    "Add", [p + "scaled", self.const(p + "bias", b.astype(np.float32))], [y], name=p + "bias_add"
                )
            )
        return nodes


def _const(name: str, inits: dict, producers: dict) -> np.ndarray | None:
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producers.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _existing_sign(x: str, inits: dict, producers: dict) -> list[onnx.NodeProto] | None:
    """[GreaterOrEqual, Where] if x is already Where(x' >= 0, 1, -1) (as fold_binary's export writes it)."""
    where = producers.get(x)
    ge = producers.get(where.input[0]) if where is not None and where.op_type == "Where" else None
    if ge is None or ge.op_type != "GreaterOrEqual":
        return None
    vals = [_const(n, inits, producers) for n in (ge.input[1], where.input[1], where.input[2])]
    if any(v is None or v.size != 1 for v in vals):
        return None
    return [ge, where] if [float(v.reshape(())) for v in vals] == [0.0, 1.0, -1.0] else None


def _prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy at opset >= 18 whose nodes all have unique names (names prefix the new nodes)."""
    out = onnx.ModelProto()
    out.CopyFrom(opset.upgrade(model, MIN_OPSET))
    seen: set[str] = set()
    for i, node in enumerate(out.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return out


@dataclass
class _Lookup:
    inits: dict[str, onnx.TensorProto]
    producers: dict[str, onnx.NodeProto]
    uses: dict[str, int]  # how many node inputs / graph outputs read a name

    @classmethod
    def of(cls, g: onnx.GraphProto) -> "_Lookup":
        uses: dict[str, int] = {}
        for name in [i for n in g.node for i in n.input] + [o.name for o in g.output]:
            uses[name] = uses.get(name, 0) + 1
        return cls({i.name: i for i in g.initializer}, {o: n for n in g.node for o in n.output}, uses)


def _float_reason(
    t: WeightLayer, w: np.ndarray, cfg: BinarizeConfig, kept: dict[str, str], look: _Lookup
) -> str | None:
    if t.node.name in kept:
        return kept[t.node.name]
    if look.uses[t.init_name] > 1:
        return "shared weight"
    if w.dtype != np.float32:
        return f"{w.dtype} weight"
    bias = t.node.input[2] if len(t.node.input) > 2 else ""
    if cfg.scale_activations and bias and bias not in look.inits:
        return "scale_activations needs a constant bias"
    if cfg.scale_activations and any(a.name == "transA" and a.i for a in t.node.attribute):
        return "transA=1 with scale_activations"
    return None


def _take_bias(t: WeightLayer, look: _Lookup, dropped: set[str]) -> np.ndarray | None:
    """Remove the layer's bias input (scale_activations adds it after the scale); Gemm's beta folded in."""
    if len(t.node.input) < 3 or not t.node.input[2]:
        return None
    name = t.node.input[2]
    bias = numpy_helper.to_array(look.inits[name])
    beta = next((a.f for a in t.node.attribute if a.name == "beta"), 1.0)
    if look.uses[name] == 1:
        dropped.add(name)
    del t.node.input[2]
    return bias * np.float32(beta)


def _binarize_layer(
    t: WeightLayer, w: np.ndarray, cfg: BinarizeConfig, b: _Builder, look: _Lookup, dropped: set[str]
) -> tuple[LayerReport, list[onnx.NodeProto], list[onnx.NodeProto]]:
    """Pack one layer's weight; returns its report and the nodes to insert before / after it."""
    w2d = t.rows()
    signs, alpha = binarize_reference(w2d)
    bits = pack_signs(w2d)
    b.unpack_weight(t, bits, alpha, list(w2d.shape) if t.stored_transposed else list(w.shape), w2d.shape[1])
    dropped.add(t.init_name)
    if t.node.op_type == "Gemm" and t.stored_transposed:  # unpacked as [O, K]
        attrs = [a for a in t.node.attribute if a.name != "transB"]
        del t.node.attribute[:]
        t.node.attribute.extend([*attrs, helper.make_attribute("transB", 1)])
    before, after, x = [], [], t.node.input[0]
    if cfg.mode == "xnor":
        existing = _existing_sign(x, look.inits, look.producers)
        if existing and look.uses[x] == 1 and look.uses[existing[0].output[0]] == 1:  # only this layer reads it
            for node, suffix in zip(existing, ("act_ge", "act_sign")):
                node.name = f"binarize/{t.node.name}/{suffix}"
            x = existing[0].input[0]
        else:
            before = b.sign_input(t, x)
    if cfg.scale_activations:
        after = b.scale_output(t, x, _take_bias(t, look, dropped), list(w.shape))
    err = float(np.sum((w2d - signs * alpha).astype(np.float64) ** 2))
    sqnr = 10 * float(np.log10(np.sum(w2d.astype(np.float64) ** 2) / err)) if err > 0 else None
    note = "" if err > 0 else "lossless: weights were already ±α"
    return LayerReport(t.node.name, t.node.op_type, 1, w.nbytes, bits.nbytes + alpha.nbytes, sqnr, note), before, after


def _set_metadata(model: onnx.ModelProto, mode: str) -> None:
    record_pass(model, "binarize")
    props = [p for p in model.metadata_props if p.key != MODE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=MODE_KEY, value=mode)


def run(model: onnx.ModelProto, cfg: BinarizeConfig) -> tuple[onnx.ModelProto, PassReport]:
    if cfg.mode not in MODES:
        raise EdgekitError(f"unknown binarize mode '{cfg.mode}'", "use 'weights' (BWN) or 'xnor'")
    if cfg.scale_activations and cfg.mode != "xnor":
        raise EdgekitError("scale_activations needs binary activations", "use mode 'xnor'")
    out = _prepare(model)
    g, look, b = out.graph, _Lookup.of(out.graph), _Builder()
    targets = _targets(out)
    kept = _kept(targets, tuple(cfg.keep))
    layers, dropped, before, after = [], set(), {}, {}
    for t in targets:
        w = t.weight
        why = _float_reason(t, w, cfg, kept, look)
        if why:
            layers.append(
                LayerReport(t.node.name, t.node.op_type, None, w.nbytes, w.nbytes, None, f"kept float ({why})")
            )
            continue
        report, before[t.node.name], after[t.node.name] = _binarize_layer(t, w, cfg, b, look, dropped)
        layers.append(report)
    nodes = list(b.unpack)  # the unpack subgraphs read initializers only: topologically first
    for node in g.node:
        nodes += before.get(node.name, []) + [node] + after.get(node.name, [])
    g.ClearField("node")
    g.node.extend(nodes)
    inits = [i for i in g.initializer if i.name not in dropped] + list(b.inits.values())
    g.ClearField("initializer")
    g.initializer.extend(inits)
    for listing in (g.input, g.value_info):  # old IRs list initializers as inputs; a W's shape may change
        entries = [v for v in listing if v.name not in dropped]
        del listing[:]
        listing.extend(entries)
    _set_metadata(out, cfg.mode)
    binary = [l for l in layers if l.bits == 1]
    wb, wa = sum(l.weight_bytes_before for l in binary), sum(l.weight_bytes_after for l in binary)
    extra = {"mode": cfg.mode, "binarized_layers": len(binary), "binarized_weight_ratio": wb / wa if wa else None}
    return out, PassReport("binarize", model.ByteSize(), out.ByteSize(), layers, extra)


def _configure(ctx: MethodContext) -> BinarizeConfig:
    cfg = BinarizeConfig(mode=ctx.opts.binarize_mode, scale_activations=ctx.opts.scale_activations)
    if ctx.opts.keep is not None:
        cfg.keep = ctx.opts.keep
    return cfg


METHOD = CompressionMethod("binarize", wanted=lambda opts: opts.bits == 1, configure=_configure, run=run)
