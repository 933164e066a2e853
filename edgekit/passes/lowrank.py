"""Low-rank factorization: Gemm / MatMul and 1×1 Conv weights replaced by two thinner layers (truncated SVD).

    W [O, K] ≈ B·A,  B = U_r·√S_r [O, r],  A = √S_r·V_rᵀ [r, K]      y = W x + b  ->  y = B (A x) + b

Rank: a fixed `rank`, or the smallest r whose singular values keep `energy` of Σσ² (per layer). A layer is
factorized only where r·(O + K) < O·K, so it always gets smaller; the others stay and say why.
Strides and pads of a 1×1 conv go to the first factor; the bias to the second.

References:
    Denton et al., "Exploiting Linear Structure Within Convolutional Networks for Efficient Evaluation", NeurIPS 2014.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.errors import EdgekitError
from edgekit.passes import CompressionMethod, LayerReport, MethodContext, PassReport, record_pass
from edgekit.passes.channel_graph import attr
from edgekit.passes.weights import WeightLayer, weight_layers


@dataclass
class LowRankConfig:
    rank: int | None = None
    energy: float | None = None  # in (0, 1]
    skip: tuple[str, ...] = ()


def check_config(cfg: LowRankConfig) -> None:
    if (cfg.rank is None) == (cfg.energy is None):
        raise EdgekitError(
            "give one of --rank R or --rank-energy E", "e.g. --rank-energy 0.9 (keep 90% of each layer's Σσ²)"
        )
    if cfg.rank is not None and cfg.rank < 1:
        raise EdgekitError(f"--rank {cfg.rank} must be >= 1", "e.g. --rank 16")
    if cfg.energy is not None and not 0.0 < cfg.energy <= 1.0:
        raise EdgekitError(f"--rank-energy {cfg.energy} is outside (0, 1]", "e.g. --rank-energy 0.9")


def choose_rank(sigma: np.ndarray, cfg: LowRankConfig) -> int:
    if cfg.rank is not None:
        return int(min(cfg.rank, len(sigma)))
    energy = np.cumsum(sigma.astype(np.float64) ** 2)
    return int(np.searchsorted(energy, cfg.energy * energy[-1] * (1 - 1e-12)) + 1)


def factor(w2d: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(B [O, r], A [r, K], kept energy) of w2d [O, K]."""
    u, s, vt = np.linalg.svd(w2d.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:r])
    kept = float((s[:r] ** 2).sum() / max((s**2).sum(), 1e-30))
    return (u[:, :r] * root).astype(w2d.dtype), (root[:, None] * vt[:r]).astype(w2d.dtype), kept


def _candidates(model: onnx.ModelProto) -> list[WeightLayer]:
    """The layers this pass can split: 1x1 convs without groups or dilation, Gemm without transA, 2-D MatMul."""

    def splittable(l: WeightLayer) -> bool:
        node, w = l.node, l.weight
        if node.op_type == "Conv":
            return (
                w.ndim == 4
                and w.shape[2:] == (1, 1)
                and attr(node, "group", 1) == 1
                and list(attr(node, "dilations", [1, 1])) == [1, 1]
            )
        return w.ndim == 2 and not (node.op_type == "Gemm" and attr(node, "transA", 0))

    return [l for l in weight_layers(model, float_only=False) if splittable(l)]


def _replacement(node: onnx.NodeProto, b: np.ndarray, a: np.ndarray, inits: list) -> list[onnx.NodeProto]:
    name, hidden = node.name or node.output[0], f"{node.output[0]}.lowrank"
    a_name, b_name = f"{name}.lowrank.A", f"{name}.lowrank.B"
    if node.op_type == "Conv":
        inits += [
            numpy_helper.from_array(a[:, :, None, None], a_name),
            numpy_helper.from_array(b[:, :, None, None], b_name),
        ]
        first_attrs = {
            x.name: helper.get_attribute_value(x) for x in node.attribute if x.name in ("strides", "pads", "auto_pad")
        }
        return [
            helper.make_node(
                "Conv", [node.input[0], a_name], [hidden], name=f"{name}/lowrank_a", kernel_shape=[1, 1], **first_attrs
            ),
            helper.make_node(
                "Conv",
                [hidden, b_name, *node.input[2:]],
                list(node.output),
                name=f"{name}/lowrank_b",
                kernel_shape=[1, 1],
            ),
        ]
    if node.op_type == "Gemm":
        inits += [numpy_helper.from_array(a, a_name), numpy_helper.from_array(b, b_name)]
        alpha, beta = attr(node, "alpha", 1.0), attr(node, "beta", 1.0)
        return [
            helper.make_node("Gemm", [node.input[0], a_name], [hidden], name=f"{name}/lowrank_a", transB=1),
            helper.make_node(
                "Gemm",
                [hidden, b_name, *node.input[2:]],
                list(node.output),
                name=f"{name}/lowrank_b",
                transB=1,
                alpha=alpha,
                beta=beta,
            ),
        ]
    inits += [
        numpy_helper.from_array(np.ascontiguousarray(a.T), a_name),
        numpy_helper.from_array(np.ascontiguousarray(b.T), b_name),
    ]
    return [
        helper.make_node("MatMul", [node.input[0], a_name], [hidden], name=f"{name}/lowrank_a"),
        helper.make_node("MatMul", [hidden, b_name], list(node.output), name=f"{name}/lowrank_b"),
    ]


def run(model: onnx.ModelProto, cfg: LowRankConfig) -> tuple[onnx.ModelProto, PassReport]:
    check_config(cfg)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    report = PassReport(
        "lowrank",
        model.ByteSize(),
        0,
        extra={"mode": f"low-rank ({'rank ' + str(cfg.rank) if cfg.rank else f'energy {cfg.energy:g}'})"},
    )
    new_inits: list[onnx.TensorProto] = []
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for layer in _candidates(out):
        index, node, w2d = layer.index, layer.node, layer.rows()
        o, k = w2d.shape
        label = node.name or node.output[0]
        if any(fnmatch.fnmatch(label, p) for p in cfg.skip):
            continue
        r = choose_rank(np.linalg.svd(w2d.astype(np.float64), compute_uv=False), cfg)
        if r * (o + k) >= o * k:
            report.layers.append(
                LayerReport(
                    label,
                    node.op_type,
                    None,
                    w2d.nbytes,
                    w2d.nbytes,
                    note=f"rank {r} of {min(o, k)} would not shrink it: kept",
                )
            )
            continue
        b, a, kept = factor(w2d, r)
        replaced[index] = _replacement(node, b, a, new_inits)
        report.layers.append(
            LayerReport(
                label,
                node.op_type,
                None,
                w2d.nbytes,
                a.nbytes + b.nbytes,
                note=f"rank {r} of {min(o, k)}, energy {kept:.3f}",
            )
        )
    if not replaced:
        raise EdgekitError(
            "no layer gets smaller at this rank",
            "lower --rank / --rank-energy, or the model has no Gemm/MatMul/1×1 Conv to factorize",
        )
    nodes = [n for i, old in enumerate(out.graph.node) for n in replaced.get(i, [old])]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(new_inits)
    used = {i for n in out.graph.node for i in n.input}
    live = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(live)
    onnx.checker.check_model(out)
    record_pass(out, "lowrank")
    report.size_after = out.ByteSize()
    return out, report


def _configure(ctx: MethodContext) -> LowRankConfig:
    return LowRankConfig(rank=ctx.opts.rank, energy=ctx.opts.rank_energy, skip=ctx.opts.prune_skip)


METHOD = CompressionMethod(
    "lowrank",
    wanted=lambda opts: opts.factorizes,
    configure=_configure,
    run=run,
    check=lambda opts: check_config(LowRankConfig(rank=opts.rank, energy=opts.rank_energy)),
)
