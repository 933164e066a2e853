"""The real-world corpus (tests/realworld.py) at realistic sizes: edgekit's default build vs onnxruntime, side by
side, each runtime in its own process (edgekit.bench), plus compile time and the error vs onnxruntime.

    python bench/realworld.py [--models yolo_like,crnn] [--threads 2] [--target host] [--quick]

The target defaults to `host` (this CPU's own ISA: AVX-512 where it has it), since onnxruntime picks its
kernels for this CPU too; `--target x86_64` measures the portable AVX2 build.

Sizes: the YOLO-style detector at 320², the DB-style OCR detector at 640², the TF-style classifier at 224², a
CRNN recognizer at width 160 with a 256-wide (and a 512-wide) bidirectional LSTM, the audio front end on 1 s at \
16 kHz, a GRU
keyword spotter over 49 frames (hidden 128), a 128-token model. The detector and OCR models are built here with
their patterns at small channel counts (not YOLOv8n's or DBNet's exact widths). Writes
bench/results/realworld.<cpu>.json; every row records the host CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import onnx

from edgekit.bench import bench
from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.onnxkit.graph import fixed_shapes
from edgekit.targets import TargetCaps, host_description

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the corpus builders live beside their tests
from realworld import CORPUS, TRANSFORMERS, build  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SIZES = {
    "tf_classifier": {"size": 224},
    "yolo_like": {"size": 320},
    "ocr_detector": {"size": 640},
    "crnn": {"size": 160, "hidden": 256},
    "audio_cnn": {"size": 16000},
    "token_model": {"size": 128},
    "gru_kws": {"size": 49, "hidden": 128},
    "bert_encoder": {"size": 128, "hidden": 256},
}
VARIANTS = {"crnn_h512": ("crnn", {"size": 160, "hidden": 512})}  # extra rows: a corpus model at another size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join([*CORPUS, *TRANSFORMERS, *VARIANTS]))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target", default="host")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--quick", action="store_true", help="test sizes and few repeats: checks the script, not the numbers"
    )
    args = ap.parse_args()
    repeat, rounds = (3, 1) if args.quick else (args.repeat, args.rounds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.models.split(","):
            builder, sizes = VARIANTS.get(name, (name, SIZES.get(name, {})))
            model = build(builder, **({} if args.quick else sizes))
            path = tmp / f"{name}.onnx"
            onnx.save(model, path)
            shapes = fixed_shapes(model)
            t0 = time.perf_counter()
            compiled = compile_onnx(
                path,
                tmp / f"{name}.art",
                args.target,
                BuildOptions(threads=args.threads),
                input_shapes=shapes,
                quiet=True,
            )
            compile_s = time.perf_counter() - t0
            report = bench(
                tmp / f"{name}.art",
                ("ort", "tvm"),
                threads=args.threads,
                warmup=3,
                repeat=repeat,
                rounds=rounds,
                quiet=True,
            )
            p50 = {r.runtime: r.p50_ms for r in report.runs}
            ops = sorted({n.op_type for n in model.graph.node})
            row = {
                "model": name,
                "target": args.target,
                "input": {k: list(v) for k, v in shapes.items()},
                "threads": args.threads,
                "ort_p50_ms": p50["ort"],
                "tvm_p50_ms": p50["tvm"],
                "tvm_over_ort": p50["tvm"] / p50["ort"],
                "compile_s": round(compile_s, 1),
                "max_abs_vs_ort": compiled.validation.max_abs,
                "validated": compiled.validation.ok,
                "ops": ops,
            }
            rows.append(row)
            print(
                f"{name:14s} ORT {p50['ort']:9.3f} ms  TVM {p50['tvm']:9.3f} ms  TVM/ORT {row['tvm_over_ort']:.2f}x  "
                f"compile {compile_s:5.1f}s  max|err| {row['max_abs_vs_ort']:.1e}  ok={row['validated']}",
                flush=True,
            )
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        isa = "avx512" if "avx512f" in TargetCaps.host().features else "avx2"
        out = RESULTS / f"realworld.{args.target}.x86_64-{isa}.json"
        out.write_text(json.dumps({"host": host_description(), "rows": rows}, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
