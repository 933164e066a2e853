"""passes/channel_graph.py: the union-find over atomic channel ids, freezing, the copy-on-write ModelEdit, the small
readers (attr, axis_list, batch_one) and the walk's own blocking rules."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tiny_onnx import Graph

from edgekit.passes.channel_graph import Analysis, ChannelGraph, Layout, ModelEdit, attr, axis_list, batch_one
from edgekit.passes.channels import build_channel_graph, handler_for


def test_union_find_classes_and_roots():
    g = ChannelGraph(onnx.ModelProto())
    a, b = g.new_ids(3, "conv_a"), g.new_ids(3, "conv_b")
    np.testing.assert_array_equal(b, [3, 4, 5])
    assert g.owner == ["conv_a"] * 3 + ["conv_b"] * 3
    g.union(a, b)  # position by position: 0~3, 1~4, 2~5
    np.testing.assert_array_equal(g.roots(a), g.roots(b))
    assert len(set(g.roots(a).tolist())) == 3
    c = g.new_ids(3, "conv_c")
    g.union(b, c)  # transitive: a's class now holds c's channel too
    np.testing.assert_array_equal(g.roots(a), g.roots(c))


def test_freeze_marks_the_class_with_the_first_reason():
    g = ChannelGraph(onnx.ModelProto())
    a, b = g.new_ids(2, "a"), g.new_ids(2, "b")
    g.layouts["t"] = Layout(1, b)
    g.freeze("t", "first", node="n")
    g.freeze("t", "second", node="n")  # setdefault: the first reason stays
    g.freeze("untracked", "ignored")  # a tensor without a layout freezes nothing
    assert g.blocked == {"n": "first"} and set(g.frozen) == {2, 3}
    g.union(a, b)
    assert g.frozen_roots() == {g.find(0): "first", g.find(1): "first"}  # the class, through its root


def _two_readers() -> onnx.ModelProto:
    """Two Mul nodes read one initializer `s`."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["a"], name="m1"),
        helper.make_node("Mul", ["a", "s"], ["y"], name="m2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32), "s")],
    )
    return helper.make_model(graph)


def test_model_edit_copies_a_shared_constant_instead_of_editing_it_for_both_readers():
    model = _two_readers()
    edit = ModelEdit(model)
    edit.set_input("m1", 1, np.array([7, 8], np.int64))  # dtype follows the old initializer (float32)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert model.graph.node[0].input[1] == "s.pruned.m1.1" and model.graph.node[1].input[1] == "s"
    assert inits["s.pruned.m1.1"].dtype == np.float32 and inits["s.pruned.m1.1"].tolist() == [7, 8]
    assert inits["s"].tolist() == [0, 1, 2, 3]
    edit.set_input("m2", 1, np.array([5.0], np.float32))  # now the only reader: edited in place
    assert model.graph.node[1].input[1] == "s" and numpy_helper.to_array(edit.inits["s"]).tolist() == [5.0]
    edit.set_attr("m1", "group", 2)
    edit.set_attr("m1", "group", 3)  # replaced, not duplicated
    assert [a.name for a in model.graph.node[0].attribute] == ["group"] and attr(model.graph.node[0], "group") == 3


def test_batch_one_fixes_symbolic_dims_on_a_copy():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 8])
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [x],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
    )
    fixed = batch_one(model)
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 1, 8]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_axis_list_reads_the_attribute_or_a_constant_input():
    g = Graph()
    g.const("axes", [2, 3])
    # one graph holds both forms (the reader does not look at the opset)
    g.op("ReduceMean", ["x"], "old", axes=[-1])  # opset < 18: an attribute
    g.op("ReduceMean", ["x", "axes"], "new")  # opset 18: a constant input
    g.op("Shape", ["x"], "dyn")
    g.op("ReduceMean", ["x", "dyn"], "computed")  # not a constant: unknown
    a = Analysis(g.model("old", "new", "computed"))
    nodes = {n.name: n for n in a.g.model.graph.node}
    assert axis_list(a, nodes["old"], 1) == [-1]
    assert axis_list(a, nodes["new"], 1) == [2, 3]
    assert axis_list(a, nodes["computed"], 1) is None
    assert axis_list(a, nodes["dyn"], 1) is None  # neither attribute nor input: None, the caller's default


def test_channels_on_a_secondary_input_block_the_node():
    g = Graph()
    stem = g.conv("x", 4, 4, "stem")
    g.const("data", np.ones((1, 4, 6, 6)))
    g.op("Expand", ["data", stem], "expand")  # Expand's second input is a shape: no handler follows it there
    g.op("Relu", ["data"], "relu")  # untracked inputs only: skipped, neither followed nor blocked
    graph = Analysis(g.model("expand", "relu")).run(handler_for)
    assert graph.blocked == {"expand": "expand (Expand): not channel-aware"}
    g2 = Graph()
    stem = g2.conv("x", 4, 4, "stem")
    g2.const("base", np.ones((1, 4, 6, 6)))
    # Pad follows its first input only: tracked channels on input 1 block it (not a valid Pad: the walk reads layouts)
    g2.op("Pad", ["base", stem], "pad")
    graph = build_channel_graph(g2.model("pad"))
    assert graph.blocked == {"pad": "pad (Pad): channels arrive on a secondary input"}
