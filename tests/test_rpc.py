"""TVM RPC on loopback with the local CPU as the device: a tracker, a server registered with it, a direct server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from test_errors import assert_one_line_error

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "rpc", *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until it prints "listening" (or dies)
    assert "listening" in line, line
    return proc


@pytest.fixture(scope="module")
def rpc_devices():
    tracker_port, server_port, direct_port = free_port(), free_port(), free_port()
    procs = [start("tracker", "--port", str(tracker_port))]
    procs.append(
        start("server", "--port", str(server_port), "--key", "loopback", "--tracker", f"127.0.0.1:{tracker_port}")
    )
    procs.append(start("server", "--port", str(direct_port), "--threads", "1"))
    time.sleep(0.5)  # registration with the tracker is asynchronous
    yield {"tracker": f"127.0.0.1:{tracker_port}", "direct": f"127.0.0.1:{direct_port}"}
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def test_validate_and_bench_through_tracker(rpc_devices, digits_artifact, cli):
    res = cli("rpc", "status", "--tracker", rpc_devices["tracker"], "--json")
    assert json.loads(res.stdout)["queue_info"]["loopback"]["free"] == 1
    res = cli("validate", digits_artifact, "--tracker", rpc_devices["tracker"], "--key", "loopback", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["outputs"][0]["max_abs"] <= 1e-4
    res = cli(
        "bench", digits_artifact, "--tracker", rpc_devices["tracker"], "--key", "loopback", "--repeat", "6", "--json"
    )
    assert res.exit_code == 0, res.stderr
    ort, tvm = json.loads(res.stdout)["runs"]
    assert tvm["target"] == "x86_64 (rpc loopback)" and tvm["samples"] == 6 and tvm["p50_ms"] > 0
    assert tvm["peak_rss_mb"] is None  # not observable over RPC, and not invented


def test_run_on_direct_server(rpc_devices, digits_artifact, cli, tmp_path):
    import numpy as np

    bundle = np.load(digits_artifact / "bundle.npz")
    np.save(tmp_path / "x.npy", bundle["input:input"])
    res = cli(
        "run", digits_artifact, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--rpc", rpc_devices["direct"]
    )
    assert res.exit_code == 0, res.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), bundle["output:output"], atol=1e-4)


def test_unreachable_and_unknown_key(rpc_devices, digits_artifact, cli):
    dead = f"127.0.0.1:{free_port()}"
    assert_one_line_error(cli("validate", digits_artifact, "--rpc", dead), "cannot reach the RPC server", dead)
    assert_one_line_error(
        cli("bench", digits_artifact, "--tracker", dead, "--key", "x"), "cannot reach the RPC tracker"
    )
    res = cli("validate", digits_artifact, "--tracker", rpc_devices["tracker"], "--key", "jetson")
    assert_one_line_error(res, "no device with key 'jetson'")
    assert "loopback" in res.stderr
    assert_one_line_error(cli("validate", digits_artifact, "--rpc", "nohostport"), "bad server address")


def test_tune_over_rpc_writes_a_database_compile_uses(rpc_devices, digits_onnx, cli, tmp_path):
    """Candidates built here, uploaded and timed on the 'board' (the loopback server) through the tracker."""
    res = cli(
        "tune",
        digits_onnx,
        "--tracker",
        rpc_devices["tracker"],
        "--key",
        "loopback",
        "--trials",
        "2",
        "-o",
        tmp_path / "tuning",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["tasks"] > 0 and report["timed"] == report["tasks"]
    db = json.loads(open(report["database"]).read())
    assert all(entry["default_us"] > 0 for entry in db["tasks"].values())  # timed remotely
    assert db["end_to_end"] is None or db["end_to_end"].get("device") == "rpc"
    res = cli("compile", digits_onnx, "-o", tmp_path / "art", "--tuning", tmp_path / "tuning", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["validation"]["ok"]
