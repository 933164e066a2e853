"""Run an artifact on a board through TVM's own RPC (server on the board, optional tracker).

edgekit adds only what TVM's RPC lacks for this job: fast, clear errors for unreachable hosts, unique
upload names (re-uploading a name can crash a server child), and the Relax VM's stateful calls
(set_input / invoke_stateful / get_outputs), because tuple returns do not cross RPC.
"""

from __future__ import annotations

import errno
import signal
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from edgekit.core.errors import EdgekitError, first_line, last_line
from edgekit.runners.base import checked_input
from edgekit.runtime import LIBRARY, read_meta

CONNECT_TIMEOUT_S = 5.0


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise EdgekitError(f"bad {what} address '{text}'", "write it as HOST:PORT, e.g. 192.168.1.20:9090")
    return host, int(port)


def _check_reachable(host: str, port: int, what: str) -> None:
    """TVM retries unreachable hosts for a minute; fail in seconds with a useful line instead."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        hint = (
            "start one with `edgekit rpc tracker --host 0.0.0.0 --port 9190`"
            if what == "tracker"
            else "on the board run `edgekit rpc server --host 0.0.0.0 --port 9090` "
            "(or TVM's python -m tvm.exec.rpc_server)"
        )
        raise EdgekitError(
            f"cannot reach the RPC {what} at {host}:{port} ({exc.strerror or type(exc).__name__})", hint
        ) from None


def connect(rpc: str | None = None, tracker: str | None = None, key: str | None = None, timeout_s: int = 120):
    from tvm import rpc as tvm_rpc

    if tracker:
        if not key:
            raise EdgekitError(
                "--tracker needs --key (the device key the board registered with)",
                "e.g. --tracker HOST:9190 --key rpi4",
            )
        host, port = parse_address(tracker, "tracker")
        _check_reachable(host, port, "tracker")
        client = tvm_rpc.connect_tracker(host, port)
        keys = sorted(client.summary().get("queue_info", {}))
        if key not in keys:  # a request for an unknown key would block forever
            raise EdgekitError(
                f"no device with key '{key}' is registered at the tracker {tracker}",
                f"registered keys: {', '.join(keys) or 'none'}; "
                f"start one with `edgekit rpc server --tracker {tracker} --key {key}`",
            )
        try:
            return client.request(key, priority=1, session_timeout=timeout_s, max_retry=2)
        except Exception as exc:
            raise EdgekitError(
                f"the tracker at {tracker} gave no device for key '{key}': {first_line(str(exc), 150)}",
                "check `edgekit rpc status --tracker HOST:PORT` for registered keys",
            ) from None
    if not rpc:
        raise EdgekitError("no device given", "pass --rpc HOST:PORT or --tracker HOST:PORT --key KEY")
    host, port = parse_address(rpc, "server")
    _check_reachable(host, port, "server")
    try:
        return tvm_rpc.connect(host, port, key=key or "", session_timeout=timeout_s)
    except Exception as exc:
        raise EdgekitError(
            f"RPC handshake with {rpc} failed: {first_line(str(exc), 150)}",
            "a server registered with a tracker only serves through it: use --tracker HOST:PORT --key KEY",
        ) from None


class RpcRunner:
    label = "rpc"

    def __init__(self, artifact_dir: Path, session) -> None:
        from tvm.runtime.vm import VirtualMachine

        self.path = Path(artifact_dir)
        self.meta = read_meta(self.path)
        self.inputs, self.outputs = self.meta.inputs, self.meta.outputs
        self.session = session
        remote_name = f"edgekit-{uuid.uuid4().hex[:12]}.so"  # unique: re-uploading a name can crash the server child
        try:
            session.upload(str(self.path / LIBRARY), remote_name)
            self.device = session.cpu()
            self.vm = VirtualMachine(session.load_module(remote_name), self.device)
        except Exception as exc:
            raise EdgekitError(
                f"the device could not load {LIBRARY}: {last_line(str(exc))}",
                f"was the artifact compiled for this board? it targets {self.meta.target['name']}",
            ) from None

    def _set_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        import tvm

        arrays = []
        for spec in self.inputs:
            arrays.append(tvm.runtime.tensor(checked_input(spec, feeds[spec.name]), self.device))
        self.vm.set_input("main", *arrays)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._set_inputs(feeds)
        self.vm.invoke_stateful("main")
        result = self.vm.get_outputs("main")
        arrays = [result.numpy()] if hasattr(result, "numpy") else [r.numpy() for r in result]
        return {spec.name: arr for spec, arr in zip(self.outputs, arrays)}

    def time(self, feeds: dict[str, np.ndarray], warmup: int, repeat: int) -> tuple[list[float], float | None]:
        """Timed on the device by TVM's time evaluator (one call per sample); memory is not observable over RPC."""
        self._set_inputs(feeds)
        for _ in range(warmup):
            self.vm.invoke_stateful("main")
        evaluator = self.vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=repeat)
        return [t * 1e3 for t in evaluator("main").results], None


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_listen(host: str, port: int, key: str, what: str) -> None:
    """Refuse what would expose this machine or fail later inside TVM: a port outside 1-65535 (0 would make TVM
    pick one that nobody is told), a port in use, or a non-loopback interface without a --key (the server runs
    any library it is sent: exposed, it must at least not be the default, anonymous device)."""
    if not 1 <= port <= 65535:
        raise EdgekitError(f"--port {port} is not a TCP port", "choose one in 1-65535, e.g. 9090")
    if host not in LOOPBACK and what == "server" and not key:
        raise EdgekitError(
            f"--host {host} exposes this machine's RPC server, which runs any library it receives, and no --key is set",
            "pass --key NAME (the device key clients ask for), and expose it only on a trusted network",
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is already in use" if exc.errno in (errno.EADDRINUSE,) else f"cannot be bound ({exc.strerror})"
            raise EdgekitError(
                f"{host}:{port} {why}", "choose another --port or stop the process that holds it"
            ) from None


def serve(host: str, port: int, key: str, tracker: str | None, threads: int) -> None:
    """Run a TVM RPC server in the foreground until interrupted."""
    from tvm import rpc as tvm_rpc

    from edgekit.core.progress import warn
    from edgekit.runtime import set_threads

    check_listen(host, port, key, "server")
    if host not in LOOPBACK:
        warn(f"the RPC server listens on {host}:{port}: anyone who can reach it can run code on this machine")
    set_threads(threads)
    tracker_addr = parse_address(tracker, "tracker") if tracker else None
    if tracker_addr:
        _check_reachable(*tracker_addr, "tracker")
    with _deferred_signals() as pending:  # a SIGTERM/SIGINT while TVM starts its worker must still stop the worker
        server = tvm_rpc.Server(
            host=host, port=port, port_end=port + 1, key=key, tracker_addr=tracker_addr, silent=True
        )
    print(
        f"edgekit rpc server listening on {host}:{server.port} "
        f"(key '{key}'{', tracker ' + tracker if tracker else ''})",
        flush=True,
    )
    _block(server, pending)


def run_tracker(host: str, port: int) -> None:
    from tvm.rpc.tracker import Tracker

    check_listen(host, port, "", "tracker")
    with _deferred_signals() as pending:
        tracker = Tracker(host=host, port=port, port_end=port + 1, silent=True)
    print(f"edgekit rpc tracker listening on {host}:{tracker.port}", flush=True)
    _block(tracker, pending)


class _deferred_signals:
    """While TVM starts its worker process, SIGINT/SIGTERM are only recorded (a handler that raised there would
    leave the just-started worker orphaned and listening); _block acts on them once the worker is known."""

    def __enter__(self) -> list[int]:
        self.pending: list[int] = []
        self.previous = {
            sig: signal.signal(sig, lambda signum, _frame: self.pending.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        return self.pending

    def __exit__(self, *exc) -> None:
        def stop(*_):
            raise KeyboardInterrupt

        for sig in self.previous:
            signal.signal(sig, stop)  # from here on both end _block's loop, which stops the worker


def _block(proc_owner, pending: list[int]) -> None:
    """Wait until interrupted or terminated, then stop TVM's worker process (it would outlive us)."""
    try:
        if pending:
            raise KeyboardInterrupt
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proc_owner.terminate()


def tracker_summary(tracker: str) -> dict:
    from tvm import rpc as tvm_rpc

    host, port = parse_address(tracker, "tracker")
    _check_reachable(host, port, "tracker")
    return tvm_rpc.connect_tracker(host, port).summary()
