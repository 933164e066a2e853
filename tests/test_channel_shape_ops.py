"""passes/channel_shape_ops.py: the handlers for ops that move, reshape or read the channel axis: where the channel
axis ends up, which uses of it block pruning, and the Reshape edit into a Gemm's features."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper
from tiny_onnx import Graph, prune_channels, run

from edgekit.passes.channels import build_channel_graph

X = np.random.default_rng(2).standard_normal((1, 4, 6, 6)).astype(np.float32)


def _analysed(build) -> tuple:
    """`build(g, conv)` adds nodes after a 4 -> 8 channel conv and returns the graph's outputs."""
    g = Graph()
    outputs = build(g, g.conv("x", 4, 8, "conv"))
    graph = build_channel_graph(g.model(*outputs))
    return graph, next(p.ids for p in graph.producers if p.node.name == "conv")


def test_transpose_to_channels_last_feeds_a_matmul_on_the_last_axis():
    def build(g, conv):
        g.const("w", np.ones((8, 3)))
        return [g.op("MatMul", [g.op("Transpose", [conv], "nhwc", perm=[0, 2, 3, 1]), "w"], "fc")]

    graph, ids = _analysed(build)
    assert graph.layouts["nhwc"].axis == 3
    assert [(c.node.name, c.in_axis) for c in graph.consumers] == [("fc", 0)]
    pruned = prune_channels(graph, [ids[2]])
    assert run(pruned, X)[0].shape == (1, 6, 6, 3)


@pytest.mark.parametrize(("axes", "keepdims", "axis"), [([2, 3], 0, 1), ([2, 3], 1, 1), ([0], 0, 0)])
def test_reduce_over_other_axes_moves_the_channel_axis(axes: list[int], keepdims: int, axis: int):
    graph, _ = _analysed(lambda g, conv: [g.op("ReduceMean", [conv], "mean", axes=axes, keepdims=keepdims)])
    assert graph.layouts["mean"].axis == axis and "mean" not in graph.blocked


def test_squeeze_and_unsqueeze_follow_the_channel_axis():
    def build(g, conv):
        g.const("hw", [2, 3])
        g.const("front", [0])
        pooled = g.op("GlobalAveragePool", [conv], "gap")
        return [g.op("Unsqueeze", [g.op("Squeeze", [pooled, "hw"], "sq"), "front"], "unsq")]

    graph, _ = _analysed(build)
    assert (graph.layouts["sq"].axis, graph.layouts["unsq"].axis) == (1, 2)  # (1, 8) -> (1, 1, 8)


@pytest.mark.parametrize(
    ("op", "attrs", "reason"),
    [
        ("ReduceMax", {"axes": [1]}, "reduces over the channels"),
        ("Softmax", {"axis": 1}, "normalizes over the channels"),
        ("LayerNormalization", {"axis": 1}, "normalizes over the channels"),
    ],
)
def test_ops_that_read_across_the_channels_block(op: str, attrs: dict, reason: str):
    def build(g, conv):
        if op == "LayerNormalization":  # its scale spans every normalized axis
            return [g.op(op, [conv, g.const("ln.scale", np.ones((8, 6, 6)))], "norm", **attrs)]
        return [g.op(op, [conv], "norm", **attrs)]

    graph, _ = _analysed(build)
    assert graph.blocked == {"norm": f"norm ({op}): {reason}"}


def test_softmax_and_layer_norm_over_the_last_axis_keep_the_channels():
    def build(g, conv):
        norm = g.op("LayerNormalization", [conv, g.const("ln.scale", np.ones(6))], "norm", axis=-1)
        return [g.op("Softmax", [norm], "soft", axis=-1)]

    graph, ids = _analysed(build)
    assert graph.blocked == {}
    np.testing.assert_array_equal(graph.layouts["soft"].ids, ids)


def test_pad_blocks_only_when_it_pads_the_channels():
    def build(g, conv):
        spatial, channels = g.const("spatial", [0, 0, 1, 1, 0, 0, 1, 1]), g.const("channels", [0, 1, 0, 0, 0, 0, 0, 0])
        return [g.op("Pad", [conv, spatial], "pad_hw"), g.op("Pad", [conv, channels], "pad_c")]

    graph, ids = _analysed(build)
    np.testing.assert_array_equal(graph.layouts["pad_hw"].ids, ids)
    assert graph.blocked == {"pad_c": "pad_c (Pad): pads the channels"}


def test_shape_blocks_only_when_its_channel_entry_is_used():
    def build(g, conv):
        g.const("h_index", 2)
        g.const("c_index", 1)
        shape = g.op("Shape", [conv], "shape")
        return [g.op("Gather", [shape, "h_index"], "h", axis=0), g.op("Gather", [shape, "c_index"], "c", axis=0)]

    graph, _ = _analysed(build)
    assert graph.blocked == {"shape": "shape (Shape): its channel count is read by c (Gather)"}
    only_h = Graph()
    only_h.const("h_index", 2)
    shape = only_h.op("Shape", [only_h.conv("x", 4, 8, "conv")], "shape")
    only_h.op("Gather", [shape, "h_index"], "h", axis=0)
    assert build_channel_graph(only_h.model("h", "conv")).blocked == {}  # YOLO-style grids read H and W only


@pytest.mark.parametrize("op", ["Flatten", "Reshape"])
def test_flatten_into_a_gemm_repeats_each_channel_per_position_and_prunes_the_features(op: str):
    def build(g, conv):
        pooled = g.op("MaxPool", [conv], "pool", kernel_shape=[3, 3], strides=[3, 3])  # (1, 8, 2, 2)
        if op == "Flatten":
            flat = g.op("Flatten", [pooled], "flat")
        else:
            flat = g.op("Reshape", [pooled, g.const("target", [1, 32])], "flat")  # an explicit count, rewritten
        g.const("w", np.ones((32, 5)))
        return [g.op("Gemm", [flat, "w"], "fc")]

    graph, ids = _analysed(build)
    np.testing.assert_array_equal(graph.layouts["flat"].ids, np.repeat(ids, 4))
    pruned = prune_channels(graph, [ids[0], ids[7]])
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert inits["w"].shape == (24, 5)
    if op == "Reshape":
        assert inits["target"].tolist() == [1, 24]
    assert run(pruned, X)[0].shape == (1, 5)


def test_a_reshape_that_splits_the_channel_axis_blocks():
    graph, _ = _analysed(lambda g, conv: [g.op("Reshape", [conv, g.const("target", [1, 2, 4, 36])], "groups")])
    assert graph.blocked == {"groups": "groups (Reshape): splits or merges the channel axis"}
