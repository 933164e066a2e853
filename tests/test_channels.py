"""passes/channels.py: which handler each op gets, and build_channel_graph on a residual block (which channels a
residual Add couples, what freezes a class). The handlers themselves: test_channel_ops.py, test_channel_shape_ops.py."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from tiny_onnx import Graph

from edgekit.passes import channel_ops as ops
from edgekit.passes import channel_shape_ops as shape_ops
from edgekit.passes.channels import build_channel_graph, handler_for


@pytest.mark.parametrize(
    ("op", "handler", "any_input"),
    [
        ("Conv", ops.conv, True),
        ("Gemm", ops.gemm, True),
        ("BatchNormalization", ops.per_channel, False),
        ("Relu", ops.pass_through, False),  # UNARY_PASS
        ("MaxPool", ops.pass_through, False),
        ("Add", ops.elementwise, True),  # ELEMENTWISE: channels may arrive on the second input
        ("Where", ops.elementwise, True),
        ("Concat", ops.concat, True),
        ("Split", ops.split, False),
        ("Transpose", shape_ops.transpose, False),
        ("ReduceMean", shape_ops.reduce, False),  # REDUCE
        ("LogSoftmax", shape_ops.softmax, False),  # SOFTMAX
        ("LRN", None, False),  # mixes neighbouring channels: no handler, so the analysis blocks there
        ("NonMaxSuppression", None, False),
    ],
)
def test_handler_table(op: str, handler, any_input: bool):
    assert handler_for(helper.make_node(op, ["a", "b"], ["c"])) == (handler, any_input)


def _residual() -> Graph:
    """stem -> relu -> branch conv; Add(stem, branch) -> head (the model's output)."""
    g = Graph()
    stem = g.conv("x", 4, 8, "stem")
    relu = g.op("Relu", [stem], "relu")
    branch = g.conv(relu, 8, 8, "branch", k=3)
    add = g.op("Add", [stem, branch], "add")
    g.conv(add, 8, 2, "head")
    return g


def test_residual_add_couples_the_shortcut_and_the_branch_position_by_position():
    model = _residual().model("head")
    before = model.SerializeToString()
    graph = build_channel_graph(model)
    assert model.SerializeToString() == before  # the analysis reads the model, never edits it
    ids = {p.node.name: p.ids for p in graph.producers}
    assert [len(ids[n]) for n in ("stem", "branch", "head")] == [8, 8, 2]
    # channel c of stem and channel c of branch are one class; different positions stay independent
    np.testing.assert_array_equal(graph.roots(ids["stem"]), graph.roots(ids["branch"]))
    assert len(set(graph.roots(ids["stem"]).tolist())) == 8
    assert set(graph.roots(ids["stem"]).tolist()).isdisjoint(graph.roots(ids["head"]).tolist())
    np.testing.assert_array_equal(graph.layouts["add"].ids, ids["stem"])
    # branch and head read tracked channels: their input weights are sliced with them
    assert {c.node.name: c.in_axis for c in graph.consumers} == {"branch": 1, "head": 1}


def test_the_output_layer_is_frozen_and_the_residual_class_is_not():
    graph = build_channel_graph(_residual().model("head"))
    frozen = graph.frozen_roots()
    ids = {p.node.name: p.ids for p in graph.producers}
    assert all("reaches the model output 'head'" in frozen[r] for r in graph.roots(ids["head"]).tolist())
    assert not set(graph.roots(ids["stem"]).tolist()) & set(frozen)
    assert graph.blocked == {}


def test_an_op_without_a_handler_freezes_what_reaches_it_and_names_the_node():
    g = _residual()
    g.op("LRN", ["relu"], "lrn", size=3)
    graph = build_channel_graph(g.model("head", "lrn"))
    assert graph.blocked == {"lrn": "lrn (LRN): not channel-aware"}
    stem = next(p.ids for p in graph.producers if p.node.name == "stem")
    frozen = graph.frozen_roots()
    # relu carries stem's channels, and the residual Add ties branch to them: the whole class is frozen
    assert all(frozen[r] == "lrn (LRN): not channel-aware" for r in graph.roots(stem).tolist())
