"""onnxkit.tools.simplify: onnxsim in one long-lived child process that a crash cannot take this process down with."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tiny_onnx import Graph

import edgekit.onnxkit.tools as tools
from edgekit.core.errors import EdgekitError


def _shape_chain() -> object:
    """Shape -> Gather -> Reshape: what onnxsim folds to one constant shape for TVM's importer."""
    g = Graph((1, 4, 6, 6))
    g.op("Shape", ["x"], "shape")
    g.op("Gather", ["shape", g.const("zero", 0)], "batch", axis=0)
    g.op("Unsqueeze", ["batch", g.const("axes", [0])], "batch1")
    g.op("Concat", ["batch1", g.const("rest", [-1])], "target", axis=0)
    g.op("Reshape", ["x", "target"], "y")
    model = g.model("y")
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 144
    return model


def test_simplify_folds_shape_chains_in_one_child_kept_between_calls():
    first, ok = tools.simplify(_shape_chain(), {"x": [1, 4, 6, 6]})
    pid = tools._server._proc.pid
    second, ok2 = tools.simplify(_shape_chain(), {"x": [1, 4, 6, 6]})
    assert ok and ok2 and [n.op_type for n in first.graph.node] == ["Reshape"] == [n.op_type for n in second.graph.node]
    assert tools._server._proc.pid == pid


def test_a_dead_child_is_started_again():
    tools.simplify(_shape_chain(), None)
    tools._server._proc.kill()
    tools._server._proc.wait()
    assert tools.simplify(_shape_chain(), None)[1]


def test_a_child_killed_by_a_signal_mid_request_is_one_error(monkeypatch):
    crashing = subprocess.Popen(
        [sys.executable, "-c", "import os, signal, sys; sys.stdin.readline(); os.kill(os.getpid(), signal.SIGFPE)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    monkeypatch.setattr(tools._server, "_started", lambda: crashing)
    with pytest.raises(EdgekitError, match=r"onnxsim crashed \(signal 8\)"):
        tools.simplify(_shape_chain(), None)


def test_an_onnxsim_error_keeps_the_model_and_says_why(capsys):
    model = _shape_chain()
    kept, ok = tools.simplify(model, {"not_an_input": [1]})
    assert not ok and kept is model
    warning = capsys.readouterr().err
    assert warning.startswith("warning: onnxsim could not simplify the model (") and warning.count("\n") == 1
