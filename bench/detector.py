"""A 640x640 OCR-detector-shaped model (bench/models/dbnet_like.py): untuned compile time, and TVM vs onnxruntime
vs OpenVINO f32 latency, side by side (each runtime in its own process, order alternated).

    python bench/detector.py [--target x86_64-avx512] [--threads 2] [--repeat 20]

The model is edgekit's own stand-in written in the shape of PP-OCR/DBNet detectors (no third-party OCR model
can be downloaded on this machine); it goes through `edgekit export` like any user model file.
Writes bench/results/detector.<target>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

from edgekit.bench import bench
from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.export import export_model

HERE = Path(__file__).parent
MODEL = f"{HERE / 'models' / 'dbnet_like.py'}:make"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="x86_64-avx512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="results file (default bench/results/detector.<target>.json)")
    args = ap.parse_args()
    runtimes = ("ort", "tvm") + (("openvino",) if importlib.util.find_spec("openvino") else ())
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        onnx_path = tmp / "dbnet_like.onnx"
        export_model(MODEL, onnx_path)
        start = time.perf_counter()
        compiled = compile_onnx(onnx_path, tmp / "art", args.target, BuildOptions(threads=args.threads), quiet=True)
        wall = time.perf_counter() - start
        report = bench(
            tmp / "art", runtimes, threads=args.threads, warmup=3, repeat=args.repeat, rounds=args.rounds, quiet=True
        )
    p50 = {r.runtime: r.p50_ms for r in report.runs}
    row = {
        "model": "dbnet_like 1x3x640x640",
        "target": args.target,
        "threads": args.threads,
        **{f"{k}_p50_ms": v for k, v in p50.items()},
        "tvm_over_ort": p50["tvm"] / p50["ort"],
        "compile_wall_s": round(wall, 1),
        "build_s": compiled.meta["build"]["seconds"],
        "max_abs_vs_ort": compiled.validation.max_abs,
        "rules": compiled.meta["build"]["rule_per_function"],
    }
    if "openvino" in p50:
        row["openvino_over_ort"] = p50["openvino"] / p50["ort"]
    extra = f"  OpenVINO/ORT {row['openvino_over_ort']:.2f}x" if "openvino" in p50 else ""
    print(
        f"dbnet_like 640x640  ORT {p50['ort']:.2f} ms  TVM {p50['tvm']:.2f} ms  "
        f"TVM/ORT {row['tvm_over_ort']:.2f}x{extra}  "
        f"compile {wall:.1f}s wall (build {row['build_s']:.1f}s)  max|err| {row['max_abs_vs_ort']:.1e}"
    )
    out = args.out or HERE / "results" / f"detector.{args.target}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
