"""onnxruntime sessions and onnxsim, for every stage that needs them (export, compile, validate, bench):
a leaf module, so that those stages import it one way."""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import onnx

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError, message_line


@contextlib.contextmanager
def quiet():
    """torch.onnx and onnxsim print progress on stdout, which would corrupt `--json` output: swallow it."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class _SimplifyServer:
    """One child process per edgekit process that runs onnxsim request after request.

    onnxsim is native code that can die of a signal on a malformed graph (SIGFPE seen on a fuzzed model), so it
    runs in a child process: a crash there is one error line here, never the end of this process. The child is
    kept between calls because starting it is most of the cost: `import onnxsim` takes ~5 s (its package imports
    torch and sympy), the simplification of a zoo model well under one. Requests and answers are JSON lines."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _started(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None or self._pid != os.getpid():
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "edgekit.onnxkit.tools", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # onnxsim's own chatter; errors come back in the answer
                text=True,
            )
            self._pid = os.getpid()
        return self._proc

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None and self._pid == os.getpid():
            proc.kill()
            proc.wait()

    def request(self, src: Path, dst: Path, shapes: dict) -> tuple[int | None, str]:
        """(signal number if the child died of one, else None; onnxsim's error line, "" if it succeeded)."""
        with self._lock:
            proc = self._started()
            try:
                proc.stdin.write(json.dumps({"src": str(src), "dst": str(dst), "shapes": shapes}) + "\n")
                proc.stdin.flush()
                answer = proc.stdout.readline()
            except BrokenPipeError:
                answer = ""
            except BaseException:  # an interrupt mid-request: the child's state is unknown
                self.stop()
                raise
            if not answer:
                code = proc.wait()
                self._proc = None
                return (-code if code < 0 else None), f"onnxsim's process exited with status {code}"
            return None, json.loads(answer)["error"]


_server = _SimplifyServer()
atexit.register(_server.stop)


def simplify(model: onnx.ModelProto, fixed_shapes: dict[str, list[int]] | None) -> tuple[onnx.ModelProto, bool]:
    """onnxsim with fixed shapes (TVM's importer needs Shape->Reshape chains folded). Returns (model, ok)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-onnxsim-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        signum, error = _server.request(src, dst, fixed_shapes or {})
        if signum is not None:
            raise EdgekitError(
                f"onnxsim crashed (signal {signum}) simplifying the model: its shapes or attributes are inconsistent",
                "check the model with onnx.checker.check_model(model, full_check=True)",
            )
        if error or not dst.exists():  # onnxsim is an optimisation: say it did not apply, keep the export
            why = error or "it gave no model"
            print(f"warning: onnxsim could not simplify the model ({why}); keeping it as exported", file=sys.stderr)
            return model, False
        return onnx.load(str(dst)), True


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


def _import_onnxsim_simplify():
    """onnxsim's `simplify` without its package __init__, which in onnxsim 0.8 imports torch, sympy and a hundred
    quantization modules (~5 s; the simplifier module alone ~2 s). Any other layout: the plain import."""
    import importlib.util
    import types

    try:
        spec = importlib.util.find_spec("onnxsim")
        package = types.ModuleType("onnxsim")
        package.__path__, package.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["onnxsim"] = package
        from onnxsim.onnx_simplifier import simplify as onnxsim_simplify

        return onnxsim_simplify
    except Exception:  # noqa: BLE001 - another onnxsim layout: import it the documented way
        for name in [m for m in sys.modules if m == "onnxsim" or m.startswith("onnxsim.")]:
            del sys.modules[name]
        import onnxsim

        return onnxsim.simplify


def _serve() -> int:
    """The child's loop: one JSON request per line on stdin, one answer per line on the original stdout (onnxsim's
    prints go to stderr, so they cannot corrupt an answer). Ctrl-C is the parent's to handle: it kills the child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    onnxsim_simplify = None
    for line in sys.stdin:
        request, error = json.loads(line), ""
        try:
            onnxsim_simplify = onnxsim_simplify or _import_onnxsim_simplify()
            with quiet():
                simplified, ok = onnxsim_simplify(
                    onnx.load(request["src"]), overwrite_input_shapes=request["shapes"] or None
                )
            if ok:
                onnx.save(simplified, request["dst"])
            else:
                error = "onnxsim's own check of the simplified model failed"
        except Exception as exc:  # noqa: BLE001 - any onnxsim failure is one line for the parent's warning
            error = f"{type(exc).__name__}: {message_line(exc, 160)}"
        answers.write(json.dumps({"error": error}) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_serve() if sys.argv[1:] == ["--serve"] else 2)
