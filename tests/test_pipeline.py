"""End to end: export -> compile -> validate on the zoo and on ONNX written by someone else."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import third_party_cnn

import edgekit
from edgekit.compiler.build import compile_onnx
from edgekit.export import export_model
from edgekit.runtime import BUNDLE

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)


@pytest.mark.parametrize("name", ["digits_cnn", "vit_tiny", "resnet18", "mobilenetv2"])
def test_zoo_export_compile_validate(name, tmp_path, cli):
    onnx_path, art = tmp_path / f"{name}.onnx", tmp_path / "art"
    exported = export_model(name, onnx_path)
    assert exported.check.ok and exported.check.max_abs <= 1e-4
    model = onnx.load(onnx_path)
    assert model.opset_import[0].version >= 18
    props = {p.key: p.value for p in model.metadata_props}
    assert float(props["edgekit.ort_vs_torch.max_abs"]) == pytest.approx(exported.check.max_abs, rel=1e-2)

    result = compile_onnx(onnx_path, art, "x86_64", quiet=True)
    assert result.validation.ok and result.validation.max_abs <= 1e-4
    meta = json.loads((art / "meta.json").read_text())
    assert meta["validation"]["ok"] and meta["source"]["sha256"] and meta["target"]["name"] == "x86_64"

    # validate independently, on fresh random inputs (another seed) through the CLI
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "x.npz", input=rng.standard_normal((2, *exported.input_shape)).astype(np.float32))
    res = cli("validate", art, onnx_path, "--inputs", tmp_path / "x.npz", "--json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and report["outputs"][0]["max_abs"] <= 1e-4


def test_third_party_cnn_with_dynamic_batch(tmp_path, cli):
    """Hand-written ONNX (grouped + depthwise conv, residual, softmax), symbolic batch fixed by --input-shape."""
    path = tmp_path / "third_party.onnx"
    onnx.save(third_party_cnn(batch="N"), path)
    before = path.read_bytes()
    res = cli("compile", path, "-o", tmp_path / "art", "--input-shape", "image=2,3,32,32", "--json")
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["inputs"] == [{"name": "image", "shape": [2, 3, 32, 32], "dtype": "float32"}]
    assert meta["validation"]["ok"] and meta["validation"]["outputs"][0]["max_abs"] <= 1e-5
    assert path.read_bytes() == before  # inputs are never modified
    probs = edgekit.load(tmp_path / "art")(np.ones((2, 3, 32, 32), np.float32))[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_validate_fails_on_a_different_model(tmp_path, cli):
    """validate must be able to fail: an artifact checked against another model's weights exits 1."""
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(third_party_cnn(batch=1, seed=0), a)
    onnx.save(third_party_cnn(batch=1, seed=1), b)
    assert cli("compile", a, "-o", tmp_path / "art", "--json").exit_code == 0
    res = cli("validate", tmp_path / "art", b, "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout)["ok"] is False


def test_run_cli_and_python_api_agree_with_bundle(digits_artifact, tmp_path, cli):
    bundle = np.load(digits_artifact / BUNDLE)
    x = bundle["input:input"]
    expected = bundle["output:output"]
    np.save(tmp_path / "x.npy", x)
    res = cli("run", digits_artifact, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["outputs"][0]["shape"] == [1, 10]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-4)
    model = edgekit.load(digits_artifact)
    np.testing.assert_allclose(model(x)[0], expected, atol=1e-4)
    np.testing.assert_allclose(model.run({"input": x})["output"], expected, atol=1e-4)


def test_digits_accuracy_agrees_across_runtimes(digits_onnx, digits_artifact):
    from edgekit.demo import digits_accuracy

    acc = digits_accuracy("digits_cnn", digits_onnx, digits_artifact)
    assert acc["torch"] >= 0.97
    assert acc["onnxruntime"] == acc["torch"] == acc["tvm"]
    assert acc["predictions_identical"] and acc["tvm_vs_ort_ok"]


def test_bench_json_keys(digits_artifact, cli, tmp_path):
    res = cli(
        "bench",
        digits_artifact,
        "--repeat",
        "6",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        "--plot",
        tmp_path / "b.png",
    )
    assert res.exit_code == 0, res.stderr
    runs = json.loads(res.stdout)["runs"]
    assert [r["runtime"] for r in runs] == ["ort", "tvm"]
    for r in runs:
        assert set(r) >= {"runtime", "target", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_rss_mb", "size_bytes"}
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["peak_rss_mb"] > 0 and r["size_bytes"] > 0
        assert r["threads"] == 1 and r["samples"] == 6
    assert (tmp_path / "b.png").stat().st_size > 0


def test_bench_onnx_compiles_for_tvm(digits_onnx, cli):
    res = cli("bench", digits_onnx, "--runtimes", "tvm", "--repeat", "2", "--warmup", "0", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["runs"][0]["target"] == "host"  # every command's default: this machine's CPU


def test_models_and_targets_list(cli):
    res = cli("models", "--json")
    names = {m["name"] for m in json.loads(res.stdout)["models"]}
    assert {"digits_cnn", "resnet18", "mobilenetv2", "vit_tiny"} <= names
    res = cli("targets", "--json")
    assert "x86_64" in {t["name"] for t in json.loads(res.stdout)["targets"]}


def test_user_model_file(tmp_path, cli):
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(12, 7), torch.nn.Tanh())\n"
    )
    res = cli("export", f"{tmp_path / 'net.py'}:make", "-o", tmp_path / "net.onnx", "--input-shape", "3,12", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["input_shape"] == [3, 12] and out["ort_vs_torch"]["ok"]
    res = cli("export", f"{tmp_path / 'net.py'}:make", "-o", tmp_path / "net2.onnx")
    assert res.exit_code == 2 and "INPUT_SHAPE" in res.stderr


def test_dynamic_batch_export(tmp_path):
    path = tmp_path / "dyn.onnx"
    export_model("digits_cnn", path, dynamic_batch=True)
    dim = onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value
    art = compile_onnx(path, tmp_path / "art", "x86_64", input_shapes={"input": (4, 1, 8, 8)}, quiet=True)
    assert art.validation.ok


@pytest.mark.parametrize("kernel,pads", [(2, [0, 0, 0, 0]), (3, [1, 1, 1, 1])])
def test_conv_transpose_after_conv_compiles(tmp_path, kernel, pads):
    """Regression: NHWC layout conversion used to reach ConvTranspose (no NHWC legalization in TVM) and the
    build failed in VM codegen. Detector heads (DBNet/PP-OCR det) upsample this way. kernel == stride is
    rewritten to a 1x1 conv + depth-to-space (fast conv rule); overlapping kernels stay a transposed conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
        for n, s in (("w1", (8, 3, 3, 3)), ("wt", (8, 4, kernel, kernel)))
    ]
    extra = {"output_padding": [1, 1]} if kernel == 3 else {}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "wt"], ["y"], name="up", strides=[2, 2], pads=pads, **extra),
    ]
    graph = helper.make_graph(
        nodes,
        "det_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        inits,
    )
    path = tmp_path / "head.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    result = compile_onnx(path, tmp_path / "art", "x86_64", quiet=True)
    assert result.validation.ok and result.validation.max_abs <= 1e-4
    rules = result.meta["build"]["rules"]
    # the rewritten upsampler is an ordinary conv; the overlapping one still lacks a fast rule (README/notes)
    assert rules.get("conv2d-nhwc-regblock") == (2 if kernel == 2 else 1), rules
