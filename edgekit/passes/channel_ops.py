"""Channel handlers for weight layers, elementwise ops, Concat, Split and Slice (see channel_graph.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.passes.channel_graph import (
    PER_CHANNEL_PARAMS,
    Analysis,
    Consumer,
    Edit,
    Kept,
    Layout,
    ModelEdit,
    Producer,
    attr,
)


def pass_through(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts.get(node.input[0])
    if layout is None:
        return
    if any(name in a.g.layouts for name in node.input[1:]):
        return a.block(node, "a second channel input")
    for out in node.output:  # MaxPool's Indices too: what consumes them (MaxUnpool) is then tied to these channels
        if out:
            a.g.layouts[out] = layout


def max_unpool(a: Analysis, node: onnx.NodeProto) -> None:
    """MaxUnpool(values, indices): both carry the channels of their MaxPool's input (the indices are recomputed for
    the pruned tensor at run time), so they are tied as an elementwise op's inputs are; an explicit output_shape
    input would fix the channel count."""
    if len(node.input) > 2 and node.input[2]:
        return a.block(node, "an output_shape input")
    elementwise(a, node)


def per_channel(a: Analysis, node: onnx.NodeProto) -> None:
    """BatchNormalization / InstanceNormalization: per-channel constants, sliced with the channels."""
    layout = a.g.layouts.get(node.input[0])
    indices = PER_CHANNEL_PARAMS[node.op_type]
    if layout is None:
        return
    if layout.axis != 1 or any(node.input[i] not in a.inits for i in indices if i < len(node.input)):
        return a.block(node, "parameters are not constants on axis 1")
    a.g.layouts[node.output[0]] = layout
    ids = layout.ids

    def edit(kept: Kept, m: ModelEdit) -> None:
        keep = kept(ids)
        for i in indices:
            if i < len(node.input):
                m.set_input(node.name, i, m.array(node.name, i)[keep])

    a.g.edits.append(Edit(node.name, edit))


def _weight(a: Analysis, node: onnx.NodeProto) -> np.ndarray | None:
    return a.const(node.input[1]) if len(node.input) > 1 and node.input[1] in a.inits else None


def conv(a: Analysis, node: onnx.NodeProto) -> None:
    w = _weight(a, node)
    layout = a.g.layouts.get(node.input[0])
    if w is None:
        return a.block(node, "its weight is not a constant")
    group = int(attr(node, "group", 1))
    bias = len(node.input) > 2 and bool(node.input[2])
    if layout is not None and layout.axis != 1:
        a.block(node, "input channels are not on axis 1")
        layout = None
    if group == 1:
        if layout is not None:
            _consume(a, node, w, 1, layout)
        return _produce(a, node, w, 0, bias)
    if group == w.shape[0] and w.shape[1] == 1 and layout is not None and len(layout.ids) == group:
        # depthwise: channel c in -> channel c out, so the output carries the input's ids
        a.g.layouts[node.output[0]] = layout
        ids = layout.ids

        def edit(kept: Kept, m: ModelEdit) -> None:
            keep = kept(ids)
            m.set_input(node.name, 1, m.array(node.name, 1)[keep])
            if bias:
                m.set_input(node.name, 2, m.array(node.name, 2)[keep])
            m.set_attr(node.name, "group", int(len(keep)))

        a.g.edits.append(Edit(node.name, edit))
        return
    # grouped (or depthwise over channels the analysis does not follow): input and output stay as they are
    a.block(node, f"grouped convolution (group={group})")
    _produce(a, node, w, 0, bias)
    a.g.freeze(node.output[0], f"{node.name} (Conv): grouped convolution (group={group})", node.name)


def conv_transpose(a: Analysis, node: onnx.NodeProto) -> None:
    w = _weight(a, node)
    layout = a.g.layouts.get(node.input[0])
    if w is None or int(attr(node, "group", 1)) != 1:
        return a.block(node, "grouped or non-constant weight")
    if layout is not None and layout.axis == 1:
        _consume(a, node, w, 0, layout)
    elif layout is not None:
        a.block(node, "input channels are not on axis 1")
    _produce(a, node, w, 1, len(node.input) > 2 and bool(node.input[2]))


def gemm(a: Analysis, node: onnx.NodeProto) -> None:
    w = _weight(a, node)
    layout = a.g.layouts.get(node.input[0])
    if w is None or attr(node, "transA", 0) or w.ndim != 2:
        return a.block(node, "transposed input or non-constant weight")
    trans_b = bool(attr(node, "transB", 0))
    if layout is not None and layout.axis == 1:
        _consume(a, node, w, 1 if trans_b else 0, layout)
    elif layout is not None:
        a.block(node, "input features are not on axis 1")
    outputs = w.shape[0 if trans_b else 1]
    bias = a.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sliced_bias = bias is not None and bias.size > 1
    _produce(a, node, w, 0 if trans_b else 1, sliced_bias)
    if (len(node.input) > 2 and node.input[2] and bias is None) or (
        sliced_bias and (bias.ndim != 1 or bias.shape[0] != outputs)
    ):
        a.g.freeze(node.output[0], f"{node.name} (Gemm): its bias is not a per-output constant", node.name)


def matmul(a: Analysis, node: onnx.NodeProto) -> None:
    w = a.const(node.input[1]) if node.input[1] in a.inits else None
    layout = a.g.layouts.get(node.input[0])
    rank = a.rank(node.input[0])
    if w is None or w.ndim != 2 or rank is None:
        return a.block(node, "a MatMul of two activations")
    if layout is not None and layout.axis == rank - 1:
        _consume(a, node, w, 0, layout)
    elif layout is not None:
        a.block(node, "input features are not on the last axis")
    _produce(a, node, w, 1, False, tensor_axis=rank - 1)


def _consume(a: Analysis, node: onnx.NodeProto, w: np.ndarray, in_axis: int, layout: Layout) -> None:
    if w.shape[in_axis] != len(layout.ids):
        return a.block(node, f"weight has {w.shape[in_axis]} input channels, the tensor {len(layout.ids)}")
    ids = layout.ids
    a.g.consumers.append(Consumer(node, w, in_axis, node.input[0], ids))
    a.g.edits.append(
        Edit(
            node.name,
            lambda kept, m: m.set_input(node.name, 1, np.take(m.array(node.name, 1), kept(ids), axis=in_axis)),
        )
    )


def _produce(a: Analysis, node: onnx.NodeProto, w: np.ndarray, out_axis: int, bias: bool, tensor_axis: int = 1) -> None:
    """New channel ids for the layer's outputs; pruning slices its weight on `out_axis` (and the bias)."""
    ids = a.g.new_ids(w.shape[out_axis], node.name)
    a.g.producers.append(Producer(node, w, out_axis, ids))
    a.g.layouts[node.output[0]] = Layout(tensor_axis, ids)

    def edit(kept: Kept, m: ModelEdit) -> None:
        keep = kept(ids)
        m.set_input(node.name, 1, np.take(m.array(node.name, 1), keep, axis=out_axis))
        if bias:
            m.set_input(node.name, 2, m.array(node.name, 2)[keep])

    a.g.edits.append(Edit(node.name, edit))


def elementwise(a: Analysis, node: onnx.NodeProto) -> None:
    """Broadcasting ops: tracked inputs are unioned position by position; constants are sliced with the channels."""
    out_rank = a.rank(node.output[0])
    if out_rank is None:
        return a.block(node, "unknown output rank")
    tracked: list[tuple[int, Layout]] = []
    consts: list[int] = []
    for i, name in enumerate(node.input):
        rank = a.rank(name)
        if name in a.g.layouts:
            layout = a.g.layouts[name]
            tracked.append((i, Layout(layout.axis + out_rank - (rank or out_rank), layout.ids)))
        elif name in a.inits:
            consts.append(i)
        elif rank is None:
            return a.block(node, f"unknown shape of input '{name}'")
        else:
            consts.append(-1 - i)  # an activation without channels: must broadcast over them (checked below)
    axis, ids = tracked[0][1].axis, tracked[0][1].ids
    for _, layout in tracked[1:]:
        if layout.axis != axis or len(layout.ids) != len(ids):
            return a.block(node, "inputs disagree on the channel axis")
    to_slice = []
    for c in consts:
        name = node.input[c] if c >= 0 else node.input[-1 - c]
        dims = a.dims(name) or ()
        local = axis - (out_rank - len(dims))
        size = dims[local] if 0 <= local < len(dims) else 1
        if size == 1:
            continue
        if c < 0 or size != len(ids):
            return a.block(node, f"input '{name}' has {size} channels the analysis cannot follow")
        to_slice.append((c, local))
    for _, layout in tracked[1:]:
        a.g.union(ids, layout.ids)
    a.g.layouts[node.output[0]] = Layout(axis, ids)
    if to_slice:

        def edit(kept: Kept, m: ModelEdit) -> None:
            for index, local in to_slice:
                m.set_input(node.name, index, np.take(m.array(node.name, index), kept(ids), axis=local))

        a.g.edits.append(Edit(node.name, edit))


def concat(a: Analysis, node: onnx.NodeProto) -> None:
    rank = a.rank(node.output[0])
    if rank is None:
        return a.block(node, "unknown output rank")
    axis = int(attr(node, "axis")) % rank
    layouts = [a.g.layouts.get(n) for n in node.input]
    tracked = [l for l in layouts if l is not None]
    channel_axis = tracked[0].axis
    if any(l.axis != channel_axis for l in tracked):
        return a.block(node, "inputs disagree on the channel axis")
    if axis != channel_axis:
        if any(l is None for l in layouts) or any(len(l.ids) != len(tracked[0].ids) for l in tracked):
            return a.block(node, "concatenates tracked and untracked channels")
        for l in tracked[1:]:
            a.g.union(tracked[0].ids, l.ids)
        a.g.layouts[node.output[0]] = tracked[0]
        return
    pieces = []
    for name, layout in zip(node.input, layouts):
        if layout is None:  # an input the analysis does not follow keeps all its channels
            size = (a.dims(name) or [None] * rank)[axis]
            if not isinstance(size, int):
                return a.block(node, f"unknown channel count of input '{name}'")
            layout = Layout(axis, a.g.new_ids(size, node.name))
            for i in layout.ids.tolist():
                a.g.frozen[i] = f"{node.name} (Concat): concatenated with channels from '{name}'"
        pieces.append(layout.ids)
    a.g.layouts[node.output[0]] = Layout(axis, np.concatenate(pieces))


def split(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    axis = int(attr(node, "axis", 0)) % rank
    if axis != layout.axis:
        for out in node.output:
            a.g.layouts[out] = layout
        return
    sizes = attr(node, "split")
    from_input = sizes is None and len(node.input) > 1 and bool(node.input[1])
    if from_input:
        sizes = a.const(node.input[1])
        if sizes is None:
            return a.block(node, "split sizes are not constant")
    if sizes is None:
        count = len(node.output)
        if len(layout.ids) % count:
            return a.block(node, "uneven split")
        sizes = [len(layout.ids) // count] * count
    bounds = np.cumsum([0] + [int(s) for s in sizes])
    pieces = [layout.ids[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]
    for out, ids in zip(node.output, pieces):
        a.g.layouts[out] = Layout(axis, ids)

    def edit(kept: Kept, m: ModelEdit) -> None:
        new = np.array([len(kept(ids)) for ids in pieces], dtype=np.int64)
        if from_input:
            m.set_input(node.name, 1, new)
        elif m.model.opset_import and _opset(m.model) >= 13:
            # explicit sizes as an input (opset 13+); an equal split may no longer be equal
            name = f"{node.name}.pruned.split"
            m.model.graph.initializer.append(numpy_helper.from_array(new, name))
            n = m.nodes[node.name]
            if len(n.input) == 1:
                n.input.append(name)
            else:
                n.input[1] = name
            for at in list(n.attribute):
                if at.name in ("split", "num_outputs"):
                    n.attribute.remove(at)
        else:
            m.set_attr(node.name, "split", [int(v) for v in new])

    a.g.edits.append(Edit(node.name, edit))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def slice_(a: Analysis, node: onnx.NodeProto) -> None:
    layout = a.g.layouts[node.input[0]]
    rank = a.rank(node.input[0])
    if len(node.input) == 1:  # opset < 10: attributes
        starts, ends, axes, steps = attr(node, "starts"), attr(node, "ends"), attr(node, "axes"), None
    else:
        starts, ends = a.const(node.input[1]), a.const(node.input[2])
        axes = a.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        steps = a.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if (
            starts is None
            or ends is None
            or (len(node.input) > 3 and node.input[3] and axes is None)
            or (len(node.input) > 4 and node.input[4] and steps is None)
        ):
            return a.block(node, "non-constant slice bounds")
    axes = list(range(len(starts))) if axes is None else [int(x) % rank for x in axes]
    if layout.axis not in axes:
        a.g.layouts[node.output[0]] = layout
        return
    k = axes.index(layout.axis)
    if steps is not None and int(steps[k]) != 1 or len(node.input) == 1:
        return a.block(node, "a strided or attribute slice of the channels")
    count = len(layout.ids)
    start, stop, _ = slice(int(starts[k]), int(ends[k])).indices(count)
    ids = layout.ids
    a.g.layouts[node.output[0]] = Layout(layout.axis, ids[start:stop])

    def edit(kept: Kept, m: ModelEdit) -> None:
        keep = kept(ids)
        new_start, new_stop = int(np.sum(keep < start)), int(np.sum(keep < stop))
        for index, value in ((1, new_start), (2, new_stop)):
            arr = m.array(node.name, index).copy()
            arr[k] = value
            m.set_input(node.name, index, arr)

    a.g.edits.append(Edit(node.name, edit))
