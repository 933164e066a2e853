"""What the runners that execute a helper program share (qemu, the C++ example): a leaf, so that they import it
without importing the runner registry (edgekit.runners), which imports them."""

from __future__ import annotations

import numpy as np

from edgekit.core.errors import EdgekitError


class ProgramRunner:
    """A runner that runs a helper program per call (qemu, the C++ example): subclasses define
    _invoke(feeds, warmup, repeat) -> (outputs, per-call ms, peak RSS MB)."""

    def _invoke(
        self, feeds: dict[str, np.ndarray], warmup: int, repeat: int
    ) -> tuple[dict[str, np.ndarray], list[float], float]:
        raise NotImplementedError

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._invoke(feeds, 0, 1)[0]

    def time(self, feeds: dict[str, np.ndarray], warmup: int, repeat: int) -> tuple[list[float], float]:
        _, times, rss = self._invoke(feeds, warmup, repeat)
        return times, rss


def checked_input(spec, value: np.ndarray) -> np.ndarray:
    """`value` as the contiguous array of the spec's dtype, or one error if its shape is not the compiled one
    (runners that hand buffers to C++ must check: the C side reads exactly the compiled byte size)."""
    arr = np.asarray(value, dtype=spec.dtype, order="C")  # not ascontiguousarray: it makes 0-d 1-d
    if tuple(arr.shape) != tuple(spec.shape):
        raise EdgekitError(
            f"input '{spec.name}' has shape {list(arr.shape)}, the artifact was compiled for {list(spec.shape)}",
            "recompile with --input-shape for this shape, or reshape the input",
        )
    return arr
