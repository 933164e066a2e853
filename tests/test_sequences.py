"""Static-length ONNX sequences (compiler/sequences.py): the sequence ops exports write, as plain tensors,
compiled and validated against onnxruntime; what is not static is left for the importer to refuse by name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.build import compile_onnx
from edgekit.compiler.sequences import SEQUENCE_OPS, fold_static_sequences

F = TensorProto.FLOAT


def _model(nodes, outputs: dict[str, list[int]], consts: dict[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "seq",
        [helper.make_tensor_value_info("x", F, [1, 4, 6])],
        [helper.make_tensor_value_info(k, F, v) for k, v in outputs.items()],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _i64(v) -> np.ndarray:
    return np.array(v, np.int64)


CASES = {
    # SplitToSequence (unit chunks, keepdims=0) -> SequenceAt(-1) and ConcatFromSequence(new_axis=1)
    "split_unit_squeezed": (
        _model(
            [
                helper.make_node("SplitToSequence", ["x"], ["seq"], axis=1, keepdims=0),
                helper.make_node("SequenceAt", ["seq", "last"], ["a"]),
                helper.make_node("ConcatFromSequence", ["seq"], ["stacked"], axis=-1, new_axis=1),
                helper.make_node("Relu", ["stacked"], ["y"]),
            ],
            {"a": [1, 6], "y": [1, 6, 4]},
            {"last": _i64(-1)},
        )
    ),
    # a scalar split (equal chunks, the last shorter) and a list of sizes
    "split_scalar_and_list": (
        _model(
            [
                helper.make_node("SplitToSequence", ["x", "four"], ["s1"], axis=2),
                helper.make_node("SequenceAt", ["s1", "one"], ["tail"]),
                helper.make_node("SplitToSequence", ["x", "sizes"], ["s2"], axis=1),
                helper.make_node("ConcatFromSequence", ["s2"], ["back"], axis=1),
                helper.make_node("Sub", ["back", "x"], ["zero"]),
            ],
            {"tail": [1, 4, 2], "zero": [1, 4, 6]},
            {"four": _i64(4), "one": _i64(1), "sizes": _i64([1, 3])},
        )
    ),
    # construct / insert at a position / erase / length used in arithmetic
    "construct_insert_erase_length": (
        _model(
            [
                helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Neg", ["x"], ["n"]),
                helper.make_node("SequenceConstruct", ["r", "n"], ["s"]),
                helper.make_node("SequenceInsert", ["s", "x", "zero_i"], ["s2"]),
                helper.make_node("SequenceErase", ["s2", "last"], ["s3"]),
                helper.make_node("SequenceLength", ["s3"], ["len"]),
                helper.make_node("Cast", ["len"], ["lenf"], to=F),
                helper.make_node("ConcatFromSequence", ["s3"], ["cat"], axis=0),
                helper.make_node("Mul", ["cat", "lenf"], ["y"]),
            ],
            {"y": [2, 4, 6]},
            {"zero_i": _i64(0), "last": _i64(-1)},
        )
    ),
    # opset 11: Split's sizes are an attribute there
    "opset11_split": (
        _model(
            [
                helper.make_node("SplitToSequence", ["x", "sizes"], ["s"], axis=2),
                helper.make_node("SequenceAt", ["s", "one"], ["y"]),
            ],
            {"y": [1, 4, 4]},
            {"sizes": _i64([2, 4]), "one": _i64(1)},
            opset=11,
        )
    ),
    # opset 12: Squeeze / Unsqueeze take their axes as an attribute there (keepdims=0 and new_axis=1)
    "opset12_squeeze_unsqueeze": (
        _model(
            [
                helper.make_node("SplitToSequence", ["x"], ["seq"], axis=1, keepdims=0),
                helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=-1, new_axis=1),
            ],
            {"y": [1, 6, 4]},
            {},
            opset=12,
        )
    ),
    # an empty sequence grown by inserts
    "empty_then_insert": (
        _model(
            [
                helper.make_node("SequenceEmpty", [], ["e"], dtype=F),
                helper.make_node("SequenceInsert", ["e", "x"], ["s1"]),
                helper.make_node("Sigmoid", ["x"], ["sg"]),
                helper.make_node("SequenceInsert", ["s1", "sg"], ["s2"]),
                helper.make_node("ConcatFromSequence", ["s2"], ["y"], axis=1),
            ],
            {"y": [1, 8, 6]},
            {},
        )
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_static_sequences_compile_and_match_onnxruntime(name, tmp_path):
    model = CASES[name]
    folded = fold_static_sequences(model)
    assert not any(n.op_type in SEQUENCE_OPS for n in folded.graph.node), [n.op_type for n in folded.graph.node]
    onnx.save(model, tmp_path / "m.onnx")
    result = compile_onnx(tmp_path / "m.onnx", tmp_path / "art", "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok, result.validation


def test_a_sequence_that_leaves_the_graph_is_left_alone():
    graph = helper.make_graph(
        [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=1)],
        "seq",
        [helper.make_tensor_value_info("x", F, [1, 4, 6])],
        [helper.make_tensor_sequence_value_info("seq", F, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fold_static_sequences(model) is model


def test_a_computed_index_is_left_alone():
    model = _model(
        [
            helper.make_node("SplitToSequence", ["x"], ["seq"], axis=1),
            helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
            helper.make_node("Cast", ["m"], ["i"], to=TensorProto.INT64),
            helper.make_node("SequenceAt", ["seq", "i"], ["y"]),
        ],
        {"y": [1, 1, 6]},
        {},
    )
    assert fold_static_sequences(model) is model
