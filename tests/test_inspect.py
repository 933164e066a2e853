"""`edgekit inspect`: op status (TVM / edgekit rewrite / unsupported with the node), dynamic inputs and the flag
that fixes them, parameters and MACs checked against hand counts."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from realworld import build


def _conv_gemm(batch="N") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("w", (8, 3, 3, 3)), ("g", (512, 10)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Flatten", ["y"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["out"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_macs_params_and_the_flag_for_a_dynamic_batch(cli, tmp_path):
    onnx.save(_conv_gemm(), tmp_path / "m.onnx")
    res = cli("inspect", tmp_path / "m.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["fix_shapes"] == ["--input-shape x=1,3,8,8"] and report["macs"] is None
    assert report["params"] == 8 * 27 + 5120 and report["compilable"]
    report = json.loads(cli("inspect", tmp_path / "m.onnx", "--input-shape", "x=2,3,8,8", "--json").stdout)
    assert report["macs"] == 2 * (8 * 8 * 8 * 27 + 5120)  # conv: every output x Cin x 3 x 3; Gemm: M x N x K
    assert report["outputs"][0]["shape"] == [2, 10]
    assert "MACs" in cli("inspect", tmp_path / "m.onnx").stdout


def test_recurrent_ops_are_edgekit_rewrites_and_counted(cli, tmp_path):
    onnx.save(build("crnn"), tmp_path / "crnn.onnx")
    report = json.loads(cli("inspect", tmp_path / "crnn.onnx", "--input-shape", "1,1,32,32", "--json").stdout)
    status = {r["op"]: r["status"] for r in report["ops"]}
    assert status["LSTM"] == "edgekit" and status["Conv"] == "tvm"
    # convs 16·32·32·9 + 32·16·16·144 + 48·8·16·288, LSTM 16 steps x 2 dirs x 128 x (48 + 32), fc 16 x 37 x 64
    assert (
        report["macs"] == 16 * 32 * 32 * 9 + 32 * 16 * 16 * 144 + 48 * 8 * 16 * 288 + 16 * 2 * 128 * 80 + 16 * 37 * 64
    )


def test_an_op_tvm_cannot_import_is_named(cli, tmp_path):
    model = _conv_gemm(batch=1)
    model.graph.node.extend(
        [
            helper.make_node("Reshape", ["out", "square_shape"], ["square"], name="to_square"),
            helper.make_node("Det", ["square"], ["det"], name="my_det"),
        ]
    )  # TVM 0.27 has no Det
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 5], np.int64), "square_shape"))
    model.graph.output.append(helper.make_tensor_value_info("det", TensorProto.FLOAT, []))
    onnx.save(model, tmp_path / "m.onnx")
    res = cli("inspect", tmp_path / "m.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    det = next(r for r in report["ops"] if r["op"] == "Det")
    assert det["status"] == "unsupported" and det["first_node"] == "my_det" and not report["compilable"]
    assert "not compilable as is: Det" in cli("inspect", tmp_path / "m.onnx").stdout
