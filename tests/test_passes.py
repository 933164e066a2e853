"""passes/__init__.py (the module edgekit.passes): the reports every pass returns and the edgekit.passes metadata
that records what was applied. Named after the module, as the other test files are (test_compress.py tests the
registry these types are used in)."""

from __future__ import annotations

import onnx
import pytest
from onnx import helper

from edgekit.passes import LayerReport, PassReport, passes_applied, record_pass


def _report() -> PassReport:
    layers = [LayerReport("conv", "Conv", 8, 400, 100, sqnr_db=40.0), LayerReport("fc", "Gemm", None, 200, 200)]
    return PassReport("quantize8", size_before=1000, size_after=400, layers=layers, extra={"calibration": "random"})


def test_report_ratios_sum_the_layers():
    report = _report()
    assert report.ratio == 2.5
    assert (report.weight_bytes_before, report.weight_bytes_after) == (600, 300)
    assert PassReport("empty", 10, 0).ratio == 0.0  # no division by zero


def test_report_json_has_the_totals_the_layers_and_the_extra_keys():
    data = _report().to_json()
    assert {k: data[k] for k in ("pass", "size_before", "size_after", "ratio", "weight_ratio")} == {
        "pass": "quantize8",
        "size_before": 1000,
        "size_after": 400,
        "ratio": 2.5,
        "weight_ratio": 2.0,
    }
    assert data["layers"][0] == {
        "name": "conv",
        "op": "Conv",
        "bits": 8,
        "weight_bytes_before": 400,
        "weight_bytes_after": 100,
        "sqnr_db": 40.0,
        "note": "",
    }
    assert data["calibration"] == "random"  # extra is merged at the top level
    assert PassReport("no layers", 10, 5).to_json()["weight_ratio"] is None


def _model() -> onnx.ModelProto:
    return helper.make_model(helper.make_graph([], "g", [], []))


def test_record_pass_appends_in_order_and_passes_applied_reads_them():
    model = _model()
    assert passes_applied(model) == []
    record_pass(model, "prune-structured0.5")
    record_pass(model, "quantize8")
    assert passes_applied(model) == ["prune-structured0.5", "quantize8"]
    assert [(p.key, p.value) for p in model.metadata_props] == [("edgekit.passes", "prune-structured0.5,quantize8")]


@pytest.mark.parametrize(("stored", "applied"), [("", []), (",binarize,", ["binarize"]), ("a,,b", ["a", "b"])])
def test_empty_entries_are_skipped(stored: str, applied: list[str]):
    model = _model()
    model.metadata_props.add(key="edgekit.passes", value=stored)
    assert passes_applied(model) == applied
    record_pass(model, "lowrank")
    assert passes_applied(model) == [*applied, "lowrank"]
