"""`edgekit report`: the sweep builds, validates and measures every variant; failures are rows; the cache makes a
second run and one more variant cheap; TOML configs; the Pareto front; ARM rows say they are emulated."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from test_arm import needs_aarch64
from test_errors import assert_one_line_error

from edgekit.report import ReportConfig, run_report
from edgekit.report_plot import pareto

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)


def test_pareto_front():
    points = [(1.0, 0.9), (2.0, 0.95), (1.5, 0.8), (3.0, 0.95), (0.5, 0.1)]
    assert pareto(points, higher_is_better=True) == [4, 0, 1]
    assert pareto([(1.0, 0.5), (2.0, 0.1)], higher_is_better=False) == [0, 1]


def test_digits_report_rows_plots_cache_and_a_failing_variant(tmp_path):
    cfg = ReportConfig(
        "digits_cnn",
        "x86_64",
        ("fp32", "int8", "prune50s", "prune90", "prune50s+int8", "depth2"),
        "digits",
        out=tmp_path / "rep",
        repeat=3,
    )
    result = run_report(cfg, quiet=True)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["fp32"]["quality"] > 0.95 and rows["fp32"]["validated"] is True
    for name in ("int8", "prune50s", "prune90", "prune50s+int8"):
        r = rows[name]
        assert r["status"] == "ok" and r["validated"] is True and r["tvm_ms"] > 0 and r["ort_ms"] > 0, r
        assert r["quality"] == pytest.approx(r["quality_tvm"], abs=0.01)  # TVM's build classifies as onnxruntime does
        assert r["file_bytes"] < rows["fp32"]["file_bytes"]
    assert rows["int8"]["quality"] > 0.95
    assert rows["depth2"]["status"].startswith("failed:") and "residual block" in rows["depth2"]["status"]
    for f in ("report.md", "report.json", "quality_vs_latency.png", "quality_vs_size.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0
    assert "| prune50s+int8 | ok |" in (tmp_path / "rep" / "report.md").read_text()
    # a second run reuses every cached row; one more variant builds only that one
    cached = {p.name: p.stat().st_mtime for p in (tmp_path / "rep" / "cache").glob("*/row.json")}
    again = run_report(ReportConfig(**{**cfg.__dict__, "variants": cfg.variants + ("int4",)}), quiet=True)
    assert {
        p.name: p.stat().st_mtime
        for p in (tmp_path / "rep" / "cache").glob("*/row.json")
        if p.parent.name.split("-")[0] != "int4"
    } == cached
    assert [r["variant"] for r in again["rows"]][-1] == "int4" and again["rows"][-1]["status"] == "ok"
    assert again["rows"][0] == result["rows"][0]


def test_report_without_labels_measures_error_vs_fp32(tmp_path, cli):
    from prune_models import Residual, export

    onnx.save(export(Residual(), (1, 3, 16, 16)), tmp_path / "res.onnx")
    (tmp_path / "sweep.toml").write_text(
        f'[report]\nmodel = "{tmp_path / "res.onnx"}"\nvariants = ["fp32", "int8", "prune50s"]\n'
        f'out = "{tmp_path / "rep"}"\nrepeat = 3\n'
    )
    res = cli("report", "--config", tmp_path / "sweep.toml", "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["quality"] == "relative output error vs fp32"
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["fp32"]["quality"] == 0.0 and 0 < rows["int8"]["quality"] < 0.2 and rows["prune50s"]["quality"] > 0
    assert "calibrated on random inputs" in " ".join(rows["int8"]["notes"])


def test_report_bad_options(cli, tmp_path):
    assert_one_line_error(
        cli("report", "digits_cnn", "--variants", "fp32,int9", "-o", tmp_path / "r"), "unknown variant(s) int9"
    )
    res = cli("report", "digits_cnn", "--variants", "ft-bwn", "-o", tmp_path / "r")
    assert res.exit_code == 2 and "need --finetune" in res.stderr
    assert_one_line_error(cli("report", "-o", tmp_path / "r"), "give a MODEL or --config")
    (tmp_path / "bad.toml").write_text("[report]\ncolour = 1\n")
    assert_one_line_error(cli("report", "--config", tmp_path / "bad.toml"), "unknown keys colour")
    assert_one_line_error(cli("report", "nosuchmodel", "-o", tmp_path / "r"), "unknown model 'nosuchmodel'")


@needs_aarch64
def test_arm_report_latency_is_marked_emulated(tmp_path):
    result = run_report(
        ReportConfig("digits_cnn", "rpi4", ("fp32", "int8"), "digits", out=tmp_path / "rep", repeat=2), quiet=True
    )
    for r in result["rows"]:
        assert r["status"] == "ok", r
        assert r["latency_note"] == "emulated, not a speed figure" and r["quality_tvm"] == pytest.approx(
            r["quality"], abs=0.01
        )
    assert "emulated, not a speed figure" in (tmp_path / "rep" / "report.md").read_text()
    shutil.rmtree(tmp_path / "rep" / "cache")
