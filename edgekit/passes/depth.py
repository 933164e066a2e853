"""Depth pruning, training-free: residual blocks replaced by a linear map fitted on calibration activations.

A block is what lies between a tensor x and `Add(x, f(x))` (plus a ReLU right after, if any) when x is its only
way in and the Add (or ReLU) its only way out, with output and input of the same shape: identity shortcuts
(ResNet basic and bottleneck blocks, MobileNetV2 inverted residuals, transformer sublayers).

    score(block)   mean cosine distance between x and the block's output over the calibration set: the blocks
                   that change their input least go first (ReplaceMe / ShortGPT's criterion)
    replacement    y ≈ T·x + b per position (1×1 Conv for NCHW, MatMul + Add for [..., C]), T and b by ridge
                   least squares on the calibration activations of the original model

References:
    Shopkhoev et al., "ReplaceMe: Network Simplification via Depth Pruning and Transformer Block Linearization", 2025.
    Men et al., "ShortGPT: Layers in Large Language Models are More Redundant Than You Expect", 2024.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.errors import EdgekitError
from edgekit.passes import CompressionMethod, LayerReport, MethodContext, PassReport, record_pass


@dataclass
class DepthConfig:
    blocks: int  # how many residual blocks to replace
    calibration: list[dict[str, np.ndarray]] | None = None
    ridge: float = 1e-3  # relative to the mean diagonal of XᵀX


@dataclass
class Block:
    entry: str  # x
    exit: str  # the Add's (or the ReLU after it) output
    nodes: list[int]  # graph indices of the block's nodes (the Add / ReLU included)
    score: float = 0.0


def find_blocks(model: onnx.ModelProto, shapes: dict[str, tuple]) -> list[Block]:
    nodes = list(model.graph.node)
    inits = {t.name for t in model.graph.initializer}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    for name in inits:
        producer.pop(name, None)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    outputs = {o.name for o in model.graph.output}
    blocks = []
    for i, add in enumerate(nodes):
        if add.op_type != "Add" or len(add.input) != 2 or any(t in inits for t in add.input):
            continue
        for skip, branch in (add.input, add.input[::-1]):
            inner = _ancestors_without_inits(branch, producer, nodes, skip, inits)
            if inner is None or not inner or shapes.get(skip) != shapes.get(add.output[0]) or shapes.get(skip) is None:
                continue
            members, exit_name = inner | {i}, add.output[0]
            after = consumers.get(exit_name, [])
            if len(after) == 1 and nodes[after[0]].op_type == "Relu" and exit_name not in outputs:
                members.add(after[0])
                exit_name = nodes[after[0]].output[0]
            internal = {o for m in members for o in nodes[m].output} - {exit_name}
            if any(c not in members for t in internal for c in consumers.get(t, [])) or internal & outputs:
                continue  # something outside reads a tensor inside: not a block
            blocks.append(Block(skip, exit_name, sorted(members)))
            break
    return blocks


def _ancestors_without_inits(name, producer, nodes, stop, inits) -> set[int] | None:
    seen: set[int] = set()
    stack = [name]
    while stack:
        t = stack.pop()
        if t == stop or t in inits or not t:
            continue
        if t not in producer:
            return None
        i = producer[t]
        if i not in seen:
            seen.add(i)
            stack.extend(nodes[i].input)
    return seen


def _activations(model: onnx.ModelProto, names: list[str], samples) -> dict[str, list[np.ndarray]]:
    from edgekit.onnxkit.tools import ort_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in known
    )
    session = ort_session(probe)
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in samples:
        for n, v in zip(names, session.run(names, feed)):
            got[n].append(v)
    return got


def _rows(xs: list[np.ndarray]) -> np.ndarray:
    """[positions, C]: NCHW -> channels last; [..., C] as is."""
    return np.concatenate(
        [np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]) if x.ndim == 4 else x.reshape(-1, x.shape[-1]) for x in xs]
    ).astype(np.float64)


def fit_linear(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """T [C_out, C_in], b [C_out] minimizing ‖x Tᵀ + b - y‖² + λ‖T‖² (λ = ridge · mean diag of xᵀx)."""
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mean_x, y - mean_y
    gram = xc.T @ xc
    lam = ridge * float(np.trace(gram)) / len(gram)
    t = np.linalg.solve(gram + lam * np.eye(len(gram)), xc.T @ yc).T
    return t, mean_y - t @ mean_x


def _linear_map(
    out: onnx.ModelProto, b: Block, name: str, acts: dict[str, list[np.ndarray]], ridge: float
) -> tuple[list[onnx.NodeProto], LayerReport]:
    """The fitted map x -> T x + b replacing block `b` (a 1x1 conv on images, MatMul + Add otherwise): its nodes,
    its initializers added to `out`, and its report row (weight_bytes_before left for the caller)."""
    x, y = _rows(acts[b.entry]), _rows(acts[b.exit])
    t, bias = fit_linear(x, y, ridge)
    residual = float(np.linalg.norm(x @ t.T + bias - y) / max(np.linalg.norm(y), 1e-12))
    rank4 = acts[b.entry][0].ndim == 4
    w = t.reshape(*t.shape, 1, 1) if rank4 else t.T
    out.graph.initializer.extend(
        [
            numpy_helper.from_array(w.astype(np.float32), f"{name}/T"),
            numpy_helper.from_array(bias.astype(np.float32), f"{name}/b"),
        ]
    )
    if rank4:
        conv = helper.make_node(
            "Conv", [b.entry, f"{name}/T", f"{name}/b"], [b.exit], name=f"{name}/conv", kernel_shape=[1, 1]
        )
        new = [conv]
    else:
        new = [
            helper.make_node("MatMul", [b.entry, f"{name}/T"], [f"{name}/mm"], name=f"{name}/matmul"),
            helper.make_node("Add", [f"{name}/mm", f"{name}/b"], [b.exit], name=f"{name}/add"),
        ]
    note = f"{len(b.nodes)} nodes, cosine distance {b.score:.3f}, fit residual {residual:.3f}"
    layer = LayerReport(
        f"{b.entry} -> {b.exit}", "block", None, 0, w.nbytes + bias.astype(np.float32).nbytes, note=note
    )
    return new, layer


def run(model: onnx.ModelProto, cfg: DepthConfig) -> tuple[onnx.ModelProto, PassReport]:
    from edgekit.passes.channel_graph import batch_one, observed_shapes
    from edgekit.passes.structured import prepare

    if cfg.blocks < 1:
        raise EdgekitError(
            f"--depth {cfg.blocks} must be >= 1", "give the number of residual blocks to replace, e.g. --depth 2"
        )
    if not cfg.calibration:
        raise EdgekitError(
            "--depth needs calibration inputs to fit the replacement maps",
            "pass --calib data.npz (or 'digits', 'random')",
        )
    model = prepare(model)
    fixed = batch_one(model)
    shapes = observed_shapes(fixed, onnx.shape_inference.infer_shapes(fixed))
    blocks = find_blocks(model, shapes)
    if len(blocks) < cfg.blocks:
        raise EdgekitError(
            f"--depth {cfg.blocks}: the model has {len(blocks)} replaceable residual block(s)",
            "depth pruning replaces blocks with an identity shortcut (Add(x, f(x)) of the same shape)",
        )
    acts = _activations(model, sorted({b.entry for b in blocks} | {b.exit for b in blocks}), cfg.calibration)
    for b in blocks:
        x, y = _rows(acts[b.entry]), _rows(acts[b.exit])
        cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
        b.score = float(np.mean(1.0 - cos))
    chosen = sorted(blocks, key=lambda b: b.score)[: cfg.blocks]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    report = PassReport("depth", model.ByteSize(), 0, extra={"mode": f"depth: {cfg.blocks} block(s) linearized"})
    removed: set[int] = set()
    inserted: dict[int, list[onnx.NodeProto]] = {}
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    for k, b in enumerate(chosen):
        inserted[max(b.nodes)], layer = _linear_map(out, b, f"depth/{k}", acts, cfg.ridge)
        layer.weight_bytes_before = sum(inits[i].nbytes for m in b.nodes for i in nodes[m].input if i in inits)
        report.layers.append(layer)
        removed |= set(b.nodes)
    kept = []
    for i, n in enumerate(nodes):
        if i in inserted:
            kept.extend(inserted[i])
        elif i not in removed:
            kept.append(n)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    live = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(live)
    del out.graph.value_info[:]
    onnx.checker.check_model(out)
    report.extra["candidates"] = [
        {"entry": b.entry, "exit": b.exit, "cosine_distance": b.score} for b in sorted(blocks, key=lambda b: b.score)
    ]
    record_pass(out, f"depth{cfg.blocks}")
    report.size_after = out.ByteSize()
    return out, report


def _configure(ctx: MethodContext) -> DepthConfig:
    return DepthConfig(blocks=ctx.opts.depth, calibration=ctx.calibration(min(ctx.opts.calib_samples, 64)))


METHOD = CompressionMethod("depth", wanted=lambda opts: opts.depth is not None, configure=_configure, run=run)
