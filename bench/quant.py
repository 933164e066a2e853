"""Size, accuracy and latency per bit width, fp32 vs quantized, in onnxruntime and in TVM, side by side.

    python bench/quant.py [--model resnet18] [--threads 2] [--repeat 20] [--quick]

Accuracy is measured on the digits task (digits_cnn); latency and size on --model (default ResNet-18).
Every latency comes from edgekit.bench: each runtime in its own process, order alternated, same threads.
Writes bench/results/quant.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edgekit.bench import bench
from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.compress import CompressOptions, compress_file
from edgekit.export import export_model

RESULTS = Path(__file__).parent / "results"
VARIANTS = {"int8": CompressOptions(bits=8), "int4": CompressOptions(bits=4), "int2": CompressOptions(bits=2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--target", default="x86_64-avx512", help="TVM target (AVX-512 VNNI here: int8 uses vpdpbusd)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeat = 3 if args.quick else args.repeat
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        digits = tmp / "digits.onnx"
        export_model("digits_cnn", digits)
        big = tmp / f"{args.model}.onnx"
        export = export_model(args.model, big)
        calib = tmp / "calib.npz"
        rng = np.random.default_rng(0)
        np.savez(calib, input=rng.standard_normal((8, *export.input_shape)).astype(np.float32))
        fp32_lat = bench(big, ("ort",), threads=args.threads, warmup=3, repeat=repeat, quiet=True).runs[0]
        rows.append(
            {"variant": "fp32", "weight_ratio": 1.0, "file_mb": big.stat().st_size / 1e6, "ort_p50_ms": fp32_lat.p50_ms}
        )
        for name, opts in VARIANTS.items():
            acc = compress_file(
                digits,
                tmp / f"digits.{name}.onnx",
                CompressOptions(**{**opts.__dict__, "calib": "digits"}),
                eval_set="digits",
            )["accuracy"]
            out = tmp / f"{args.model}.{name}.onnx"
            res = compress_file(big, out, CompressOptions(**{**opts.__dict__, "calib": str(calib)}))
            lat = bench(out, ("ort",), threads=args.threads, warmup=3, repeat=repeat, quiet=True).runs[0]
            rows.append(
                {
                    "variant": name,
                    "weight_ratio": res["weight_ratio"],
                    "file_mb": res["file_bytes_after"] / 1e6,
                    "ort_p50_ms": lat.p50_ms,
                    "digits_fp32": acc["fp32_ort"],
                    "digits_ort": acc["compressed_ort"],
                    "digits_tvm": acc["compressed_tvm"],
                    "drop_pt": acc["drop_pt"],
                }
            )
        # TVM fp32 vs TVM int8 on the big model, side by side
        tvm_rows = {}
        for name in ("fp32", "int8"):
            src = big if name == "fp32" else tmp / f"{args.model}.int8.onnx"
            art = compile_onnx(src, tmp / f"art.{name}", args.target, BuildOptions(threads=args.threads), quiet=True)
            tvm_rows[name] = (
                bench(tmp / f"art.{name}", ("tvm",), threads=args.threads, warmup=2, repeat=repeat, quiet=True)
                .runs[0]
                .p50_ms
            )
            tvm_rows[name + "_max_abs_vs_ort"] = art.validation.max_abs
    base = rows[0]["ort_p50_ms"]
    for r in rows:
        r["ort_vs_fp32"] = r["ort_p50_ms"] / base
        print(
            f"{r['variant']:5s} weights {r['weight_ratio']:5.2f}x  file {r['file_mb']:7.2f} MB  "
            f"ORT {r['ort_p50_ms']:8.3f} ms "
            f"({r['ort_vs_fp32']:.2f}x fp32)"
            + (
                f"  digits fp32 {r['digits_fp32']:.2%} ORT {r['digits_ort']:.2%} TVM {r['digits_tvm']:.2%} "
                f"(drop {r['drop_pt']:.2f} pt)"
                if "drop_pt" in r
                else ""
            )
        )
    print(
        f"TVM {args.model}: fp32 {tvm_rows['fp32']:.1f} ms, int8 {tvm_rows['int8']:.1f} ms "
        f"({tvm_rows['int8'] / tvm_rows['fp32']:.2f}x)"
    )
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "quant.json").write_text(
            json.dumps(
                {"model": args.model, "threads": args.threads, "target": args.target, "rows": rows, "tvm": tvm_rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
