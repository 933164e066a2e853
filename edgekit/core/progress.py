"""Progress on stderr (stdout stays clean for --json)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator

from rich.console import Console

import edgekit.core.interrupts as interrupts

stderr = Console(stderr=True)


@contextlib.contextmanager
def steps(quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A spinner naming the current step; each finished step is printed with its duration."""
    if quiet:
        yield lambda _msg: interrupts.check()
        return
    state = {"msg": None, "t": time.perf_counter()}
    with stderr.status("") as status:

        def step(msg: str) -> None:
            interrupts.check()  # a signal TVM swallowed during the last step stops the command here
            if state["msg"]:
                stderr.print(f"[green]✓[/] {state['msg']} [dim]({time.perf_counter() - state['t']:.1f}s)[/]")
            state["msg"], state["t"] = msg, time.perf_counter()
            status.update(msg + "…")

        yield step
        if state["msg"]:
            stderr.print(f"[green]✓[/] {state['msg']} [dim]({time.perf_counter() - state['t']:.1f}s)[/]")


def warn(msg: str, quiet: bool = False) -> None:
    """One `warning:` line on stderr (also recorded in the output's metadata by the caller)."""
    if not quiet:
        stderr.print(f"[yellow]warning:[/] {msg}", highlight=False, soft_wrap=True)


def _fd_of(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # pytest / CliRunner capture objects have no descriptor
        return None


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """TVM's C++ writes LOG(WARNING) lines straight to file descriptor 2 ("Fast mode segfaults when there are
    out-of-bounds indices" while legalizing a Gather whose bounds edgekit checks itself): capture them into the
    yielded list (filled on exit, for meta.json) instead of the user's terminal. Python's own stderr (progress,
    warnings) stays where it was: sys.stderr moves to a copy of the original descriptor meanwhile."""
    import os
    import sys
    import tempfile

    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr, swapped = sys.stderr, _fd_of(sys.stderr) == 2
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        if swapped:
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
        try:
            yield lines
        finally:
            if swapped:
                sys.stderr.close()
                sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            # each message once, without TVM's "[hh:mm:ss] " prefix
            lines.extend(
                dict.fromkeys(re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", ln.strip()) for ln in text.splitlines() if ln.strip())
            )
