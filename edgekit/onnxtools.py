"""onnxruntime sessions and onnxsim, for every stage that needs them (export, compile, validate, bench):
a leaf module, so that those stages import it one way."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import onnx

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError, last_line, message_line


@contextlib.contextmanager
def quiet():
    """torch.onnx and onnxsim print progress on stdout, which would corrupt `--json` output: swallow it."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def simplify(model: onnx.ModelProto, fixed_shapes: dict[str, list[int]] | None) -> tuple[onnx.ModelProto, bool]:
    """onnxsim with fixed shapes (TVM's importer needs Shape->Reshape chains folded). Returns (model, ok).

    onnxsim is native code that can die of a signal on a malformed graph (SIGFPE seen on a fuzzed model), so it
    runs in a child process: a crash there is one error line here, never the end of this process."""
    with tempfile.TemporaryDirectory(prefix="edgekit-onnxsim-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        proc = subprocess.run(
            [sys.executable, "-m", "edgekit.onnxtools", str(src), str(dst), json.dumps(fixed_shapes or {})],
            capture_output=True,
            text=True,
        )
        if proc.returncode < 0:
            raise EdgekitError(
                f"onnxsim crashed (signal {-proc.returncode}) simplifying the model: its shapes or attributes are "
                "inconsistent",
                "check the model with onnx.checker.check_model(model, full_check=True)",
            )
        if (
            proc.returncode != 0 or not dst.exists()
        ):  # onnxsim is an optimisation: say it did not apply, keep the export
            why = last_line(proc.stderr, 160)
            print(f"warning: onnxsim could not simplify the model ({why}); keeping it as exported", file=sys.stderr)
            return model, False
        return onnx.load(str(dst)), True


def _simplify_child(src: str, dst: str, shapes_json: str) -> int:
    import onnxsim

    shapes = json.loads(shapes_json) or None
    with quiet():
        simplified, ok = onnxsim.simplify(onnx.load(src), overwrite_input_shapes=shapes)
    if ok:
        onnx.save(simplified, dst)
    return 0


def ort_error_line(exc: BaseException) -> str:
    """onnxruntime's message without its "Load model from /tmp/... failed:" prefix, first line, bounded."""
    first = message_line(exc, None, first=True)
    return first.split(" failed:", 1)[-1].strip()[:240]


def _graph_only(path: Path) -> onnx.ModelProto | None:
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: onnxruntime's own load below reports it
        interrupts.check()
        return None


def weight_only_quantized(model: onnx.ModelProto) -> bool:
    """DequantizeLinear on weights and no QuantizeLinear on activations (int4 / int2 / weight-only int8)."""
    ops = {n.op_type for n in model.graph.node}
    return "DequantizeLinear" in ops and "QuantizeLinear" not in ops


def ort_session(model: onnx.ModelProto | str | Path, threads: int = 0, reference: bool = False):
    """An onnxruntime CPU session. `reference=True`: the session that judges a compiled model. For weight-only
    quantized graphs its QDQ selector rewrite is disabled: it turns DQ(weight) -> MatMul/Conv into kernels that
    quantize the activations too (measured: 2.9e-3 off onnx.reference on an int4 TF-style classifier, 2e-7
    without the rewrite), which is not what the graph says and not what TVM computes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    disabled = []
    if reference:
        graph = model if isinstance(model, onnx.ModelProto) else _graph_only(Path(model))
        if graph is not None and weight_only_quantized(graph):
            disabled = ["QDQSelectorActionTransformer"]
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's pybind errors (Fail, InvalidGraph, ...) reach the user as one line
        interrupts.check()
        what = "the model" if isinstance(model, onnx.ModelProto) else str(model)
        first = ort_error_line(exc)
        raise EdgekitError(
            f"onnxruntime cannot load {what}: {first}", "onnxruntime is the reference: the model must run there first"
        ) from None


if __name__ == "__main__":
    sys.exit(_simplify_child(*sys.argv[1:4]))
