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


def first_line(text: str, limit: int | None = 200, default: str = "?") -> str:
    """The first line of `text` once stripped (a command's or an error's headline), cut to `limit` characters
    (None: whole); `default` when `text` is blank."""
    lines = text.strip().splitlines()
    return (lines[0] if lines else default)[:limit]


def last_line(text: str, limit: int | None = 200, default: str = "?") -> str:
    """The last non-blank line of `text` (a child's stderr ends with the exception, its stdout with the JSON
    result), cut to `limit` characters (None: whole); `default` when `text` is blank."""
    lines = text.strip().splitlines()
    return (lines[-1] if lines else default)[:limit]


def message_line(exc: BaseException, limit: int | None = 200, first: bool = False) -> str:
    """The line of an exception's message that says what went wrong: the last non-empty one (TVM and onnx
    put the failed check last, after the context), or with `first` its headline (onnxruntime, torch put it
    first); cut to `limit` characters, the exception's type name when the message is empty."""
    return (first_line if first else last_line)(str(exc), limit, type(exc).__name__)
