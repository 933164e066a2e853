"""Unstructured and N:M magnitude pruning of Conv / Gemm / MatMul weights, stored so that the file shrinks.

    unstructured  zero the fraction `ratio` of smallest |w|: per layer, or under one global threshold
    N:M           in every M consecutive weights along the reduction (input-channel) axis keep the N largest;
                  layers whose input channels M does not divide stay dense and are named in the report
    block B       unstructured over blocks of B consecutive output channels at one input position, ranked by
                  their L2 norm: what a sparse kernel vectorizes (compiler/relax_passes/sparse.py runs 1x8 blocks)

Zeros do not make dense kernels faster: onnxruntime densifies the weights (sparse_format.py) and runs the same dense
math. What unstructured zeros buy is file size; whole blocks (--prune-block 8) also let edgekit's TVM build skip
them in 1x1 convs and Gemm / MatMul layers; structured pruning (structured.py) cuts latency everywhere.

References:
    Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015.
    Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021 (2:4 along the reduction axis).
    Chen et al., "Sparsity May Cry: ... essential sparsity", ICLR 2023 (the one-shot sweep and its knee).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import EdgekitError
from edgekit.passes import CompressionMethod, LayerReport, MethodContext, PassReport, opset, record_pass, sparse_format
from edgekit.passes.structured import check_ratio
from edgekit.passes.weights import weight_layers

SCOPES = ("layer", "global")


@dataclass
class PruneConfig:
    ratio: float = 0.0  # unstructured sparsity (ignored when nm is set)
    nm: tuple[int, int] | None = None
    scope: str = "layer"
    storage: str = "mask"  # sparse_format.FORMATS
    skip: tuple[str, ...] = ()  # layer names / fnmatch patterns left dense; "first" / "last": those layers
    block: int = 1  # with ratio: prune whole blocks of this many output channels
    sweep: SweepConfig | None = None  # also report a one-shot sparsity sweep of the input model


@dataclass
class SweepConfig:
    samples: list[dict[str, np.ndarray]]
    levels: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
    accuracy: Callable[[onnx.ModelProto], float] | None = None  # on a labelled set, where there is one


def parse_nm(text: str) -> tuple[int, int]:
    n, sep, m = text.partition(":")
    if not sep or not n.isdigit() or not m.isdigit() or not 0 < int(n) < int(m):
        raise EdgekitError(f"bad --nm '{text}'", "write N:M with 0 < N < M, e.g. --nm 2:4 (keep 2 of every 4 weights)")
    return int(n), int(m)


def _reduction_last(w: np.ndarray, in_axis: int) -> np.ndarray:
    """The weight with its reduction (input-channel) axis moved last: Conv [O, kh, kw, C], MatMul/Gemm [O, K]."""
    return np.moveaxis(w, in_axis, -1)


def nm_mask(w: np.ndarray, n: int, m: int, in_axis: int) -> np.ndarray:
    moved = _reduction_last(np.abs(w), in_axis)
    groups = moved.reshape(-1, m)
    order = np.argsort(-groups, axis=1, kind="stable")
    keep = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep, order[:, :n], True, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, in_axis)


def obeys_nm(w: np.ndarray, n: int, m: int, in_axis: int) -> bool:
    """Every group of M consecutive weights along the reduction axis has at most N non-zeros."""
    moved = _reduction_last(w, in_axis)
    return moved.shape[-1] % m == 0 and bool(((moved.reshape(-1, m) != 0).sum(axis=1) <= n).all())


def magnitude_masks(weights: dict[str, np.ndarray], ratio: float, scope: str) -> dict[str, np.ndarray]:
    if scope == "global":
        pooled = np.concatenate([np.abs(w).ravel() for w in weights.values()])
        k = int(round(ratio * pooled.size))
        threshold = np.partition(pooled, k - 1)[k - 1] if k else -1.0
        return {name: np.abs(w) > threshold for name, w in weights.items()}
    masks = {}
    for name, w in weights.items():
        k = int(round(ratio * w.size))
        order = np.argsort(np.abs(w).ravel(), kind="stable")
        keep = np.ones(w.size, dtype=bool)
        keep[order[:k]] = False
        masks[name] = keep.reshape(w.shape)
    return masks


def _depthwise(node: onnx.NodeProto, w: np.ndarray) -> bool:
    """A grouped conv with one input channel per group: its blocks would cut whole filters, not share an input."""
    return (
        node.op_type == "Conv"
        and w.ndim > 2
        and w.shape[1] == 1
        and any(a.name == "group" and a.i > 1 for a in node.attribute)
    )


def block_masks(layers, weights: dict[str, np.ndarray], ratio: float, scope: str, block: int) -> dict[str, np.ndarray]:
    """Magnitude masks over 1 x `block` blocks along each layer's output axis (layers whose output channels `block`
    does not divide are left out: dense)."""
    axes = {
        l.init_name: l.axis
        for l in layers
        if l.init_name in weights and l.weight.shape[l.axis] % block == 0 and not _depthwise(l.node, l.weight)
    }
    scores = {}
    for name, axis in axes.items():
        moved = np.moveaxis(weights[name], axis, 0)
        scores[name] = np.sqrt((moved.reshape(moved.shape[0] // block, block, -1) ** 2).mean(axis=1))
    kept = magnitude_masks(scores, ratio, scope)
    masks = {}
    for name, axis in axes.items():
        moved_shape = np.moveaxis(weights[name], axis, 0).shape
        keep = np.repeat(kept[name], block, axis=0).reshape(moved_shape)
        masks[name] = np.moveaxis(keep, 0, axis)
    return masks


def sparsify(model: onnx.ModelProto, cfg: PruneConfig) -> tuple[dict[str, np.ndarray], PassReport]:
    """The pruned weights (by initializer name) and the per-layer report; the model is not changed."""
    every = weight_layers(model)
    named = {"first": every[0].node.name, "last": every[-1].node.name} if every else {}
    skip = [named.get(k, k) for k in cfg.skip]  # "first" / "last" as in --keep
    layers = [l for l in every if not any(fnmatch.fnmatch(l.node.name, k) for k in skip)]
    if not layers:
        raise EdgekitError(
            "the model has no Conv/Gemm/MatMul layer with float weights to prune", "pruning needs weight layers"
        )
    report = PassReport("prune", model.ByteSize(), 0)
    shared = {l.init_name for l in layers if sum(x.init_name == l.init_name for x in layers) > 1}
    weights = {l.init_name: l.weight for l in layers if l.init_name not in shared}
    if cfg.nm:
        n, m = cfg.nm
        masks = {}
        for l in layers:
            axis = l.in_axis
            if l.init_name in weights and l.weight.shape[axis] % m == 0:
                masks[l.init_name] = nm_mask(l.weight, n, m, axis)
        if not masks:
            raise EdgekitError(
                f"--nm {n}:{m}: no layer has a number of input channels that {m} divides",
                "choose M dividing the channel counts (e.g. 2:4 on multiples of 4)",
            )
        report.extra["mode"] = f"{n}:{m} sparsity"
    elif cfg.block > 1:
        masks = block_masks(layers, weights, cfg.ratio, cfg.scope, cfg.block)
        if not masks:
            raise EdgekitError(
                f"--prune-block {cfg.block}: no layer has a number of output channels that {cfg.block} divides",
                "choose a block dividing the channel counts (8 for the TVM sparse kernels)",
            )
        report.extra["mode"] = f"1x{cfg.block} blocks {cfg.ratio:.0%} ({cfg.scope})"
    else:
        masks = magnitude_masks(weights, cfg.ratio, cfg.scope)
        report.extra["mode"] = f"unstructured {cfg.ratio:.0%} ({cfg.scope})"
    pruned = {name: np.where(mask, weights[name], 0).astype(weights[name].dtype) for name, mask in masks.items()}
    for l in layers:
        w = pruned.get(l.init_name)
        undivided = (
            f"depthwise, or output channels not divisible by {cfg.block}: dense"
            if cfg.block > 1 and not cfg.nm
            else "input channels not divisible by M: dense"
        )
        note = "shared weight: left dense" if l.init_name in shared else (undivided if w is None else "")
        sparsity = 0.0 if w is None else 1.0 - np.count_nonzero(w) / w.size
        report.layers.append(
            LayerReport(
                l.node.name,
                l.node.op_type,
                None,
                l.weight.nbytes,
                l.weight.nbytes,
                note=note or f"{sparsity:.1%} zeros",
            )
        )
    return pruned, report


def store(
    model: onnx.ModelProto, pruned: dict[str, np.ndarray], storage: str
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy of the model with the pruned weights written in `storage`; bytes each weight takes on disk."""
    if storage not in sparse_format.FORMATS:
        raise EdgekitError(f"unknown sparse storage '{storage}'", f"choose from {', '.join(sparse_format.FORMATS)}")
    out = opset.upgrade(model, 18) if storage == "mask" else model
    copy = onnx.ModelProto()
    copy.CopyFrom(out)
    stored: dict[str, int] = {}
    for t in copy.graph.initializer:
        if t.name in pruned:
            t.CopyFrom(numpy_helper.from_array(pruned[t.name], t.name))
    for name, w in pruned.items():
        dense = w.nbytes
        if storage == "mask" and sparse_format.mask_bytes(w) < dense:
            sparse_format.encode_mask(copy.graph, name, w)
            stored[name] = sparse_format.mask_bytes(w)
        elif storage == "coo" and sparse_format.coo_bytes(w) < dense:
            sparse_format.encode_coo(copy.graph, name, w)
            stored[name] = sparse_format.coo_bytes(w)
        else:
            stored[name] = dense
    return copy, stored


def run(model: onnx.ModelProto, cfg: PruneConfig) -> tuple[onnx.ModelProto, PassReport]:
    if cfg.nm is None:
        check_ratio(cfg.ratio)
    if cfg.scope not in SCOPES:
        raise EdgekitError(f"unknown pruning scope '{cfg.scope}'", f"choose from {', '.join(SCOPES)}")
    pruned, report = sparsify(model, cfg)
    out, stored = store(model, pruned, cfg.storage)
    layers = weight_layers(model)
    init_of = {l.node.name: l.init_name for l in layers}
    for layer in report.layers:
        layer.weight_bytes_after = stored.get(init_of.get(layer.name), layer.weight_bytes_before)
    total = sum(w.size for w in pruned.values())
    report.extra["sparsity"] = 1.0 - sum(np.count_nonzero(w) for w in pruned.values()) / max(total, 1)
    report.extra["storage"] = cfg.storage
    if cfg.nm:
        n, m = cfg.nm
        report.extra["nm_checked"] = all(
            obeys_nm(pruned[l.init_name], n, m, l.in_axis) for l in layers if l.init_name in pruned
        )
    record_pass(out, f"prune{cfg.nm[0]}:{cfg.nm[1]}" if cfg.nm else f"prune{cfg.ratio:g}")
    report.size_after = out.ByteSize()
    if cfg.sweep is not None:
        report.extra["sweep"] = sweep(model, cfg.sweep.samples, list(cfg.sweep.levels), cfg.scope, cfg.sweep.accuracy)
    return out, report


def sweep(
    model: onnx.ModelProto,
    samples: list[dict[str, np.ndarray]],
    levels: list[float],
    scope: str = "layer",
    evaluate=None,
) -> dict:
    """One-shot magnitude pruning at each level: output error vs the dense model (and `evaluate(model)` accuracy),
    with the knee: the level after which quality starts to drop fast (Kneedle: the point farthest above the chord)."""
    from edgekit.onnxkit.tools import ort_session

    def outputs(m: onnx.ModelProto) -> list[np.ndarray]:
        session = ort_session(m)
        return [np.concatenate([np.ravel(o) for o in session.run(None, feed)]) for feed in samples]

    reference = outputs(model)
    rows = []
    for level in levels:
        pruned, _ = sparsify(model, PruneConfig(ratio=level, scope=scope))
        dense, _ = store(model, pruned, "dense")
        got = outputs(dense)
        err = float(np.mean([np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-12) for g, r in zip(got, reference)]))
        row = {"sparsity": level, "rel_output_error": err}
        if evaluate is not None:
            row["accuracy"] = evaluate(dense)
        rows.append(row)
    quality = (
        [r["rel_output_error"] for r in rows]
        if evaluate is None
        else [rows[0]["accuracy"] - r["accuracy"] for r in rows]
    )
    return {"levels": rows, "knee": knee(levels, quality), "knee_on": "accuracy drop" if evaluate else "output error"}


def knee(x: list[float], y: list[float]) -> float | None:
    """Kneedle for an increasing convex curve: the x where the normalized curve lies farthest below the chord."""
    if len(x) < 3 or max(y) - min(y) <= 0:
        return None
    xs = (np.asarray(x) - x[0]) / (x[-1] - x[0])
    ys = (np.asarray(y) - min(y)) / (max(y) - min(y))
    return float(x[int(np.argmax(xs - ys))])


def _configure(ctx: MethodContext) -> PruneConfig:
    o = ctx.opts
    # quantization after pruning reads float initializers, not a decode subgraph: the zeros stay dense then
    storage = "dense" if o.bits else o.sparse_format
    swept = SweepConfig(ctx.calibration(8, "random"), accuracy=ctx.accuracy) if o.sweep else None
    return PruneConfig(
        ratio=o.prune or 0.0,
        nm=parse_nm(o.nm) if o.nm else None,
        scope=o.prune_scope,
        storage=storage,
        skip=o.prune_skip,
        block=o.prune_block,
        sweep=swept,
    )


METHOD = CompressionMethod(
    "prune", wanted=lambda opts: opts.prunes and not opts.structured, configure=_configure, run=run
)
