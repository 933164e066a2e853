"""compiler/legacy_ops.py: the converters that replace TVM's for Upsample and Resize, checked against onnxruntime
on the coordinate modes, roundings and scales exporters write (non-integral scales are where TVM's differ)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.build import compile_onnx
from edgekit.core.errors import EdgekitError


def _compile(node: onnx.NodeProto, opset: int, shape: list[int], out: list[int], inits: list, tmp_path):
    graph = helper.make_graph(
        [node],
        node.op_type.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        inits,
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7), tmp_path / "m.onnx"
    )
    return compile_onnx(tmp_path / "m.onnx", tmp_path / "art", "x86_64", quiet=True)


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(2.0, 2.0), (1.5, 2.5), (3.0, 1.0)])
def test_upsample_of_old_exports_matches_onnxruntime(opset, mode, scales, tmp_path):
    """Upsample (opset 7: scales attribute; 9: scales input), which PyTorch <= 1.4 wrote for F.interpolate: TVM's
    converter failed on every opset 9 model, and sizes-derived coordinates missed by up to 0.8 at scale 1.5."""
    shape, out = [1, 3, 5, 7], [1, 3, int(5 * scales[0]), int(7 * scales[1])]
    full = np.array([1, 1, *scales], np.float32)
    node = (
        helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=full.tolist())
        if opset == 7
        else helper.make_node("Upsample", ["x", "scales"], ["y"], mode=mode)
    )
    result = _compile(
        node, opset, shape, out, [] if opset == 7 else [numpy_helper.from_array(full, "scales")], tmp_path
    )
    assert result.validation.ok, result.validation
    assert result.meta["validation"]["outputs"][0]["max_abs"] <= 1e-6


@pytest.mark.parametrize(
    "mode,coordinates,rounding",
    [
        ("linear", "half_pixel", None),
        ("linear", "pytorch_half_pixel", None),
        ("linear", "asymmetric", None),
        ("linear", "align_corners", None),
        ("nearest", "half_pixel", "round_prefer_floor"),
        ("nearest", "half_pixel", "round_prefer_ceil"),
        ("nearest", "asymmetric", "floor"),
        ("nearest", "tf_half_pixel_for_nn", "ceil"),
    ],
)
@pytest.mark.parametrize("scales", [(1.5, 2.5), (0.6, 0.75)])
def test_resize_by_scales_matches_onnxruntime(mode, coordinates, rounding, scales, tmp_path):
    """Resize(X, roi, scales) as tf2onnx and torch's scale_factor exports write it: onnxruntime maps pixels
    with the scale, TVM's converter with out / in; at 1.5x of 5 rows they differ (0.6 of the output's scale)."""
    shape = [1, 3, 5, 7]
    out = [1, 3, *(int(np.floor(d * s)) for d, s in zip(shape[2:], scales))]
    attrs = {
        "mode": mode,
        "coordinate_transformation_mode": coordinates,
        **({"nearest_mode": rounding} if rounding else {}),
    }
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    full = numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")
    result = _compile(node, 13, shape, out, [full], tmp_path)
    assert result.validation.ok and result.meta["validation"]["outputs"][0]["max_abs"] <= 1e-6, result.validation


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(1.5, 2.5), (2.0, 2.0), (0.6, 0.75)])
def test_resize_10_takes_its_scales_from_the_second_input(mode, scales, tmp_path):
    """Resize-10 has (X, scales) inputs: TVM's converter read the scales as the roi and refused every such model."""
    shape = [1, 3, 5, 7]
    out = [1, 3, *(int(np.floor(d * s)) for d, s in zip(shape[2:], scales))]
    node = helper.make_node("Resize", ["x", "scales"], ["y"], mode=mode)
    full = numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")
    result = _compile(node, 10, shape, out, [full], tmp_path)
    assert result.validation.ok and result.meta["validation"]["outputs"][0]["max_abs"] <= 1e-6, result.validation


def test_a_resize_by_scales_edgekit_cannot_match_is_refused_naming_it(tmp_path):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")
    full = numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], np.float32), "scales")
    with pytest.raises(EdgekitError, match=r"Resize of a 4-D tensor by scales .* \(mode cubic\)"):
        _compile(node, 13, [1, 3, 5, 5], [1, 3, 7, 7], [full], tmp_path)
