"""onnxruntime sessions and onnxsim, for every stage that needs them (export, compile, validate, bench):
a leaf module, so that those stages import it one way."""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path

import onnx

from edgekit.errors import EdgekitError


@contextlib.contextmanager
def quiet():
    """torch.onnx and onnxsim print progress on stdout, which would corrupt `--json` output: swallow it."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def simplify(model: onnx.ModelProto, fixed_shapes: dict[str, list[int]] | None) -> tuple[onnx.ModelProto, bool]:
    """onnxsim with fixed shapes (TVM's importer needs Shape->Reshape chains folded). Returns (model, ok)."""
    import onnxsim

    try:
        with quiet():
            simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=fixed_shapes or None)
    except Exception as exc:  # onnxsim is an optimisation: say it did not apply, keep the exact export
        print(f"warning: onnxsim could not simplify the model ({type(exc).__name__}); keeping it as exported", file=sys.stderr)
        return model, False
    return (simplified, True) if ok else (model, False)


def ort_session(model: onnx.ModelProto | str | Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's pybind errors (Fail, InvalidGraph, ...) reach the user as one line
        what = "the model" if isinstance(model, onnx.ModelProto) else str(model)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first = first.split(" failed:", 1)[-1].strip()[:240]
        raise EdgekitError(f"onnxruntime cannot load {what}: {first}", "onnxruntime is the reference: the model must run there first") from None
