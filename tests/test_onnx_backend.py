"""Models nobody here wrote: a small real sample of bench/onnx_backend.py's survey of onnx's own backend test models
(the whole survey, 149 models, ~45 min on 2 cores: `python bench/onnx_backend.py`; figures in README).

The sample is one model per kind of answer the survey gives: an opset-6 PyTorch 0.3 export onnxruntime cannot run
(PRelu(6) with a per-channel slope: converted by edgekit, checked against onnx.reference), a sequence model at
opset 12, a model whose output is NaN on the test's inputs (Sqrt), and an Expand whose shape is a graph input
(refused naming the node, with --freeze offered)."""

from __future__ import annotations

import bench_scripts
import pytest

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)


def _survey():
    return bench_scripts.load("onnx_backend")


SAMPLE = {
    "pytorch-converted/test_PReLU_2d_multiparam": ("ort_cannot", "matched"),
    "simple/test_sequence_model5": ("matched", None),
    "pytorch-operator/test_operator_sqrt": ("matched", None),
    "simple/test_expand_shape_model3": ("refused", None),
}


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    survey = _survey()
    todo = [c for c in survey.cases(list(survey.SUITES)) if c[0] in SAMPLE]
    assert len(todo) == len(SAMPLE), [c[0] for c in todo]
    return {c[0]: survey.survey_one(*c, timeout=600.0) for c in todo}


@pytest.mark.parametrize("model", SAMPLE)
def test_survey_sample(model, rows):
    row = rows[model]
    result, edgekit_result = SAMPLE[model]
    assert row["result"] == result, row
    if edgekit_result:
        assert row["edgekit"] == edgekit_result, row
    if result == "refused":
        assert "node 'test' (Expand)" in row["why"], row


def test_summary_leaves_what_onnxruntime_cannot_run_out_of_the_share():
    rows = [{"result": "matched"}, {"result": "refused"}, {"result": "ort_cannot", "edgekit": "matched"}]
    total = _survey().summary(rows)
    assert (total["ort_runs"], total["matched_share"], total["ort_cannot_but_edgekit_matched"]) == (2, 0.5, 1)
