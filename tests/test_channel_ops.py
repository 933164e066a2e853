"""passes/channel_ops.py: the handlers for weight layers, elementwise ops, Concat, Split and Slice: the layout each
gives its output, the classes it ties, what it blocks, and that its edits leave a model onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from tiny_onnx import Graph, prune_channels, run

from edgekit.passes.channel_graph import attr
from edgekit.passes.channels import build_channel_graph

X = np.random.default_rng(1).standard_normal((1, 4, 6, 6)).astype(np.float32)


def _ids(graph, name: str) -> np.ndarray:
    return next(p.ids for p in graph.producers if p.node.name == name)


def _init(model: onnx.ModelProto, node: str, index: int) -> np.ndarray:
    inits = {t.name: t for t in model.graph.initializer}
    return numpy_helper.to_array(inits[next(n for n in model.graph.node if n.name == node).input[index]])


def test_depthwise_conv_carries_its_producers_channels_and_shrinks_its_group():
    g = Graph()
    dw = g.conv(g.conv("x", 4, 8, "expand"), 8, 8, "dw", group=8, k=3)
    g.conv(dw, 8, 3, "head")
    graph = build_channel_graph(g.model("head"))
    np.testing.assert_array_equal(graph.layouts["dw"].ids, _ids(graph, "expand"))
    assert "dw" not in {p.node.name for p in graph.producers}  # no channels of its own
    pruned = prune_channels(graph, [0, 5])
    dw_node = next(n for n in pruned.graph.node if n.name == "dw")
    assert attr(dw_node, "group") == 6 and _init(pruned, "dw", 1).shape == (6, 1, 3, 3)
    assert _init(pruned, "head", 1).shape == (3, 6, 1, 1)
    assert run(pruned, X)[0].shape == (1, 3, 6, 6)


def test_grouped_conv_blocks_and_freezes_both_sides():
    g = Graph()
    grouped = g.conv(g.conv("x", 4, 8, "a"), 8, 8, "grouped", group=2)
    g.conv(grouped, 8, 3, "head")
    graph = build_channel_graph(g.model("head"))
    assert graph.blocked["grouped"] == "grouped (Conv): grouped convolution (group=2)"
    frozen = graph.frozen_roots()
    for name in ("a", "grouped"):  # its input (whose channels group splits) and its own output channels
        assert set(graph.roots(_ids(graph, name)).tolist()) <= set(frozen), name


def test_gemm_with_transposed_weight_reads_and_writes_axis_zero_rows():
    g = Graph(shape=(2, 5))
    g.const("w1", np.ones((6, 5)))
    g.const("w2", np.ones((3, 6)))
    g.op("Gemm", ["x", "w1"], "fc1", transB=1)
    g.op("Gemm", ["fc1", "w2"], "fc2", transB=1)
    graph = build_channel_graph(g.model("fc2"))
    assert {p.node.name: p.out_axis for p in graph.producers} == {"fc1": 0, "fc2": 0}
    assert [(c.node.name, c.in_axis) for c in graph.consumers] == [("fc2", 1)]
    pruned = prune_channels(graph, [1, 2])
    assert _init(pruned, "fc1", 1).shape == (4, 5) and _init(pruned, "fc2", 1).shape == (3, 4)
    assert run(pruned, np.ones((2, 5), np.float32))[0].shape == (2, 3)


def test_per_channel_constants_are_sliced_with_the_channels():
    g = Graph()
    conv = g.conv("x", 4, 6, "conv")
    bn_params = (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))
    params = [g.const(f"bn.{p}", np.full(6, v)) for p, v in bn_params]
    bn = g.op("BatchNormalization", [conv, *params], "bn")
    scale = g.const("scale", np.arange(6.0).reshape(1, 6, 1, 1))  # elementwise by a per-channel constant
    g.conv(g.op("Mul", [bn, scale], "mul"), 6, 2, "head")
    graph = build_channel_graph(g.model("head"))
    pruned = prune_channels(graph, [0, 3])
    for i in (1, 2, 3, 4):
        assert _init(pruned, "bn", i).shape == (4,)
    np.testing.assert_array_equal(_init(pruned, "mul", 1).ravel(), [1, 2, 4, 5])
    assert run(pruned, X)[0].shape == (1, 2, 6, 6)


def test_elementwise_with_an_untracked_activation_of_channel_width_blocks():
    g = Graph()
    conv = g.conv("x", 4, 4, "conv")
    g.op("Add", [conv, "x"], "add")  # x has 4 channels the analysis does not follow: pruning conv would break it
    graph = build_channel_graph(g.model("add"))
    assert graph.blocked == {"add": "add (Add): input 'x' has 4 channels the analysis cannot follow"}


def test_concat_on_the_channel_axis_concatenates_ids_and_freezes_untracked_inputs():
    g = Graph()
    a, b = g.conv("x", 4, 3, "a"), g.conv("x", 4, 5, "b")
    g.conv(g.op("Concat", [a, b], "cat", axis=1), 8, 2, "head")
    g.conv(g.op("Concat", [a, "x"], "cat_x", axis=1), 7, 2, "head_x")
    graph = build_channel_graph(g.model("head", "head_x"))
    np.testing.assert_array_equal(graph.layouts["cat"].ids, np.concatenate([_ids(graph, "a"), _ids(graph, "b")]))
    fresh = graph.layouts["cat_x"].ids[3:]  # x's 4 channels: new ids owned by the Concat, frozen
    assert [graph.owner[i] for i in fresh] == ["cat_x"] * 4
    assert all("concatenated with channels from 'x'" in graph.frozen[i] for i in fresh.tolist())
    pruned = prune_channels(graph, [_ids(graph, "a")[0], _ids(graph, "b")[4]])
    assert _init(pruned, "head", 1).shape == (2, 6, 1, 1) and _init(pruned, "head_x", 1).shape == (2, 6, 1, 1)
    assert [o.shape for o in run(pruned, X)] == [(1, 2, 6, 6), (1, 2, 6, 6)]


def test_an_equal_split_gets_explicit_sizes_when_its_halves_shrink_unequally():
    g = Graph()
    g.op("Split", [g.conv("x", 4, 8, "conv")], "split", outputs=2, axis=1)
    g.conv("split", 4, 2, "left")
    g.conv("split:1", 4, 2, "right")
    graph = build_channel_graph(g.model("left", "right"))
    ids = _ids(graph, "conv")
    np.testing.assert_array_equal(graph.layouts["split"].ids, ids[:4])
    np.testing.assert_array_equal(graph.layouts["split:1"].ids, ids[4:])
    pruned = prune_channels(graph, [ids[0], ids[1], ids[5]])  # 2 of the left half, 1 of the right
    np.testing.assert_array_equal(_init(pruned, "split", 1), [2, 3])  # opset 13+: the sizes as an input
    assert _init(pruned, "left", 1).shape == (2, 2, 1, 1) and _init(pruned, "right", 1).shape == (2, 3, 1, 1)
    assert [o.shape for o in run(pruned, X)] == [(1, 2, 6, 6), (1, 2, 6, 6)]


def test_a_channel_slice_keeps_its_ids_and_moves_its_bounds():
    g = Graph()
    conv = g.conv("x", 4, 8, "conv")
    starts, ends, axes = g.const("starts", [2]), g.const("ends", [6]), g.const("axes", [1])
    g.conv(g.op("Slice", [conv, starts, ends, axes], "slice"), 4, 2, "head")
    graph = build_channel_graph(g.model("head"))
    ids = _ids(graph, "conv")
    np.testing.assert_array_equal(graph.layouts["slice"].ids, ids[2:6])
    pruned = prune_channels(graph, [ids[0], ids[3]])  # one before the slice, one inside it
    assert (_init(pruned, "slice", 1).tolist(), _init(pruned, "slice", 2).tolist()) == ([1], [4])
    assert run(pruned, X)[0].shape == (1, 2, 6, 6) and _init(pruned, "head", 1).shape == (2, 3, 1, 1)
