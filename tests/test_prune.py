"""passes/prune.py: unstructured and N:M sparsity with sparse storage, the sweep and its knee, the CLI's pruning
options and their errors. References: onnxruntime runs every pruned model; edgekit compiles and validates one."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from prune_models import Residual, export, feed_for, outputs

from edgekit.compiler.build import compile_onnx
from edgekit.core.errors import EdgekitError
from edgekit.passes import prune, sparse_format

# --- unstructured / N:M --------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["mask", "coo"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_unstructured_sparsity_storage_round_trips(storage, scope, tmp_path):
    model = export(Residual(), (1, 3, 16, 16))
    pruned_w, report = prune.sparsify(model, prune.PruneConfig(ratio=0.9, scope=scope))
    total = sum(w.size for w in pruned_w.values())
    zeros = sum(w.size - np.count_nonzero(w) for w in pruned_w.values())
    assert abs(zeros / total - 0.9) < 0.01
    if scope == "layer":
        for w in pruned_w.values():
            assert abs(1 - np.count_nonzero(w) / w.size - 0.9) < 0.02
    out, rep = prune.run(model, prune.PruneConfig(ratio=0.9, scope=scope, storage=storage))
    assert rep.size_after < 0.45 * rep.size_before  # 90% zeros: mask ≈ 0.53 B/weight, coo 1.2 B/weight of 4
    dense = sparse_format.densify(out)
    inits = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}
    for name, w in pruned_w.items():
        np.testing.assert_array_equal(inits[name], w)
    feed = feed_for(model)
    reference, _ = prune.store(model, pruned_w, "dense")
    np.testing.assert_allclose(outputs(out, feed)[0], outputs(reference, feed)[0], rtol=1e-5, atol=1e-6)
    if storage == "mask" and scope == "layer":
        onnx.save(out, tmp_path / "s.onnx")
        result = compile_onnx(tmp_path / "s.onnx", tmp_path / "art", "x86_64", quiet=True)
        assert result.validation is not None and result.validation.ok


def test_nm_every_group_obeys_and_indivisible_layers_stay_dense():
    model = export(Residual(), (1, 3, 16, 16))
    out, report = prune.run(model, prune.PruneConfig(nm=(2, 4)))
    assert report.extra["nm_checked"] is True
    notes = {l.name: l.note for l in report.layers}
    assert "divisible" in notes["/stem/stem.0/Conv"]  # 3 input channels
    dense = sparse_format.densify(out)
    inits = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}
    w = inits[next(n.input[1] for n in dense.graph.node if n.name == "/a1/a1.0/Conv")]
    assert prune.obeys_nm(w, 2, 4, 1) and not prune.obeys_nm(w, 1, 4, 1)
    assert np.count_nonzero(w) == w.size // 2
    with pytest.raises(EdgekitError, match="no layer"):
        prune.run(model, prune.PruneConfig(nm=(3, 7)))


def test_knee_of_a_curve():
    assert prune.knee([0, 0.2, 0.4, 0.6, 0.8, 0.9], [0, 0.01, 0.02, 0.05, 0.5, 1.0]) == 0.6
    assert prune.knee([0, 0.5, 1], [0, 0, 0]) is None


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_structured_then_int8_and_sweep(cli, tmp_path, digits_onnx):
    res = cli(
        "compress",
        digits_onnx,
        "--prune",
        "0.5",
        "--structured",
        "--bits",
        "8",
        "--calib",
        "digits",
        "-o",
        tmp_path / "p.onnx",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["pass"] == "prune-structured+quantize"
    assert [p["pass"] for p in result["passes"]] == ["prune-structured", "quantize"]
    model = onnx.load(tmp_path / "p.onnx")
    assert any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    assert {p.key: p.value for p in model.metadata_props}["edgekit.passes"] == "prune-structured0.5,quantize8"
    res = cli(
        "compress", digits_onnx, "--prune", "0.8", "--sweep", "--calib", "digits", "-o", tmp_path / "u.onnx", "--json"
    )
    assert res.exit_code == 0, res.stderr
    sweep = json.loads(res.stdout)["passes"][0]["sweep"]
    accs = [row["accuracy"] for row in sweep["levels"]]
    assert accs[0] > 0.95 and accs[-1] < accs[0] and sweep["knee"] is not None


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prune", "1.0"], "outside [0, 1)"),
        (["--prune", "-0.1", "--structured"], "outside [0, 1)"),
        (["--structured"], "needs --prune"),
        (["--nm", "4:2"], "bad --nm"),
        (["--nm", "2:4", "--structured", "--prune", "0.5"], "pattern of its own"),
        (["--nm", "3:7"], "no layer"),
        (["--prune", "0.5", "--bits", "1"], "cannot keep unstructured zeros"),
        (["--prune", "0.5", "--structured", "--prune-criterion", "taylor"], "unknown pruning criterion"),
    ],
)
def test_cli_bad_prune_options(cli, tmp_path, digits_onnx, args, message):
    res = cli("compress", digits_onnx, *args, "-o", tmp_path / "o.onnx")
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2 and not (tmp_path / "o.onnx").exists()
