"""Progress on stderr (stdout stays clean for --json)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console

import edgekit.interrupts as interrupts

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
