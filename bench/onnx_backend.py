"""Models nobody here wrote: every model in onnx's own backend test data that onnxruntime runs, through
`edgekit compile` (default target, validation against onnxruntime on the test's own inputs), as a user would.

    python bench/onnx_backend.py [--suites pytorch-converted,pytorch-operator,simple,light] [--jobs 2] [--out F]

The suites ship inside the onnx wheel (onnx/backend/test/data): `pytorch-converted` and `pytorch-operator` are
PyTorch 0.3/0.4-era exports (opsets 1-9: Conv, pools, BatchNorm, PReLU, Embedding, LSTM cells, ...), `simple`
holds sequence / Expand / string models, `light` the ONNX model zoo's classic CNNs (AlexNet, DenseNet-121,
Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet) with small stand-in weights.

Inputs with a dynamic dimension get `--input-shape` from the test's own arrays, as edgekit's refusal tells a
user to. Each model is classified by what `edgekit compile` did, in its own process:
  matched     exit 0, TVM within tolerance of onnxruntime on the test inputs
  mismatched  exit 1 (compiled, but TVM disagrees with onnxruntime)
  refused     exit 2 with one clear line (the line is recorded)
  internal    exit 3, a traceback, or any other exit
  signal      killed by a signal (a crash), or past --timeout
Models onnxruntime itself cannot load or run are listed as `ort_cannot` and left out of the share (edgekit
still compiles them: what it validates against onnx.reference instead is counted apart).
Prints one line per model and the share matched; writes every row (with the refusal lines) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import last_line
from edgekit.onnxkit.graph import fixed_shapes, random_inputs, real_inputs, resolve_input_specs

HERE = Path(__file__).resolve().parent
EDGEKIT = [sys.executable, "-c", "from edgekit.cli import main; main()"]
SUITES = ("pytorch-converted", "pytorch-operator", "simple", "light")
CLASSES = ("matched", "mismatched", "refused", "internal", "signal")


def backend_data() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data"


def cases(suites: list[str]) -> list[tuple[str, Path, list[Path]]]:
    """(name, model file, input .pb files) per test: node-style directories and `light`'s flat files."""
    found = []
    for suite in suites:
        root = backend_data() / suite
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and (entry / "model.onnx").exists():
                inputs = sorted((entry / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
                found.append((f"{suite}/{entry.name}", entry / "model.onnx", inputs))
            elif entry.suffix == ".onnx":  # light_*.onnx: no inputs stored; random ones of the declared shapes
                found.append((f"{suite}/{entry.stem}", entry, []))
    return found


def test_inputs(model_path: Path, input_files: list[Path]) -> dict[str, np.ndarray]:
    model = onnx.load(model_path, load_external_data=False)
    if input_files:
        arrays = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in input_files]
        return {vi.name: a for vi, a in zip(real_inputs(model), arrays)}
    return random_inputs(resolve_input_specs(model, fixed_shapes(model)), 0)  # edgekit's own test inputs


def dynamic_shape_flags(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[str]:
    """--input-shape for each input with a named dimension, from the test's own arrays: what edgekit's refusal
    of a dynamic shape tells a user to pass."""
    flags = []
    for vi in real_inputs(model):
        if any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim) and vi.name in feeds:
            flags += ["--input-shape", f"{vi.name}={','.join(str(d) for d in feeds[vi.name].shape)}"]
    return flags


def ort_runs(model_path: Path, feeds: dict[str, np.ndarray]) -> str | None:
    """None if onnxruntime loads and runs the model on these inputs, else why not (in a child process: a crash
    of onnxruntime must not end the survey)."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **feeds)
        code = (
            "import sys, numpy as np, onnxruntime as ort; "
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']);"
            "f = dict(np.load(sys.argv[2])); s.run(None, f)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(model_path), str(Path(tmp) / "in.npz")], capture_output=True, text=True
        )
    if proc.returncode == 0:
        return None
    return last_line(proc.stderr, 200, f"exit {proc.returncode}")


def classify(proc: subprocess.CompletedProcess | None) -> tuple[str, str]:
    if proc is None:
        return "signal", "timed out"
    lines = proc.stderr.strip().splitlines()
    if proc.returncode < 0:
        return "signal", f"signal {-proc.returncode}"
    if "Traceback (most recent call last)" in proc.stderr:
        return "internal", last_line(proc.stderr, None, "traceback")
    first_error = next((line for line in lines if line.startswith("error:")), lines[-1] if lines else "")
    if proc.returncode == 0:
        return "matched", ""
    return {1: "mismatched", 2: "refused"}.get(proc.returncode, "internal"), first_error[:300]


def survey_one(name: str, model_path: Path, input_files: list[Path], timeout: float) -> dict:
    row: dict = {"model": name}
    model = onnx.load(model_path, load_external_data=False)
    row["opset"] = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    row["ops"] = sorted({n.op_type for n in model.graph.node})
    try:
        feeds = test_inputs(model_path, input_files)
    except Exception as exc:  # an input .pb numpy cannot represent (strings, optional): onnxruntime's problem too
        row.update(result="ort_cannot", why=f"test inputs unreadable: {exc}"[:200])
        return row
    ort_why = ort_runs(model_path, feeds)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **feeds)
        cmd = EDGEKIT + [
            "compile",
            str(model_path),
            "-o",
            str(Path(tmp) / "art"),
            "--inputs",
            str(Path(tmp) / "in.npz"),
            "--json",
        ]
        cmd += dynamic_shape_flags(model, feeds)
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1"}
            )
        except subprocess.TimeoutExpired:
            proc = None
        row["seconds"] = round(time.perf_counter() - start, 1)
    row["result"], row["why"] = classify(proc)
    if ort_why is not None:  # still compiled: edgekit validates what onnxruntime lacks against onnx.reference
        row.update(edgekit=row["result"], edgekit_why=row["why"], result="ort_cannot", why=ort_why)
    if proc is not None and proc.returncode in (0, 1) and proc.stdout.strip():
        try:
            row["max_rel"] = max(o["max_rel"] for o in json.loads(proc.stdout)["validation"]["outputs"])
        except (ValueError, KeyError, TypeError):
            pass
    return row


def summary(rows: list[dict]) -> dict:
    judged = [r for r in rows if r["result"] != "ort_cannot"]
    counts = {c: sum(r["result"] == c for r in judged) for c in CLASSES}
    beyond = [r for r in rows if r["result"] == "ort_cannot" and "edgekit" in r]
    return {
        "models": len(rows),
        "ort_runs": len(judged),
        "ort_cannot": len(rows) - len(judged),
        **counts,
        "matched_share": round(counts["matched"] / len(judged), 4) if judged else None,
        "ort_cannot_but_edgekit_matched": sum(r["edgekit"] == "matched" for r in beyond),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--jobs", type=int, default=2, help="models compiled at once")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per compile before it counts as a hang")
    ap.add_argument("--only", default="", help="comma list of substrings: survey the matching models only")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "onnx_backend.json")
    args = ap.parse_args()
    todo = cases(args.suites.split(","))
    if args.only:
        todo = [c for c in todo if any(s in c[0] for s in args.only.split(","))]
    from edgekit.targets import host_description

    host = host_description()
    print(f"host: {host['cpu']}, {host['cores']} cores: {len(todo)} models, onnx {onnx.__version__}", flush=True)
    rows = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for row in pool.map(lambda c: survey_one(*c, args.timeout), todo):
            rows.append(row)
            extra = f" (edgekit: {row['edgekit']})" if "edgekit" in row else ""
            print(
                f"{row['result']:11s} {row['model']:58s} opset {row['opset']!s:>2}  {row.get('why', '')}{extra}",
                flush=True,
            )
    total = summary(rows)
    print(json.dumps(total))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"host": host, "onnx": onnx.__version__, "summary": total, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
