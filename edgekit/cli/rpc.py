"""`edgekit rpc server | tracker | status`: TVM's own RPC, for running and timing artifacts on boards."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekit.cli.support import JsonOpt, TrackerOpt, emit_json, handle_errors, out

rpc_app = typer.Typer(
    help="TVM RPC server / tracker, for running and timing artifacts on boards.", no_args_is_help=True
)


@rpc_app.command("server")
@handle_errors
def rpc_server(
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind; 0.0.0.0 to accept other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 9090,
    key: Annotated[str, typer.Option("--key", help="Device key, e.g. rpi4.")] = "",
    tracker: TrackerOpt = None,
    threads: Annotated[int, typer.Option("--threads", help="TVM threads on this device (0 = all cores).")] = 0,
) -> None:
    """Serve this machine as a device (run it on the board). Example: edgekit rpc server --host 0.0.0.0 --key rpi4"""
    from edgekit.runners.rpc import serve

    serve(host, port, key, tracker, threads)


@rpc_app.command("tracker")
@handle_errors
def rpc_tracker(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 9190,
) -> None:
    """Run a tracker that boards register with and clients request by key."""
    from edgekit.runners.rpc import run_tracker

    run_tracker(host, port)


@rpc_app.command("status")
@handle_errors
def rpc_status(
    tracker: Annotated[str, typer.Option("--tracker", help="HOST:PORT")] = "127.0.0.1:9190", json_out: JsonOpt = False
) -> None:
    """Devices registered with a tracker, by key."""
    from edgekit.runners.rpc import tracker_summary

    summary = tracker_summary(tracker)
    if json_out:
        return emit_json(summary)
    for q in summary.get("queue_info", {}).items():
        out.print(f"{q[0]}: free {q[1].get('free')}, pending {q[1].get('pending')}")
