"""passes/weights.py: where each op keeps its output and input features, for every weight-editing pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.passes.weights import weight_layers


def _one_layer(op: str, w: np.ndarray, **attrs) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op, ["x", "w"], ["y"], name="layer", **attrs)
    return helper.make_model(helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(w, "w")]))


@pytest.mark.parametrize(
    ("op", "shape", "attrs", "out_axis", "in_axis", "transposed"),
    [
        ("Conv", (8, 3, 3, 3), {}, 0, 1, False),
        ("Gemm", (16, 8), {"transB": 1}, 0, 1, False),
        ("Gemm", (16, 8), {}, 1, 0, True),
        ("MatMul", (16, 8), {}, 1, 0, True),
    ],
)
def test_axes_and_rows_per_op(
    op: str, shape: tuple[int, ...], attrs: dict, out_axis: int, in_axis: int, transposed: bool
):
    w = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    [layer] = weight_layers(_one_layer(op, w, **attrs))
    assert (layer.axis, layer.in_axis, layer.stored_transposed) == (out_axis, in_axis, transposed)
    outputs = shape[out_axis]
    rows = layer.rows()
    assert rows.shape == (outputs, w.size // outputs)
    first_output = np.take(w, 0, axis=out_axis).ravel()  # what output feature 0 reads
    np.testing.assert_array_equal(rows[0], first_output)


def test_non_float_weights_only_on_request():
    model = _one_layer("MatMul", np.ones((4, 4), np.float16))
    assert weight_layers(model) == []
    assert [l.init_name for l in weight_layers(model, float_only=False)] == ["w"]
