"""edgekit: torch -> ONNX -> compressed ONNX -> TVM artifact, validated against onnxruntime at every step."""

from __future__ import annotations

__version__ = "0.1.0"

from edgekit.core.errors import EdgekitError  # noqa: E402


def load(artifact_dir, threads: int = 0):
    """Load a compiled artifact directory; call it like a function: `edgekit.load("art/")(x)`."""
    from edgekit.runtime import load as _load

    return _load(artifact_dir, threads)


__all__ = ["EdgekitError", "load", "__version__"]
