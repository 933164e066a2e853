"""Quantization passes: sizes, accuracy on the digits task, ORT vs TVM agreement, and bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from test_errors import assert_one_line_error

from edgekit.compress import CompressOptions, compress_file
from edgekit.export import export_model
from edgekit.passes.quantize import QuantizeConfig, quantize_symmetric, run


@pytest.fixture(scope="module")
def resnet18_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("r18") / "resnet18.onnx"
    export_model("resnet18", path)
    return path


@pytest.mark.parametrize("bits,max_drop_pt", [(8, 0.5), (4, 1.5)])
def test_digits_accuracy_drop_and_tvm_agrees(digits_onnx, tmp_path, bits, max_drop_pt):
    opts = CompressOptions(bits=bits, calib="digits")
    result = compress_file(digits_onnx, tmp_path / f"q{bits}.onnx", opts, eval_set="digits")
    acc = result["accuracy"]
    assert acc["fp32_ort"] >= 0.97
    assert acc["drop_pt"] <= max_drop_pt, acc
    # TVM lowers the QDQ graph to integer kernels that requantize like onnxruntime (bit-exact on this model);
    # the general tolerance for quantized models is in validate.py: predictions must match in any case.
    assert acc["compressed_tvm"] == acc["compressed_ort"], acc
    assert acc["tvm_validation_ok"] and acc["tvm_vs_ort_ok"], acc  # over all 450 test images, tolerance per validate.py


def test_resnet18_weight_ratios(resnet18_onnx, tmp_path):
    ratios = {}
    for bits in (4, 2):
        result = compress_file(resnet18_onnx, tmp_path / f"q{bits}.onnx", CompressOptions(bits=bits, keep=()))
        ratios[bits] = result["weight_ratio"]
        assert result["file_ratio"] >= 0.95 * result["weight_ratio"]  # sub-byte weights are stored packed
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((4, 1, 3, 224, 224)).astype(np.float32))
    ratios[8] = compress_file(resnet18_onnx, tmp_path / "q8.onnx", CompressOptions(bits=8, calib=str(calib)))[
        "weight_ratio"
    ]
    assert ratios[8] >= 3.9 and ratios[4] >= 7.8 and ratios[2] >= 15, ratios


def test_default_keeps_first_and_last_at_8_bits(digits_onnx):
    model = onnx.load(digits_onnx)
    _, report = run(model, QuantizeConfig(bits=2))
    bits = [l.bits for l in report.layers]
    assert bits[0] == 8 and bits[-1] == 8 and set(bits[1:-1]) == {2}
    _, report = run(model, QuantizeConfig(bits=2, keep=(), layer_bits={report.layers[1].name: 4}))
    assert [l.bits for l in report.layers] == [2, 4] + [2] * (len(report.layers) - 2)


def test_blocked_int4_runs_in_onnxruntime(tmp_path):
    from conftest import third_party_cnn

    from edgekit.onnxkit.tools import ort_session

    model = third_party_cnn(batch=1)
    q, report = run(model, QuantizeConfig(bits=4, keep=(), block_size=8))
    dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    assert any(a.name == "block_size" and a.i == 8 for n in dq for a in n.attribute)  # the 16-wide fc weight
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = ort_session(model).run(None, {"image": x})[0]
    got = ort_session(q).run(None, {"image": x})[0]
    assert np.abs(got - ref).max() < 0.05 and all(l.sqnr_db > 15 for l in report.layers)


def test_sqnr_grows_with_bits():
    w = np.random.default_rng(0).standard_normal((16, 8, 3, 3)).astype(np.float32)
    errs = []
    for bits in (2, 4, 8):
        q, s = quantize_symmetric(w, bits, axis=0)
        assert q.min() >= -(2 ** (bits - 1)) and q.max() <= 2 ** (bits - 1) - 1
        errs.append(np.mean((q.reshape(16, -1) * s - w.reshape(16, -1)) ** 2))
    assert errs[0] > errs[1] > errs[2]


def test_bad_bits_calibration_and_requantize(cli, digits_onnx, tmp_path):
    assert_one_line_error(cli("compress", digits_onnx, "--bits", "3", "-o", tmp_path / "q.onnx"), "--bits 3")
    assert_one_line_error(cli("compress", digits_onnx, "--bits", "8", "-o", tmp_path / "q.onnx"), "calibration")
    bad = tmp_path / "calib.npz"
    np.savez(bad, input=np.zeros((4, 3, 8, 8), np.float32))
    assert_one_line_error(
        cli("compress", digits_onnx, "--bits", "8", "--calib", bad, "-o", tmp_path / "q.onnx"), "shape"
    )
    np.savez(bad, image=np.zeros((4, 1, 1, 8, 8), np.float32), other=np.zeros(3))
    assert_one_line_error(
        cli("compress", digits_onnx, "--bits", "8", "--calib", bad, "-o", tmp_path / "q.onnx"), "no array for input"
    )
    res = cli("compress", digits_onnx, "--bits", "4", "-o", tmp_path / "q4.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    assert {"size_before", "size_after", "ratio"} <= set(json.loads(res.stdout))
    assert_one_line_error(
        cli("compress", tmp_path / "q4.onnx", "--bits", "2", "-o", tmp_path / "q2.onnx"), "already quantized"
    )
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("first", [["--bits", "8", "--calib", "random"], ["--bits", "1"], ["--prune", "0.9"]])
def test_cli_pruning_a_quantized_binarized_or_sparse_model_is_refused(cli, tmp_path, digits_onnx, first):
    assert cli("compress", digits_onnx, *first, "-o", tmp_path / "a.onnx").exit_code == 0
    follow = ["--bits", "8", "--calib", "random"] if first == ["--prune", "0.9"] else ["--prune", "0.5", "--structured"]
    res = cli("compress", tmp_path / "a.onnx", *follow, "-o", tmp_path / "b.onnx")
    assert res.exit_code == 2 and ("already quantized" in res.stderr or "sparsely" in res.stderr), res.stderr
