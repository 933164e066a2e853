"""passes/opset.py: the default opset a model imports, upgrading it with onnx's version converter (ops rewritten,
not relabelled; the input untouched; a failure as one EdgekitError), and dropping opset imports no node uses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.core.errors import EdgekitError
from edgekit.onnxkit.tools import ort_session
from edgekit.passes import opset


def _model(nodes: list[onnx.NodeProto], imports: list[tuple[str, int]]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in imports])


@pytest.mark.parametrize(
    ("imports", "expected"),
    [
        ([("", 13)], 13),
        ([("com.microsoft", 1), ("ai.onnx", 17)], 17),  # the default domain under its long name
        ([("com.microsoft", 1)], 1),  # none: `missing`
    ],
)
def test_default_opset(imports: list[tuple[str, int]], expected: int):
    assert opset.default_opset(_model([], imports)) == expected


def test_default_opset_missing_value():
    assert opset.default_opset(_model([], []), missing=0) == 0


def test_upgrade_rewrites_ops_whose_signature_changed():
    model = _model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)], [("", 11)])
    notes: list[str] = []
    upgraded = opset.upgrade(model, 18, notes)
    assert notes == ["opset 11 -> 18 (onnx version converter)"]
    assert opset.default_opset(upgraded) == 18 and opset.default_opset(model) == 11  # a copy
    (node,) = [n for n in upgraded.graph.node if n.op_type == "ReduceMean"]
    assert len(node.input) == 2 and not [a for a in node.attribute if a.name == "axes"]  # axes became an input
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(ort_session(upgraded).run(None, {"x": x})[0], x.mean(axis=1), rtol=1e-6)


def test_upgrade_returns_the_model_itself_when_it_is_recent_enough():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [("", 17)])
    notes: list[str] = []
    assert opset.upgrade(model, 13, notes) is model and opset.upgrade(model, 17, notes) is model
    assert notes == []


def test_upgrade_failure_is_one_edgekit_error_with_a_hint():
    model = _model([helper.make_node("NoSuchOp", ["x"], ["y"])], [("", 11)])
    with pytest.raises(EdgekitError, match="could not convert the model from opset 11") as info:
        opset.upgrade(model, 18)
    assert info.value.message.startswith("the pass needs opset 18")
    assert "\n" not in info.value.message and len(info.value.message) < 300
    assert info.value.hint == "re-export the model at opset 18 or later"


def test_keep_used_imports_drops_unused_domains_and_keeps_the_default():
    node = helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")
    model = _model([node], [("", 17), ("ai.onnx.training", 1), ("com.microsoft", 1), ("com.microsoft.nchwc", 1)])
    opset.keep_used_imports(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17), ("com.microsoft", 1)]
    unused_default = _model(
        [helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")], [("ai.onnx", 17), ("com.microsoft", 1)]
    )
    opset.keep_used_imports(unused_default)  # no node in the default domain: its import stays all the same
    assert [o.domain for o in unused_default.opset_import] == ["ai.onnx", "com.microsoft"]


def test_keep_used_imports_sees_ops_inside_subgraphs():
    """An import used only inside an If branch (or a Loop body) is used: dropping it leaves a model the checker
    rejects ("No opset import for domain ...")."""

    def branch(name: str, node: onnx.NodeProto) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, [2, 3, 4])
        return helper.make_graph([node], name, [], [out])  # reads the outer graph's x

    then_branch = branch("then", helper.make_node("Gelu", ["x"], ["t"], domain="com.microsoft"))
    else_branch = branch("else", helper.make_node("Relu", ["x"], ["e"]))
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph(
        [if_node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
    )
    imports = [helper.make_opsetid(d, v) for d, v in (("", 17), ("com.microsoft", 1), ("com.microsoft.nchwc", 1))]
    model = helper.make_model(graph, opset_imports=imports)
    onnx.checker.check_model(model)
    opset.keep_used_imports(model)
    assert [o.domain for o in model.opset_import] == ["", "com.microsoft"]
    onnx.checker.check_model(model)
