"""TVM (edgekit default schedules) vs onnxruntime vs OpenVINO f32, and TVM's bare pipeline, per zoo model.

    python bench/cpu_vs_ort.py [--models digits_cnn,resnet18] [--threads 2] [--repeat 40] [--rounds 4] [--quick]

Same thread count for every runtime; each runtime in its own process, order alternated between rounds
(edgekit.bench). OpenVINO runs if `pip install openvino` is present. Models with Winograd convs are also
timed with direct convs only (`compile --no-winograd`). The bare TVM build (no schedules)
is timed with few repeats: it is 10-100x slower. Writes bench/results/cpu_vs_ort.{json,md}.
Ratios are what to compare; absolute times on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

from edgekit.bench import bench
from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.compiler.tuning.db import load_database
from edgekit.export import export_model
from edgekit.targets import load_target
from edgekit.zoo import ZOO

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--target", default="x86_64")
    ap.add_argument("--no-bare", action="store_true", help="skip timing TVM without schedules")
    ap.add_argument("--tuning", type=Path, help="tuning database dir (e.g. tuning/): adds a tuned TVM column")
    ap.add_argument("--quick", action="store_true", help="few repeats, for CI: checks the script, not the numbers")
    ap.add_argument(
        "--out", type=Path, help="results file (default bench/results/cpu_vs_ort.<target>.json; --quick: none)"
    )
    args = ap.parse_args()
    repeat, rounds = (4, 2) if args.quick else (args.repeat, args.rounds)
    runtimes = ("ort", "tvm") + (("openvino",) if importlib.util.find_spec("openvino") else ())
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.models.split(","):
            onnx_path = tmp / f"{name}.onnx"
            export_model(name, onnx_path)
            compiled = compile_onnx(
                onnx_path, tmp / f"{name}.art", args.target, BuildOptions(threads=args.threads), quiet=True
            )
            report = bench(
                tmp / f"{name}.art", runtimes, threads=args.threads, warmup=3, repeat=repeat, rounds=rounds, quiet=True
            )
            p50 = {r.runtime: r.p50_ms for r in report.runs}
            row = {
                "model": name,
                "threads": args.threads,
                **{f"{k}_p50_ms": v for k, v in p50.items()},
                "tvm_over_ort": p50["tvm"] / p50["ort"],
                "compile_s": compiled.meta["build"]["seconds"],
                "max_abs_vs_ort": compiled.validation.max_abs,
                "rules": compiled.meta["build"]["rules"],
            }
            if "openvino" in p50:
                row["openvino_over_ort"] = p50["openvino"] / p50["ort"]
                row["tvm_over_openvino"] = p50["tvm"] / p50["openvino"]
            timing = {"threads": args.threads, "repeat": repeat, "rounds": rounds}
            if args.tuning:
                database = load_database(args.tuning, load_target(args.target).tvm_target())
                row["tvm_tuned_over_ort"] = _tvm_over_ort(
                    onnx_path,
                    tmp / f"{name}.tuned",
                    args.target,
                    timing,
                    BuildOptions(threads=args.threads, tuning=database),
                )
                if "openvino" in p50:
                    row["tvm_tuned_over_openvino"] = row["tvm_tuned_over_ort"] / row["openvino_over_ort"]
            if any(
                "winograd" in rule for rule in compiled.meta["build"]["rules"]
            ):  # the same build with direct convs only
                row["tvm_direct_over_ort"] = _tvm_over_ort(
                    onnx_path,
                    tmp / f"{name}.direct",
                    args.target,
                    timing,
                    BuildOptions(threads=args.threads, winograd=False),
                )
            if not args.no_bare and not args.quick:  # 10-100x slower: few repeats
                row["tvm_bare_over_ort"] = _tvm_over_ort(
                    onnx_path,
                    tmp / f"{name}.bare",
                    args.target,
                    dict(timing, warmup=1, repeat=4, rounds=2),
                    BuildOptions(schedules="none"),
                )
            rows.append(row)
            extra = (
                f"  OpenVINO/ORT {row['openvino_over_ort']:.2f}x  TVM/OpenVINO {row['tvm_over_openvino']:.2f}x"
                if "openvino" in p50
                else ""
            )
            bare_s = f"  bare TVM/ORT {row['tvm_bare_over_ort']:.1f}x" if "tvm_bare_over_ort" in row else ""
            bare_s += f"  tuned TVM/ORT {row['tvm_tuned_over_ort']:.2f}x" if "tvm_tuned_over_ort" in row else ""
            bare_s += f"  direct-conv TVM/ORT {row['tvm_direct_over_ort']:.2f}x" if "tvm_direct_over_ort" in row else ""
            print(
                f"{name:12s} ORT {p50['ort']:8.3f} ms  TVM {p50['tvm']:8.3f} ms  "
                f"TVM/ORT {row['tvm_over_ort']:.2f}x{extra}{bare_s}  "
                f"compile {row['compile_s']:.1f}s  max|err| {row['max_abs_vs_ort']:.1e}",
                flush=True,
            )
    out = args.out or (None if args.quick else RESULTS / f"cpu_vs_ort.{args.target}.json")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))


def _tvm_over_ort(onnx_path: Path, art: Path, target: str, timing: dict, opts: BuildOptions) -> float:
    """Compile one more variant of the model, then TVM p50 / ORT p50 timed side by side (edgekit.bench)."""
    compile_onnx(onnx_path, art, target, opts, quiet=True)
    report = bench(art, ("ort", "tvm"), quiet=True, **{"warmup": 3, **timing})
    p50 = {r.runtime: r.p50_ms for r in report.runs}
    return p50["tvm"] / p50["ort"]


if __name__ == "__main__":
    main()
