"""TVM vs onnxruntime latency for every zoo model, side by side in one run, same threads.

    python bench/zoo_latency.py [--models digits_cnn,resnet18] [--threads 2] [--repeat 20] [--quick]

Each runtime runs in its own process and the order alternates between rounds (edgekit.bench).
Writes bench/results/zoo_latency.{json,md}. Ratios are what to compare; absolute times are noisy.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgekit.bench import bench
from edgekit.compiler.build import compile_onnx
from edgekit.export import export_model
from edgekit.zoo import ZOO

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--target", default="x86_64")
    ap.add_argument("--quick", action="store_true", help="3 repeats, for CI: checks the script, not the numbers")
    ap.add_argument("--out", type=Path, default=RESULTS / "zoo_latency")
    args = ap.parse_args()
    repeat = 3 if args.quick else args.repeat
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            onnx_path, art = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.art"
            export_model(name, onnx_path)
            t0 = time.perf_counter()
            compiled = compile_onnx(onnx_path, art, args.target, quiet=True)
            compile_s = time.perf_counter() - t0
            report = bench(art, ("ort", "tvm"), threads=args.threads, warmup=2, repeat=repeat, rounds=2, quiet=True)
            ort, tvm = report.runs
            rows.append(
                {
                    "model": name,
                    "ort_p50_ms": ort.p50_ms,
                    "tvm_p50_ms": tvm.p50_ms,
                    "tvm_over_ort": tvm.p50_ms / ort.p50_ms,
                    "compile_s": compile_s,
                    "max_abs_vs_ort": compiled.validation.max_abs,
                    "schedules": compiled.meta["build"]["schedules"],
                    "threads": args.threads,
                }
            )
            print(f"{name:12s} ORT {ort.p50_ms:9.3f} ms  TVM {tvm.p50_ms:9.3f} ms  TVM/ORT {tvm.p50_ms / ort.p50_ms:6.2f}x  "
                  f"compile {compile_s:5.1f}s  max|err| {compiled.validation.max_abs:.1e}", flush=True)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
        lines = ["| model | ORT p50 ms | TVM p50 ms | TVM/ORT | compile s | max abs err | schedules |", "|---|---|---|---|---|---|---|"]
        lines += [
            f"| {r['model']} | {r['ort_p50_ms']:.3f} | {r['tvm_p50_ms']:.3f} | {r['tvm_over_ort']:.2f}× | {r['compile_s']:.1f} | "
            f"{r['max_abs_vs_ort']:.1e} | {r['schedules']} |"
            for r in rows
        ]
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
