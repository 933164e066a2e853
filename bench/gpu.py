"""TVM on an NVIDIA GPU vs PyTorch-CUDA (and onnxruntime-CUDA where installed), fp32 / fp16 / int8.

On a machine with a GPU and edgekit installed, end to end (build, validate, time):

    python bench/gpu.py all [--models resnet18,mobilenetv2] [--target cuda-sm90]

Where the GPU machine has PyTorch but no TVM compiler (the lent machines here: TVM's 100 MB wheel cannot travel),
in two halves, the artifacts built on any machine (no GPU needed) and only TVM's runtime taken along:

    python bench/gpu.py prepare DIR --target cuda-sm90 --tvm-ffi-wheel apache_tvm_ffi-...-cp312-...whl
    python bench/gpu.py run DIR          # on the GPU machine: PYTHONPATH=DIR/site, no edgekit compiler needed

Per model and precision: TVM's error vs onnxruntime (CPU, the numerical reference) relative to the output scale,
must be <= 1e-3 (fp32; fp16 and int8: the artifact's recorded tolerance), and p50 latency of TVM, PyTorch eager
on the GPU (same precision; int8 rows compare with PyTorch fp32) and onnxruntime's CUDA provider where present.
Timing: inputs already on the GPU, each call synchronized, each runtime in its own process.
Writes bench/results/gpu.<gpu>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ZOO_MODELS = ("digits_cnn", "resnet18", "mobilenetv2", "vit_tiny")
CORPUS_MODELS = ("tf_classifier", "yolo_like", "ocr_detector", "crnn", "audio_cnn", "token_model", "gru_kws")
PRECISIONS = {
    "digits_cnn": ("fp32", "fp16", "int8"),
    "resnet18": ("fp32", "fp16", "int8"),
    "mobilenetv2": ("fp32", "fp16", "int8"),
    "vit_tiny": ("fp32", "fp16"),
}
FP32_LIMIT = 1e-3  # the bar for a GPU build vs onnxruntime, relative to the output scale


# --- prepare: any machine with edgekit (no GPU) ---------------------------------------------------------------


def _onnx_for(name: str, tmp: Path) -> tuple[Path, dict]:
    from edgekit.export import export_model

    path = tmp / f"{name}.onnx"
    if name in ZOO_MODELS:
        export_model(name, path)
        return path, {}
    sys.path.insert(0, str(HERE.parent / "tests"))
    import onnx
    from realworld import build

    from edgekit.onnxkit.graph import fixed_shapes

    model = build(name)
    onnx.save(model, path)
    return path, fixed_shapes(model)


def prepare(out: Path, models: list[str], target: str, tvm_ffi_wheel: Path | None) -> list[dict]:
    """Every artifact for `target`, its reference inputs/outputs from onnxruntime (CPU), and a manifest."""
    from edgekit.compiler.build import compile_onnx
    from edgekit.compiler.options import BuildOptions
    from edgekit.compress import CompressOptions, compress_file
    from edgekit.onnxkit.graph import load_onnx, random_inputs, resolve_input_specs
    from edgekit.onnxkit.tools import ort_session

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in models:
        onnx_path, shapes = _onnx_for(name, out)
        for precision in PRECISIONS.get(name, ("fp32",)):
            source = onnx_path
            if precision == "int8":
                source = out / f"{name}.int8.onnx"
                calib = "digits" if name == "digits_cnn" else "random"
                compress_file(onnx_path, source, CompressOptions(bits=8, calib=calib), force=True)
            art = out / f"{name}.{precision}"
            opts = BuildOptions(precision="fp16" if precision == "fp16" else "fp32")
            t0 = time.perf_counter()
            result = compile_onnx(source, art, target, opts, input_shapes=shapes, quiet=True, force=True)
            specs = resolve_input_specs(load_onnx(source), shapes)
            feeds = random_inputs(specs, 0)
            session = ort_session(source, reference=True)
            outputs = session.run(None, feeds)
            np.savez(
                art / "reference.npz",
                **{f"input:{k}": v for k, v in feeds.items()},
                **{f"output:{i}": o for i, o in enumerate(outputs)},
            )
            tol = result.meta["build"]["tolerance"]
            entries.append(
                {
                    "model": name,
                    "precision": precision,
                    "artifact": art.name,
                    "onnx": source.name,
                    "torch": name if name in ZOO_MODELS else None,
                    "build_s": round(time.perf_counter() - t0, 1),
                    "limit": FP32_LIMIT if precision == "fp32" else tol["rtol"],
                    "validated_at_build": result.meta["validation"],
                }
            )
            print(f"prepared {name} {precision}: {result.meta['build']['rules']}", flush=True)
    (out / "manifest.json").write_text(json.dumps({"target": target, "entries": entries}, indent=2))
    if tvm_ffi_wheel:
        runtime_site(out / "site", tvm_ffi_wheel)
    return entries


def runtime_site(site: Path, tvm_ffi_wheel: Path) -> None:
    """TVM's runtime without its compiler (libtvm_compiler is 260 MB): the `tvm` package of this environment minus
    the compiler and headers, tvm_ffi from a wheel for the GPU machine's Python, edgekit's standalone runtime."""
    import tvm

    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(
        Path(tvm.__file__).parent,
        site / "tvm",
        ignore=shutil.ignore_patterns("libtvm_compiler.so", "3rdparty", "src", "include", "__pycache__"),
    )
    with zipfile.ZipFile(tvm_ffi_wheel) as wheel:
        wheel.extractall(
            site,
            [
                n
                for n in wheel.namelist()
                if n.startswith("tvm_ffi/") and "/include/" not in n and "/3rdparty/" not in n
            ],
        )
    shutil.copy(HERE.parent / "edgekit" / "runtime" / "lite.py", site / "edgekit_runtime_lite.py")


# --- run: the GPU machine (TVM runtime, PyTorch) -------------------------------------------------------------


def _worker(job: dict) -> dict:
    """One runtime, one model, in this process: outputs for the reference inputs and call times."""
    ref = dict(np.load(job["reference"]))
    feeds = {k.removeprefix("input:"): v for k, v in ref.items() if k.startswith("input:")}
    if job["runtime"] == "tvm":
        sys.modules.setdefault("torch", None)  # what a deployed runtime has: no torch
        try:
            from edgekit.runtime import lite
        except ImportError:  # the run half: only the standalone runtime travelled (runtime_site)
            import edgekit_runtime_lite as lite
        model = lite.load(job["artifact"])
        prepared = model.prepare(feeds)
        outputs = model._to_numpy(model.invoke(prepared))
        call = lambda: (model.invoke(prepared), model.synchronize())  # noqa: E731
    elif job["runtime"] == "torch":
        import torch

        sys.path.insert(0, str(HERE.parent))  # the checkout's edgekit (zoo definitions): not installed there
        from edgekit.zoo import load_model

        module = load_model(job["torch"]).module.cuda()
        x = torch.from_numpy(next(iter(feeds.values()))).cuda()
        if job["precision"] == "fp16":
            module, x = module.half(), x.half()
        with torch.no_grad():
            outputs = [module(x).float().cpu().numpy()]

            def call() -> None:
                with torch.no_grad():
                    module(x)
                torch.cuda.synchronize()
    else:  # ort-cuda
        import onnxruntime as ort

        session = ort.InferenceSession(job["onnx"], providers=["CUDAExecutionProvider"])
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda")
        session.run_with_iobinding(binding)
        outputs = [o.numpy() for o in binding.get_outputs()]
        call = lambda: session.run_with_iobinding(binding)  # noqa: E731
    for _ in range(job["warmup"]):
        call()
    times = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    want = [ref[k] for k in sorted((k for k in ref if k.startswith("output:")), key=lambda k: int(k.split(":")[1]))]
    scale = max(float(np.max(np.abs(w))) for w in want) or 1.0
    error = max(float(np.max(np.abs(np.asarray(g, np.float64) - w))) for g, w in zip(outputs, want)) / scale
    return {"p50_ms": float(np.median(times)), "rel_error": error}


def _in_process(job: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TVM_USE_RUNTIME_LIB="1"),
    )
    if proc.returncode != 0:
        # inline, not edgekit.core.errors.last_line: the run half has no edgekit on its path
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        return False


def run(root: Path, repeat: int) -> list[dict]:
    if shutil.which("nvidia-smi") is None:
        sys.exit("error: no NVIDIA GPU here (no nvidia-smi): run this half on the GPU machine")
    manifest = json.loads((root / "manifest.json").read_text())
    rows, ort_cuda = [], _ort_cuda()
    for e in manifest["entries"]:
        base = {
            "reference": str(root / e["artifact"] / "reference.npz"),
            "precision": e["precision"],
            "warmup": 10,
            "repeat": repeat,
        }
        tvm = _in_process(base | {"runtime": "tvm", "artifact": str(root / e["artifact"])})
        row = {
            "model": e["model"],
            "precision": e["precision"],
            "limit": e["limit"],
            "tvm": tvm,
            "ok": "rel_error" in tvm and tvm["rel_error"] <= e["limit"],
        }
        if e["torch"]:
            row["torch"] = _in_process(
                base
                | {
                    "runtime": "torch",
                    "torch": e["torch"],
                    "precision": "fp32" if e["precision"] == "int8" else e["precision"],
                }
            )
        if ort_cuda:
            row["ort_cuda"] = _in_process(base | {"runtime": "ort-cuda", "onnx": str(root / e["onnx"])})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _gpu_name() -> str:
    try:
        return (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            )
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown GPU"


def write_results(rows: list[dict], target: str) -> Path:
    gpu = _gpu_name()
    slug = gpu.lower().replace("nvidia", "").strip().replace(" ", "-") or "gpu"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gpu.{slug}.json"
    path.write_text(json.dumps({"gpu": gpu, "target": target, "rows": rows}, indent=2))
    fmt = lambda r, k: f"{r[k]['p50_ms']:.3f}" if k in r and "p50_ms" in r[k] else r.get(k, {}).get("error", "—")  # noqa: E731
    lines = [
        f"GPU: {gpu}, target {target}",
        "",
        "| model | precision | TVM p50 ms | PyTorch p50 ms | ORT-CUDA p50 ms | TVM/PyTorch | error/scale | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            f"{r['tvm']['p50_ms'] / r['torch']['p50_ms']:.2f}"
            if "p50_ms" in r.get("torch", {}) and "p50_ms" in r["tvm"]
            else "—"
        )
        err = f"{r['tvm']['rel_error']:.1e}" if "rel_error" in r["tvm"] else r["tvm"].get("error", "?")
        lines.append(
            f"| {r['model']} | {r['precision']} | {fmt(r, 'tvm')} | {fmt(r, 'torch')} | {fmt(r, 'ort_cuda')} | "
            f"{ratio} | {err} | {'yes' if r['ok'] else 'NO'} |"
        )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode in ("all", "prepare"):
        p = sub.add_parser(mode)
        p.add_argument("--models", default=",".join(ZOO_MODELS + CORPUS_MODELS))
        p.add_argument("--target", default="cuda-sm90")
        if mode == "prepare":
            p.add_argument("dir", type=Path)
            p.add_argument(
                "--tvm-ffi-wheel", type=Path, help="tvm_ffi wheel for the GPU machine's Python (runtime-only site)"
            )
        else:
            p.add_argument("--repeat", type=int, default=100)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("--repeat", type=int, default=100)
    sub.add_parser("worker").add_argument("job")
    args = ap.parse_args()
    if args.mode == "worker":
        print(json.dumps(_worker(json.loads(args.job))))
    elif args.mode == "prepare":
        prepare(args.dir, args.models.split(","), args.target, args.tvm_ffi_wheel)
    elif args.mode == "run":
        write_results(run(args.dir, args.repeat), json.loads((args.dir / "manifest.json").read_text())["target"])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            prepare(Path(tmp), args.models.split(","), args.target, None)
            write_results(run(Path(tmp), args.repeat), args.target)


if __name__ == "__main__":
    main()
