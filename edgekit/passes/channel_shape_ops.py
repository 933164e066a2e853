"""Channel handlers for ops that move, reshape or read the channel axis: Transpose, Squeeze/Unsqueeze, Reduce*,
Softmax, LayerNormalization, Flatten/Reshape (into a Gemm's features), Resize, Pad, Shape (see channel_graph.py)."""

from __future__ import annotations

import numpy as np
import onnx

from edgekit.passes.channel_graph import Analysis, Edit, Kept, Layout, ModelEdit, attr, axis_list


def transpose(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    perm = attr(node, "perm") or list(reversed(range(rank)))
    a.g.layouts[node.output[0]] = Layout(list(perm).index(layout.axis), layout.ids)


def _moved_axis(axis: int, removed: list[int]) -> int:
    return axis - sum(1 for r in removed if r < axis)


def squeeze(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    axes = axis_list(a, node, 1)
    if axes is None:
        return a.block(node, "squeezed axes not known")
    axes = [x % rank for x in axes]
    if layout.axis in axes:
        return a.block(node, "squeezes the channel axis")
    a.g.layouts[node.output[0]] = Layout(_moved_axis(layout.axis, axes), layout.ids)


def unsqueeze(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    out_rank = a.rank(node.output[0])
    axes = axis_list(a, node, 1)
    if axes is None or out_rank is None:
        return a.block(node, "unsqueezed axes not known")
    kept_axes = [i for i in range(out_rank) if i not in {x % out_rank for x in axes}]
    a.g.layouts[node.output[0]] = Layout(kept_axes[layout.axis], layout.ids)


def reduce(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    axes = axis_list(a, node, 1)
    axes = list(range(rank)) if axes is None and not (len(node.input) > 1 and node.input[1]) else axes
    if axes is None:
        return a.block(node, "reduced axes not known")
    axes = [x % rank for x in axes]
    if layout.axis in axes:
        return a.block(node, "reduces over the channels")
    moved = layout.axis if attr(node, "keepdims", 1) else _moved_axis(layout.axis, axes)
    a.g.layouts[node.output[0]] = Layout(moved, layout.ids)


def softmax(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    if int(attr(node, "axis", -1)) % rank == layout.axis:
        return a.block(node, "normalizes over the channels")
    a.g.layouts[node.output[0]] = layout


def layer_norm(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    if layout.axis >= int(attr(node, "axis", -1)) % rank:
        return a.block(node, "normalizes over the channels")
    a.g.layouts[node.output[0]] = layout


def flatten(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    dims = a.dims(node.input[0])
    start = int(attr(node, "axis", 1)) % len(dims)
    _to_features(a, node, layout, dims, start)


def _to_features(
    a: Analysis, node: onnx.NodeProto, layout: Layout, dims: tuple, start: int, shape_index: int | None = None
) -> None:
    """(…, C, H, W) flattened from `start` on: each channel id repeated once per spatial position."""
    if layout.axis < start:
        return a.block(node, "flattens the channels into an earlier axis")
    inner, outer = dims[layout.axis + 1 :], dims[start : layout.axis]
    if not all(isinstance(d, int) for d in inner + outer):
        return a.block(node, "unknown spatial size")
    inner_n, outer_n = int(np.prod(inner, dtype=np.int64)), int(np.prod(outer, dtype=np.int64))
    ids = layout.ids
    a.g.layouts[node.output[0]] = Layout(start, np.tile(np.repeat(ids, inner_n), outer_n))
    if shape_index is None:
        return

    def edit(kept: Kept, m: ModelEdit) -> None:
        shape = m.array(node.name, 1).copy()
        if shape[shape_index] > 0:
            shape[shape_index] = len(kept(ids)) * inner_n * outer_n
            m.set_input(node.name, 1, shape)

    a.g.edits.append(Edit(node.name, edit))


def reshape(a: Analysis, node: onnx.NodeProto) -> None:
    """Reshapes that keep the channel axis whole, or flatten it with the axes after it; others block."""
    layout = a.g.layouts[node.input[0]]
    src, dst, target = a.dims(node.input[0]), a.dims(node.output[0]), a.const(node.input[1])
    if src is None or dst is None or target is None:
        return a.block(node, "shape not known")
    c = layout.axis
    for k in range(len(dst) + 1):
        if tuple(dst[:k]) != tuple(src[:c]):
            continue
        if k < len(dst) and dst[k] == src[c] and _same_product(dst[k + 1 :], src[c + 1 :]):
            if target[k] > 0:
                a.g.edits.append(_reshape_entry_edit(node, k, layout.ids, 1))
            elif target[k] == 0 and k != c:
                break
            a.g.layouts[node.output[0]] = Layout(k, layout.ids)
            return
        if k == len(dst) - 1 and _same_product(dst[k:], src[c:]):
            return _to_features(a, node, layout, src, c, shape_index=k)
    a.block(node, "splits or merges the channel axis")


def _same_product(a_dims, b_dims) -> bool:
    if all(isinstance(d, int) for d in tuple(a_dims) + tuple(b_dims)):
        return int(np.prod(a_dims, dtype=np.int64)) == int(np.prod(b_dims, dtype=np.int64))
    return tuple(a_dims) == tuple(b_dims)


def _reshape_entry_edit(node: onnx.NodeProto, k: int, ids: np.ndarray, factor: int) -> Edit:
    def edit(kept: Kept, m: ModelEdit) -> None:
        shape = m.array(node.name, 1).copy()
        shape[k] = len(kept(ids)) * factor
        m.set_input(node.name, 1, shape)

    return Edit(node.name, edit)


def resize(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    if any(name in a.g.layouts for name in node.input[1:]):
        return a.block(node, "a second channel input")
    sizes_index = 3 if len(node.input) > 3 else None
    if sizes_index and node.input[3]:
        if a.const(node.input[3]) is None:
            return a.block(node, "non-constant sizes")
        a.g.edits.append(_sizes_edit(node, layout))
    a.g.layouts[node.output[0]] = layout


def _sizes_edit(node: onnx.NodeProto, layout: Layout) -> Edit:
    ids, axis = layout.ids, layout.axis

    def edit(kept: Kept, m: ModelEdit) -> None:
        sizes = m.array(node.name, 3).copy()
        sizes[axis] = len(kept(ids))
        m.set_input(node.name, 3, sizes)

    return Edit(node.name, edit)


def pad(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    pads = attr(node, "pads") if len(node.input) < 2 else a.const(node.input[1])
    axes = axis_list(a, node, 3) if len(node.input) > 3 and node.input[3] else list(range(rank))
    if pads is None or axes is None:
        return a.block(node, "non-constant pads")
    pads, axes = [int(p) for p in pads], [x % rank for x in axes]
    if layout.axis in axes:
        k = axes.index(layout.axis)
        if pads[k] or pads[k + len(axes)]:
            return a.block(node, "pads the channels")
    a.g.layouts[node.output[0]] = layout


def shape(a: Analysis, node: onnx.NodeProto) -> None:
    """Shape reads the channel count: fine when every use picks other dims (YOLO grids take H and W)."""
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    start, end = int(attr(node, "start", 0)), attr(node, "end")
    picked = range(rank)[slice(start, None if end is None else int(end))]
    if layout.axis not in picked:
        return
    offset = layout.axis - picked.start
    for use in a.consumers.get(node.output[0], []):
        if use.op_type == "ConstantOfShape" and len(picked) == rank:  # a constant shaped like the tensor: follows it
            a.shape_of[node.output[0]] = node.input[0]
            continue
        if use.op_type == "Gather" and int(attr(use, "axis", 0)) == 0:
            idx = a.const(use.input[1])
            if idx is not None and offset not in {int(i) % len(picked) for i in np.atleast_1d(idx)}:
                continue
        if use.op_type == "Slice" and len(use.input) >= 3:
            lo, hi = a.const(use.input[1]), a.const(use.input[2])
            if lo is not None and hi is not None and offset not in range(len(picked))[slice(int(lo[0]), int(hi[0]))]:
                continue
        return a.block(node, f"its channel count is read by {use.name} ({use.op_type})")
