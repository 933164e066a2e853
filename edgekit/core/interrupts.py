"""Ctrl-C and SIGTERM that TVM cannot swallow.

A KeyboardInterrupt raised while TVM runs Python callbacks (Relax mutators, schedule rules, packed functions)
comes back out of TVM as a RuntimeError/TVMError, which the `except Exception` blocks around TVM calls would
record as "rewrite skipped" or "rule failed" and go on building. So the signal handler also sets a flag, and
every such block calls `check()` first: once a signal arrived, the interrupt is raised again, whatever TVM made
of it. Leaf module: the compiler and the CLI both import it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_pending: int | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that `finally` blocks remove temp outputs.
    A KeyboardInterrupt subclass because TVM stops at once only for that: measured with a plain BaseException,
    a SIGTERM during scheduling was lost inside TVM's C++ frames and the build ran on for 20 s."""


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    raise Terminated()


def _on_signal(signum: int, _frame) -> None:
    global _pending
    _pending = signum
    _raise_for(signum)


def check() -> None:
    """Raise the interrupt again if a signal arrived (call first in an `except Exception` around TVM)."""
    if _pending is not None:
        _raise_for(_pending)


def pending_exit_code() -> int | None:
    """130 after SIGINT, 143 after SIGTERM, None if no signal arrived."""
    return None if _pending is None else 128 + _pending


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the flagging handlers for SIGINT and SIGTERM (main thread only; elsewhere a no-op)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending = None
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending = None
