"""Structured channel pruning, training-free: remove whole channels so that every layer gets smaller and faster.

Three parts, as in Torch-Pruning: the dependency graph (`channels.py`: which channels move together), the
importance of each coupled class (here), and the pruner that picks a ratio per coupled group and rewrites the
graph (here). A group is the set of classes produced by the same layers: a plain Conv's outputs, or a residual
stage whose Add nodes tie several convs' channels together (all branches are pruned alike).

Criteria:
    l1 / l2      norm of each output filter, scaled by the following BatchNorm's |γ|/σ (the channel's
                 effective magnitude), divided by the layer's mean (so that layers compare under `global`).
    activation   data-aware, with calibration inputs: for each channel c read by a layer W,
                 ‖W[:, c]‖₂ · std(x_c) — the size of the change in that layer's output when c is removed and its
                 mean is moved into the bias (FLAP's fluctuation metric; the structured form of Wanda's |W|·‖x‖).

With calibration inputs (any criterion), each layer that loses input channels gets their mean contribution
added to its bias (bias compensation, as FLAP does): removing a post-ReLU channel no longer shifts the output.

References:
    Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (filter L1 norm).
    Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017 (BN γ).
    Sun et al., "A Simple and Effective Pruning Approach for Large Language Models" (Wanda), ICLR 2024.
    An et al., "Fluctuation-based Adaptive Structured Pruning for Large Language Models" (FLAP), AAAI 2024.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import EdgekitError, first_line
from edgekit.passes import CompressionMethod, LayerReport, MethodContext, PassReport, record_pass
from edgekit.passes.channel_graph import ChannelGraph, ModelEdit, batch_one, observed_shapes
from edgekit.passes.channels import build_channel_graph

CRITERIA = ("l1", "l2", "activation")
SCOPES = ("layer", "global")


@dataclass
class StructuredConfig:
    ratio: float  # fraction of the channels of every coupled group removed (scope "layer"), or of all (global)
    criterion: str = "l2"
    scope: str = "layer"
    round_to: int = 8  # kept channel counts are multiples of this (vector width friendly), where a group is larger
    calibration: list[dict[str, np.ndarray]] | None = None  # inputs, for the activation criterion
    skip: tuple[str, ...] = ()  # producer node names / fnmatch patterns left dense


def check_ratio(ratio: float, flag: str = "--prune") -> None:
    if not 0.0 <= ratio < 1.0:
        raise EdgekitError(
            f"{flag} {ratio} is outside [0, 1)", f"give the fraction of weights or channels to remove, e.g. {flag} 0.5"
        )


# --- importance ------------------------------------------------------------------------------------------


def _norms(w: np.ndarray, axis: int, kind: str) -> np.ndarray:
    moved = np.moveaxis(w.astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
    return np.abs(moved).sum(axis=1) if kind == "l1" else np.sqrt((moved**2).sum(axis=1))


def _bn_scale(graph: ChannelGraph, output: str, count: int) -> np.ndarray:
    """|γ|/sqrt(var + ε) of the BatchNormalization reading `output` directly, else ones."""
    inits = {t.name: t for t in graph.model.graph.initializer}
    for node in graph.model.graph.node:
        if (
            node.op_type == "BatchNormalization"
            and node.input[0] == output
            and all(n in inits for n in node.input[1:5])
        ):
            gamma, var = (numpy_helper.to_array(inits[node.input[i]]).astype(np.float64) for i in (1, 4))
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            if gamma.shape == (count,):
                return np.abs(gamma) / np.sqrt(var + eps)
    return np.ones(count)


def magnitude_scores(graph: ChannelGraph, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(sum of normalized scores, member count) per atomic id, from the producers' filters."""
    total, count = np.zeros(len(graph.parent)), np.zeros(len(graph.parent))
    for p in graph.producers:
        s = _norms(p.weight, p.out_axis, kind) * _bn_scale(graph, p.node.output[0], len(p.ids))
        total[p.ids] += s / max(s.mean(), 1e-12)
        count[p.ids] += 1
    return total, count


def channel_stats(
    model: onnx.ModelProto, tensors: list[str], samples: list[dict[str, np.ndarray]], axes: dict[str, int]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(mean, std) over the calibration inputs of each channel of `tensors` (onnxruntime, with them as outputs)."""
    from edgekit.onnxkit.tools import ort_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors if t not in known
    )
    session = ort_session(probe)
    first: dict[str, np.ndarray] = {}
    second: dict[str, np.ndarray] = {}
    for feed in samples:
        for name, value in zip(tensors, session.run(tensors, feed)):
            x = np.moveaxis(value.astype(np.float64), axes[name], 0).reshape(value.shape[axes[name]], -1)
            first[name] = first.get(name, 0) + x.mean(axis=1)
            second[name] = second.get(name, 0) + (x**2).mean(axis=1)
    out = {}
    for name in first:
        mean = first[name] / len(samples)
        out[name] = (mean, np.sqrt(np.maximum(second[name] / len(samples) - mean**2, 0.0)))
    return out


def consumer_stats(
    graph: ChannelGraph, samples: list[dict[str, np.ndarray]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    tensors = sorted({c.input for c in graph.consumers})
    return channel_stats(graph.model, tensors, samples, {c.input: graph.layouts[c.input].axis for c in graph.consumers})


def activation_scores(
    graph: ChannelGraph, stats: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) per atomic id of ‖W[:, c]‖·std(x_c) over the layers that read each channel: the output change
    removing c causes once its mean is moved into the bias (compensate_biases)."""
    total, count = np.zeros(len(graph.parent)), np.zeros(len(graph.parent))
    for c in graph.consumers:
        std = stats[c.input][1]
        if len(std) != len(c.ids):
            continue
        s = _norms(c.weight, c.in_axis, "l2") * std
        np.add.at(total, c.ids, s / max(s.mean(), 1e-12))
        np.add.at(count, c.ids, 1)
    return total, count


def compensate_biases(
    out: onnx.ModelProto, graph: ChannelGraph, mask: np.ndarray, stats: dict[str, tuple[np.ndarray, np.ndarray]]
) -> list[str]:
    """Each layer that lost input channels gets their mean contribution added to its bias, Σ_c W[:, c]·E[x_c]
    (kernel taps summed; exact away from padded borders). Returns the layers it could not compensate (MatMul:
    no bias input)."""
    inits = {t.name: t for t in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}
    kept_out = {p.node.name: np.nonzero(mask[p.ids])[0] for p in graph.producers}
    skipped = []
    for c in graph.consumers:
        dropped = ~mask[c.ids]
        mean = stats[c.input][0]
        if not dropped.any() or len(mean) != len(c.ids):
            continue
        if c.node.op_type == "MatMul":
            skipped.append(c.node.name)
            continue
        w = np.moveaxis(c.weight.astype(np.float64), c.in_axis, 0)  # [in, ...]
        w = w.reshape(w.shape[0], w.shape[1], -1).sum(axis=2) if c.node.op_type != "Gemm" else w  # [in, out]
        delta = (mean[dropped, None] * w[dropped]).sum(axis=0)
        if c.node.op_type == "ConvTranspose":  # each output pixel receives one tap in stride_h·stride_w, on average
            delta = delta / np.prod([a.ints for a in c.node.attribute if a.name == "strides"] or [1])
        if c.node.op_type == "Gemm":
            beta = next((a.f for a in c.node.attribute if a.name == "beta"), 1.0)
            delta = delta / (beta or 1.0)
        node = nodes[c.node.name]
        delta = delta[kept_out.get(node.name, np.arange(len(delta)))]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[node.input[2]])
            inits[node.input[2]].CopyFrom(
                numpy_helper.from_array((bias + delta.reshape(bias.shape)).astype(bias.dtype), node.input[2])
            )
        else:
            name = f"{node.name}.compensation"
            out.graph.initializer.append(numpy_helper.from_array(delta.astype(np.float32), name))
            while len(node.input) < 2:
                node.input.append("")
            node.input.append(name)
    return skipped


# --- choosing what to remove ----------------------------------------------------------------------------


def _kept_count(n: int, ratio: float, round_to: int) -> int:
    want = n * (1.0 - ratio)
    if ratio == 0:
        return n
    if n >= 2 * round_to:
        return int(min(n, max(round_to, round_to * round(want / round_to))))
    return int(min(n, max(1, round(want))))


@dataclass
class Group:
    layers: tuple[str, ...]  # the producers whose channels these classes are
    classes: np.ndarray  # root ids
    scores: np.ndarray
    kept: int = 0


def prunable_groups(graph: ChannelGraph, cfg: StructuredConfig, stats=None) -> tuple[list[Group], np.ndarray]:
    roots = np.array([graph.find(i) for i in range(len(graph.parent))], dtype=np.int64)
    if cfg.criterion == "activation":
        if stats is None:
            raise EdgekitError(
                "--prune-criterion activation needs calibration inputs", "pass --calib data.npz (or 'digits', 'random')"
            )
        total, count = activation_scores(graph, stats)
    else:
        total, count = magnitude_scores(graph, cfg.criterion)
    frozen = set(graph.frozen_roots())
    skipped = {p.node.name for p in graph.producers if any(fnmatch.fnmatch(p.node.name, k) for k in cfg.skip)}
    members: dict[int, set[str]] = {}
    for i, root in enumerate(roots.tolist()):
        members.setdefault(root, set()).add(graph.owner[i])
    class_total, class_count = np.zeros(len(roots)), np.zeros(len(roots))
    np.add.at(class_total, roots, total)
    np.add.at(class_count, roots, count)
    by_layers: dict[tuple[str, ...], list[int]] = {}
    for root, owners in members.items():
        if root in frozen or owners & skipped or class_count[root] == 0:
            continue
        by_layers.setdefault(tuple(sorted(owners)), []).append(root)
    groups = [
        Group(layers, np.array(classes), class_total[classes] / class_count[classes])
        for layers, classes in by_layers.items()
    ]
    return groups, roots


def choose(groups: list[Group], cfg: StructuredConfig) -> None:
    if cfg.scope == "layer":
        for g in groups:
            g.kept = _kept_count(len(g.classes), cfg.ratio, cfg.round_to)
        return
    # global: one threshold over every group's normalized scores; each group keeps at least round_to (or all, if
    # smaller)
    scores = np.concatenate([g.scores for g in groups]) if groups else np.zeros(0)
    drop_total = int(round(len(scores) * cfg.ratio))
    threshold = np.sort(scores)[drop_total - 1] if drop_total else -np.inf
    for g in groups:
        floor = min(len(g.classes), cfg.round_to)
        g.kept = max(floor, int((g.scores > threshold).sum()))


def keep_mask(graph: ChannelGraph, groups: list[Group], roots: np.ndarray) -> np.ndarray:
    mask = np.ones(len(roots), dtype=bool)
    for g in groups:
        order = np.argsort(-g.scores, kind="stable")
        mask[g.classes[order[g.kept :]]] = False
    return mask[roots]  # per atomic id


# --- the pass ---------------------------------------------------------------------------------------------


def _weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in inits:
            out[n.name] = sum(numpy_helper.to_array(inits[i]).nbytes for i in n.input[1:] if i in inits)
    return out


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for n in model.graph.node for name in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where every node has a unique name and Constant nodes are initializers (edits address both)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    seen: set[str] = set()
    constants = []
    for i, node in enumerate(out.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            constants.append(node)
    for node in constants:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        out.graph.initializer.append(tensor)
        out.graph.node.remove(node)
    return out


def count_macs_batch1(model: onnx.ModelProto) -> int | None:
    """MACs at batch 1 (symbolic input dims set to 1)."""
    from edgekit.inspection import count_macs

    fixed = batch_one(model)
    try:
        macs = count_macs(fixed)
        return (
            macs
            if macs is not None
            else count_macs(fixed, observed_shapes(fixed, onnx.shape_inference.infer_shapes(fixed)))
        )
    except onnx.shape_inference.InferenceError:
        return None


def run(model: onnx.ModelProto, cfg: StructuredConfig) -> tuple[onnx.ModelProto, PassReport]:
    check_ratio(cfg.ratio)
    if cfg.criterion not in CRITERIA:
        raise EdgekitError(f"unknown pruning criterion '{cfg.criterion}'", f"choose from {', '.join(CRITERIA)}")
    if cfg.scope not in SCOPES:
        raise EdgekitError(f"unknown pruning scope '{cfg.scope}'", f"choose from {', '.join(SCOPES)}")
    source = model
    model = prepare(model)
    graph = build_channel_graph(model)
    stats = consumer_stats(graph, cfg.calibration) if cfg.calibration else None
    groups, roots = prunable_groups(graph, cfg, stats)
    if not groups:
        reasons = sorted(set(graph.blocked.values()) | set(graph.frozen_roots().values()))[:3]
        raise EdgekitError(
            "no channel of this model can be pruned safely" + (f" ({'; '.join(reasons)})" if reasons else ""),
            "structured pruning needs Conv/Gemm/MatMul layers whose outputs feed other weight layers",
        )
    choose(groups, cfg)
    mask = keep_mask(graph, groups, roots)

    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = ModelEdit(out)
    for e in graph.edits:
        e.apply(lambda ids: np.nonzero(mask[ids])[0], edit)
    uncompensated = compensate_biases(out, graph, mask, stats) if stats is not None else None
    _drop_unused_initializers(out)
    del out.graph.value_info[:]
    try:
        onnx.checker.check_model(out)
        onnx.shape_inference.infer_shapes(out, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EdgekitError(
            f"structured pruning produced an invalid graph: {first_line(str(exc))}",
            "this is a bug for this graph pattern; report it with the model, or --prune-skip the layer named",
        ) from None

    before, after = _weight_bytes(model), _weight_bytes(out)
    report = PassReport(
        "prune-structured",
        source.ByteSize(),
        out.ByteSize(),
        extra={"mode": f"structured {cfg.ratio:.0%} ({cfg.criterion}, {cfg.scope})"},
    )
    channels = {p.node.name: (len(p.ids), int(mask[p.ids].sum())) for p in graph.producers}
    frozen = graph.frozen_roots()
    why = {p.node.name: next((frozen[r] for r in roots[p.ids].tolist() if r in frozen), "") for p in graph.producers}
    for name, size in before.items():
        c = channels.get(name)
        note = (f"{c[0]}→{c[1]} out" if c else "") + (
            f"; dense: {why[name]}" if why.get(name) and c and c[0] == c[1] else ""
        )
        report.layers.append(LayerReport(name, edit.nodes[name].op_type, None, size, after.get(name, 0), note=note))
    report.extra["groups"] = [{"layers": list(g.layers), "channels": len(g.classes), "kept": g.kept} for g in groups]
    report.extra["left_dense"] = sorted(set(graph.blocked.values()))
    report.extra["bias_compensation"] = (
        "off (no calibration data)"
        if uncompensated is None
        else ("on" + (f"; not for {', '.join(uncompensated)} (MatMul has no bias)" if uncompensated else ""))
    )
    report.extra["macs_before"], report.extra["macs_after"] = count_macs_batch1(model), count_macs_batch1(out)
    record_pass(out, f"prune-structured{cfg.ratio:g}")
    return out, report


def _configure(ctx: MethodContext) -> StructuredConfig:
    o = ctx.opts
    return StructuredConfig(
        ratio=o.prune,
        criterion=o.prune_criterion,
        scope=o.prune_scope,
        round_to=o.round_to,
        calibration=ctx.calibration(min(o.calib_samples, 64)),
        skip=o.prune_skip,
    )


METHOD = CompressionMethod("structured", wanted=lambda opts: opts.structured, configure=_configure, run=run)
