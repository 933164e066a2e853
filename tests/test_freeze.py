"""--freeze NAME=VALUE: an input bound to a constant, the If on it folded to the taken branch, the artifact without
that input, validation against onnxruntime fed the frozen value; clear errors otherwise."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_errors import assert_one_line_error

from edgekit.onnxkit.tools import ort_session
from edgekit.passes.freeze import freeze_inputs, parse_freeze


def vad_like() -> onnx.ModelProto:
    """A Silero-VAD-style graph: a conv front end whose scale depends on an If over the sample-rate input."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((8, 1, 5)) * 0.3).astype(np.float32), "w")
    k16 = numpy_helper.from_array(np.array(16000, np.int64), "k16")

    def branch(name: str, scale: float) -> onnx.GraphProto:
        c = numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale")
        return helper.make_graph(
            [helper.make_node("Mul", ["feat", f"{name}_scale"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)],
            [c],
        )

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["feat"], pads=[2, 2], name="conv"),
        helper.make_node("Equal", ["sr", "k16"], ["is16k"], name="is16k"),
        helper.make_node(
            "If",
            ["is16k"],
            ["scaled"],
            then_branch=branch("then", 2.0),
            else_branch=branch("else", 0.5),
            name="sr_branch",
        ),
        helper.make_node("Relu", ["scaled"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "vad",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 64])],
        [w, k16],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("rate,scale", [(16000, 2.0), (8000, 0.5)])
def test_freeze_folds_the_if_and_matches_onnxruntime(rate, scale):
    model = vad_like()
    frozen = freeze_inputs(model, parse_freeze([f"sr={rate}"], model))
    assert [i.name for i in frozen.graph.input] == ["x"]
    assert not any(n.op_type == "If" for n in frozen.graph.node)
    x = np.random.default_rng(1).standard_normal((1, 1, 64)).astype(np.float32)
    want = ort_session(model).run(None, {"x": x, "sr": np.array(rate, np.int64)})[0]
    np.testing.assert_array_equal(ort_session(frozen).run(None, {"x": x})[0], want)


def test_compile_with_freeze_validates_and_records_it(cli, tmp_path):
    onnx.save(vad_like(), tmp_path / "vad.onnx")
    assert_one_line_error(cli("compile", tmp_path / "vad.onnx", "-o", tmp_path / "no"), "uses op If")
    res = cli("compile", tmp_path / "vad.onnx", "-o", tmp_path / "no")
    assert "--freeze NAME=VALUE" in res.stderr
    res = cli("compile", tmp_path / "vad.onnx", "-o", tmp_path / "art", "--freeze", "sr=16000", "--json")
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["frozen"] == {"sr": {"dtype": "int64", "value": 16000}}
    assert [i["name"] for i in meta["inputs"]] == ["x"] and meta["validation"]["ok"]
    res = cli("validate", tmp_path / "art", tmp_path / "vad.onnx", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"], res.stderr
    res = cli("bench", tmp_path / "art", "--runtimes", "ort,tvm", "--repeat", "2", "--rounds", "1", "--json")
    assert res.exit_code == 0, res.stderr


def test_bench_and_tune_an_onnx_with_freeze(cli, tmp_path):
    """The commands that take the .onnx itself bind the input too (validate and run read the artifact, which
    records what compile froze)."""
    onnx.save(vad_like(), tmp_path / "vad.onnx")
    res = cli(
        "bench",
        tmp_path / "vad.onnx",
        "--runtimes",
        "ort,tvm",
        "--freeze",
        "sr=8000",
        "--repeat",
        "2",
        "--rounds",
        "1",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    assert_one_line_error(cli("tune", tmp_path / "vad.onnx", "-o", tmp_path / "db"), "uses op If")
    res = cli(
        "tune",
        tmp_path / "vad.onnx",
        "--freeze",
        "sr=8000",
        "--trials",
        "1",
        "--no-verify",
        "-o",
        tmp_path / "db",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["tasks"] >= 1 and (tmp_path / "db" / "host" / "vad.json").exists()


@pytest.mark.parametrize(
    "item,message",
    [
        ("sr", "bad --freeze"),
        ("rate=1", "no input 'rate'"),
        ("sr=a,b", "not a number"),
        ("sr=1,2", "2 value(s) for an input of shape []"),
    ],
)
def test_bad_freeze(cli, tmp_path, item, message):
    onnx.save(vad_like(), tmp_path / "vad.onnx")
    assert_one_line_error(cli("compile", tmp_path / "vad.onnx", "-o", tmp_path / "art", "--freeze", item), message)


def loop_model(trip_from_input: bool = False) -> onnx.ModelProto:
    """v <- v * 2 + i for i in range(M), with the scan of every v: what torch.jit exports for a Python for-loop."""
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["v", "two"], ["v2"]),
            helper.make_node("Add", ["v2", "i_f"], ["v_next"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["v_next"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_next", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("scan", TensorProto.FLOAT, [1, 4]),
        ],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    inits = [numpy_helper.from_array(np.array(True), "cond0")]
    if trip_from_input:
        inputs.append(helper.make_tensor_value_info("M", TensorProto.INT64, []))
    else:
        inits.append(numpy_helper.from_array(np.array(3, np.int64), "M"))
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond0", "x"], ["v_final", "scans"], body=body, name="loop")],
        "g",
        inputs,
        [
            helper.make_tensor_value_info("v_final", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("scans", TensorProto.FLOAT, [3, 1, 4]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_loop_with_a_constant_trip_count_unrolls_and_compiles(cli, tmp_path):
    from edgekit.compiler.loops import unroll_constant_loops

    model = loop_model()
    unrolled = unroll_constant_loops(model)
    assert not any(n.op_type == "Loop" for n in unrolled.graph.node)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    for got, want in zip(ort_session(unrolled).run(None, {"x": x}), ort_session(model).run(None, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    onnx.save(model, tmp_path / "loop.onnx")
    res = cli("compile", tmp_path / "loop.onnx", "-o", tmp_path / "art", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["validation"]["ok"], res.stderr
    # a trip count from an input: refused with the hint, compiled once frozen
    onnx.save(loop_model(trip_from_input=True), tmp_path / "loop_m.onnx")
    res = cli("compile", tmp_path / "loop_m.onnx", "-o", tmp_path / "art2")
    assert res.exit_code == 2 and "uses op Loop" in res.stderr and "--freeze" in res.stderr
    res = cli("compile", tmp_path / "loop_m.onnx", "-o", tmp_path / "art2", "--freeze", "M=3", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["validation"]["ok"], res.stderr


@pytest.mark.parametrize("rate", [16000, 8000, 44100])
def test_freeze_folds_ifs_on_constant_node_conditions(rate, cli, tmp_path):
    from onnxscript_models import onnxscript_vad

    model = onnxscript_vad()
    assert not model.graph.initializer and any(n.op_type == "Constant" for n in model.graph.node)
    onnx.save(model, tmp_path / "vad.onnx")
    res = cli("compile", tmp_path / "vad.onnx", "-o", tmp_path / "art", "--freeze", f"sr={rate}", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["validation"]["ok"]
    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    want = ort_session(model).run(None, {"x": x, "sr": np.array(rate, np.int64)})[0]
    import edgekit

    np.testing.assert_allclose(edgekit.load(tmp_path / "art")(x)[0], want, rtol=1e-6)


@pytest.mark.parametrize(
    "target_shape, out_shape", [([3, 1, 3], [3, 3, 3]), ([3, 1], [1, 3, 1])]
)  # fewer dims: broadcast
def test_a_shape_input_is_refused_by_node_and_compiles_frozen(target_shape, out_shape, cli, tmp_path):
    """Expand(x, shape) with `shape` a graph input (onnx's simple/test_expand_shape_model*): onnxruntime sizes the
    output at run time; TVM's importer failed or built a wrong rank. Refused naming the node, then --freeze works."""
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"], name="grow")],
        "expand",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [len(target_shape)]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    refused = cli("compile", tmp_path / "m.onnx", "-o", tmp_path / "a")
    assert_one_line_error(refused, "input 'shape'", "'grow'", "Expand")
    assert "--freeze shape=" in refused.stderr
    frozen = ",".join(map(str, target_shape))
    res = cli("compile", tmp_path / "m.onnx", "-o", tmp_path / "b", "--freeze", f"shape={frozen}", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["validation"]["ok"]
