"""Whole binary models vs their fp32 versions, compiled by edgekit, side by side in one run.

    python bench/binary_model.py [--threads 2] [--repeat 30] [--target x86_64-avx512] [--quick]

- ResNet-18 (random init) fp32 vs the same network binarized in XNOR mode (binary weights and
  activations, first conv and fc kept float): the speed question, not an accuracy one.
- binary_digits (trained, 99.3 %) packed to 1 bit vs the same network with its float ±α weights.
Each runtime in its own process (edgekit.bench), order alternated; TVM and onnxruntime both shown.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edgekit.bench import bench, merge
from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.compress import CompressOptions, compress_file
from edgekit.export import export_model

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--target", default="x86_64-avx512")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeat = 4 if args.quick else args.repeat
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in ("resnet18", "binary_digits"):
            fp32 = tmp / f"{name}.onnx"
            export_model(name, fp32)
            binary = tmp / f"{name}.1bit.onnx"
            compress_file(fp32, binary, CompressOptions(bits=1, binarize_mode="xnor"))
            arts = {}
            for label, src, xnor in (
                ("fp32", fp32, False),
                ("1-bit xnor", binary, True),
            ):  # fp32: float convs even for ±α weights
                art = tmp / f"{name}.{label.replace(' ', '_')}.art"
                result = compile_onnx(src, art, args.target, BuildOptions(threads=args.threads, xnor=xnor), quiet=True)
                assert result.validation.ok, (name, label, result.validation.to_json())
                arts[label] = art
            report = merge(
                [
                    bench(a, ("ort", "tvm"), threads=args.threads, warmup=3, repeat=repeat, rounds=2, quiet=True)
                    for a in arts.values()
                ]
            )
            p50 = {(r.model.split(".")[1], r.runtime): r.p50_ms for r in report.runs}
            row = {"model": name, "threads": args.threads, **{f"{m}_{rt}_ms": v for (m, rt), v in p50.items()}}
            row["tvm_fp32_over_tvm_1bit"] = p50[("fp32", "tvm")] / p50[("1-bit_xnor", "tvm")]
            rows.append(row)
            print(
                f"{name:14s} TVM fp32 {p50[('fp32', 'tvm')]:8.3f} ms | TVM 1-bit {p50[('1-bit_xnor', 'tvm')]:8.3f} ms "
                f"({row['tvm_fp32_over_tvm_1bit']:.1f}x faster) | ORT fp32 {p50[('fp32', 'ort')]:8.3f} ms | "
                f"ORT 1-bit graph {p50[('1-bit_xnor', 'ort')]:8.3f} ms",
                flush=True,
            )
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "binary_model.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
