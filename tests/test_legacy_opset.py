"""Opset 1-6 models (passes/legacy_opset.py), as PyTorch 0.3 / 0.4 exported them (IR 3, initializers listed as
graph inputs, attributes that later opsets dropped): upgraded on load, checked against the original, compiled
and validated; what cannot be checked is refused in one line naming the ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_errors import assert_one_line_error

from edgekit.compiler.build import compile_onnx
from edgekit.onnxkit.graph import load_onnx
from edgekit.passes.legacy_opset import UPGRADED_KEY

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _w(name: str, shape, positive: bool = False) -> onnx.TensorProto:
    value = RNG.standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(np.abs(value) + 0.5 if positive else value, name)


def old_export(nodes, inits, out_shape, opset: int = 6) -> onnx.ModelProto:
    """What an old exporter wrote: IR 3, every initializer also a graph input."""
    inputs = [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "old", inputs, [helper.make_tensor_value_info("y", F, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    return model


FAMILIES = {
    "conv": (
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [_w("w", (4, 3, 3, 3)), _w("b", (4,))],
        [1, 4, 8, 8],
    ),
    "batchnorm_is_test": (
        [helper.make_node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["y"], epsilon=1e-5, is_test=1)],
        [_w("s", (3,)), _w("bb", (3,)), _w("m", (3,)), _w("v", (3,), positive=True)],
        [1, 3, 8, 8],
    ),
    "prelu": ([helper.make_node("PRelu", ["x", "slope"], ["y"])], [_w("slope", (3, 1, 1))], [1, 3, 8, 8]),
    "leakyrelu_elu": (
        [helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.1), helper.make_node("Elu", ["a"], ["y"], alpha=0.5)],
        [],
        [1, 3, 8, 8],
    ),
    "pools_and_pad_v2": (
        [
            helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Pad", ["a"], ["b"], pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="constant", value=0.0),
            helper.make_node("AveragePool", ["b"], ["y"], kernel_shape=[2, 2], strides=[1, 1]),
        ],
        [],
        [1, 3, 5, 5],
    ),
    "linear_gemm_broadcast": (
        [
            helper.make_node("Flatten", ["x"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1, broadcast=1),
        ],
        [_w("gw", (10, 192)), _w("gb", (10,))],
        [1, 10],
    ),
    "dropout_logsoftmax": (
        [
            helper.make_node("Dropout", ["x"], ["d"], is_test=1, ratio=0.5),
            helper.make_node("LogSoftmax", ["d"], ["y"], axis=1),
        ],
        [],
        [1, 3, 8, 8],
    ),
    "sum_mul_scalar": (
        [helper.make_node("Sum", ["x", "x"], ["s"]), helper.make_node("Mul", ["s", "k"], ["y"], broadcast=1)],
        [numpy_helper.from_array(np.array(2.0, np.float32), "k")],
        [1, 3, 8, 8],
    ),
    "reshape_v5": (
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [numpy_helper.from_array(np.array([1, 3, 64], np.int64), "shape")],
        [1, 3, 64],
    ),
    # a Constant node (no inputs) beside the ops: pytorch-operator/test_operator_addconstant, PoissonNLLLoss
    "constant_node_add": (
        [
            helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(1.5, np.float32))),
            helper.make_node("Add", ["x", "c"], ["y"], broadcast=1),
        ],
        [],
        [1, 3, 8, 8],
    ),
    "concat_softmax_v1": (
        [helper.make_node("Concat", ["x", "x"], ["c"], axis=1), helper.make_node("Softmax", ["c"], ["y"], axis=1)],
        [],
        [1, 6, 8, 8],
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_an_old_export_is_upgraded_and_validates(family, tmp_path):
    onnx.save(old_export(*FAMILIES[family]), tmp_path / "old.onnx")
    upgraded = load_onnx(tmp_path / "old.onnx")
    assert {p.key: p.value for p in upgraded.metadata_props}[UPGRADED_KEY] == "6"
    assert max(o.version for o in upgraded.opset_import if o.domain in ("", "ai.onnx")) >= 13
    result = compile_onnx(tmp_path / "old.onnx", tmp_path / "art", "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok, result.validation


def test_a_per_channel_prelu_slope_stays_per_channel(tmp_path):
    """PyTorch 0.3 wrote PRelu's slope as [C]: per channel at opset 6, against the last axis from opset 7."""
    slope = np.array([0.1, 0.5, 2.0], np.float32)
    model = old_export(
        [helper.make_node("PRelu", ["x", "slope"], ["y"])], [numpy_helper.from_array(slope, "slope")], [1, 3, 8, 8]
    )
    onnx.save(model, tmp_path / "old.onnx")
    from edgekit.onnxkit.tools import ort_session

    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = ort_session(load_onnx(tmp_path / "old.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, np.where(x > 0, x, x * slope.reshape(1, 3, 1, 1)), rtol=1e-6)
    result = compile_onnx(tmp_path / "old.onnx", tmp_path / "art", "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok, result.validation


def test_what_cannot_be_checked_is_refused_naming_the_ops(cli, tmp_path):
    """BatchNormalization(6) (onnxruntime has no kernel) with Dropout(6) (onnx.reference has none): no judge."""
    family = FAMILIES["batchnorm_is_test"]
    nodes = family[0] + [helper.make_node("Dropout", ["y0"], ["y"], is_test=1)]
    nodes[0] = helper.make_node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["y0"], epsilon=1e-5, is_test=1)
    onnx.save(old_export(nodes, family[1], family[2]), tmp_path / "old.onnx")
    assert_one_line_error(
        cli("compile", tmp_path / "old.onnx", "-o", tmp_path / "art"), "opset 6", "BatchNormalization", "Dropout"
    )
    assert not (tmp_path / "art").exists()


def test_validate_and_bench_take_an_old_export_too(cli, tmp_path):
    onnx.save(old_export(*FAMILIES["linear_gemm_broadcast"]), tmp_path / "old.onnx")
    assert cli("compile", tmp_path / "old.onnx", "-o", tmp_path / "art").exit_code == 0
    res = cli("validate", tmp_path / "art", tmp_path / "old.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    res = cli("bench", tmp_path / "old.onnx", "--runtimes", "ort,tvm", "--repeat", "2", "--rounds", "1", "--json")
    assert res.exit_code == 0, res.stderr


def test_numeric_input_names_compile_quietly(tmp_path):
    """PyTorch 0.3 named tensors "0", "1", ...: TVM's importer warned "Renaming name 0 to input_0" on the terminal
    (a Python warning: only a real process shows it, pytest's runner captures it)."""
    import subprocess
    import sys

    graph = helper.make_graph(
        [helper.make_node("Relu", ["0"], ["1"])],
        "old",
        [helper.make_tensor_value_info("0", F, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("1", F, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), tmp_path / "m.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", "compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "art")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "Renaming" not in proc.stderr + proc.stdout, proc.stderr
