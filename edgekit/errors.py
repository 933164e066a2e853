"""The one error type users see. The CLI prints `error: <message>` and `hint: <hint>` and exits 2."""
from __future__ import annotations


class EdgekitError(Exception):
    """A user-facing failure: bad input, missing tool, unsupported model. Never a bug in edgekit."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


def message_line(exc: BaseException, limit: int = 200) -> str:
    """The line of an exception's message that says what went wrong: the last non-empty one (TVM and onnx
    put the failed check last, after the context), cut to `limit` characters."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:limit]
