"""Unit tests of the small pieces: shape parsing, tolerance maths, target files, atomic writes."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekit.core.errors import EdgekitError
from edgekit.core.fileio import atomic_dir
from edgekit.onnxkit.graph import parse_input_shapes, parse_shape
from edgekit.targets import load_target
from edgekit.validate import compare_outputs


@given(st.lists(st.integers(1, 4096), min_size=1, max_size=6))
def test_parse_shape_roundtrip(dims):
    assert parse_shape(",".join(map(str, dims))) == tuple(dims)
    assert parse_shape("x".join(map(str, dims))) == tuple(dims)


@pytest.mark.parametrize("bad", ["", "1,,2", "1,-3", "0,3", "a,b", "1.5,2"])
def test_parse_shape_rejects(bad):
    with pytest.raises(EdgekitError):
        parse_shape(bad)


def test_parse_input_shapes_named_and_bare():
    assert parse_input_shapes(["a=1,3", "b=2,2"]) == {"a": (1, 3), "b": (2, 2)}
    assert parse_input_shapes(["1,3,8,8"]) == {"": (1, 3, 8, 8)}
    assert parse_input_shapes(["a=1,3;b=4"]) == {"a": (1, 3), "b": (4,)}


@given(st.floats(1e-3, 1e3), st.floats(0, 1e-2))
def test_compare_outputs_tolerance_is_relative_to_scale(scale, noise):
    ref = np.linspace(-scale, scale, 101).astype(np.float32)
    got = ref + np.float32(noise * scale)
    report = compare_outputs({"y": ref}, {"y": got}, atol=0.0, rtol=1e-3)
    assert report.max_rel == pytest.approx(abs(float(got[0]) - float(ref[0])) / scale, rel=1e-2, abs=1e-7)
    assert report.ok == (report.outputs[0].max_abs <= 1e-3 * report.outputs[0].scale)


def test_compare_outputs_catches_shape_and_nan():
    assert not compare_outputs({"y": np.zeros(3)}, {"y": np.zeros(4)}).ok
    assert not compare_outputs({"y": np.zeros(3)}, {"y": np.array([0, np.nan, 0])}).ok
    assert compare_outputs({"y": np.arange(5)}, {"y": np.arange(5)}).max_abs == 0


def test_targets_and_aliases():
    assert load_target("x86").name == "x86_64"
    assert load_target("x86_64").tvm_target().attrs["mcpu"] == "x86-64-v3"
    with pytest.raises(EdgekitError, match="unknown target"):
        load_target("z80")


def test_atomic_dir_leaves_old_output_on_failure(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "old").write_text("kept")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new").write_text("half")
            raise RuntimeError("build failed")
    assert (out / "old").read_text() == "kept" and not (out / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_compare_outputs_agrees_on_the_same_nan_and_infinity_only():
    """sqrt / log of a negative input: NaN in onnxruntime and TVM alike is agreement; NaN or inf on one side is not."""
    ref = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    assert compare_outputs({"y": ref}, {"y": ref.copy()}).ok
    for wrong in (
        [1.0, 0.0, np.inf, -np.inf],
        [1.0, np.nan, 1.0, -np.inf],
        [np.nan, np.nan, np.inf, -np.inf],
        [1.0, np.nan, -np.inf, -np.inf],
    ):
        assert not compare_outputs({"y": ref}, {"y": np.array(wrong, np.float32)}).ok, wrong


def test_benchmark_warm_up_lasts_its_minimum_time_whatever_the_call_count(monkeypatch):
    from edgekit import measure

    monkeypatch.setattr(measure, "WARMUP_SECONDS", 0.05)
    calls = []
    start = time.perf_counter()
    times = measure._time_calls(lambda: calls.append(time.sleep(0.01)), warmup=0, repeat=3)
    assert time.perf_counter() - start >= 0.05 + 3 * 0.01
    assert len(times) == 3 and len(calls) >= 3 + 5  # >= 5 warm-up calls of 10 ms fill the 50 ms
