"""The "every CPU" goals (AVX2-only and AVX-512 VNNI x86) measured on this machine in one run, side by side.

    python bench/every_cpu.py [--threads 2] [--quick]

Which goals apply depends on this CPU (printed first, with its ISA flags):
  demo     `edgekit demo` on targets x86_64 and host: every validation ok (both kinds of CPU)
  int8     ResNet-18 fp32 and int8 (`compress --bits 8 --target T --calib random`) in onnxruntime, TVM and
           OpenVINO, `edgekit bench` per target T in (x86_64, host). AVX2-only: TVM int8 <= onnxruntime int8 and
           <= 0.5x TVM fp32; AVX-512 VNNI: TVM int8 <= 0.33x TVM fp32 (target host)
  fp32     bench/cpu_vs_ort.py --target x86_64 --tuning tuning/ and bench/detector.py --target x86_64: TVM
           <= 1.0x onnxruntime on each model, tuned <= 0.8x onnxruntime and <= OpenVINO f32. On an AVX-512 host
           this times the AVX2 code against onnxruntime's AVX-512 kernels: stricter than the goal
  binary   bench/binary.py --ops conv (target host): XNOR conv >= 8x edgekit's fp32 conv, >= 15x onnxruntime's
Each runtime runs in its own process (edgekit.bench and the scripts above). Prints one line per goal
(measured, goal, met) and writes bench/results/every_cpu.<isa>.json with the host description and every row.
--quick: digits_cnn instead of ResNet-18, few repeats, no detector, no result file (checks the script, not
the numbers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekit.core.errors import last_line

HERE = Path(__file__).resolve().parent
EDGEKIT = [sys.executable, "-c", "from edgekit.cli import main; main()"]


def _run(cmd: list, what: str) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = last_line(proc.stderr, None)
        raise SystemExit(f"error: {what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def demo(target: str, tmp: Path, quick: bool) -> dict:
    out = _run(
        EDGEKIT
        + ["demo", "--target", target, "--workdir", tmp / f"demo-{target}", "--repeat", 20 if quick else 100, "--json"],
        f"demo --target {target}",
    )
    return {"target": target, "ok": bool(json.loads(out)["ok"])}


def int8_vs_fp32(model: str, target: str, threads: int, tmp: Path, quick: bool) -> dict:
    """p50 of the fp32 and int8 models per runtime, one `edgekit bench` run (runtimes alternated per round)."""
    fp32, int8 = tmp / f"{model}.onnx", tmp / f"{model}.int8.{target}.onnx"
    if not fp32.exists():
        _run(EDGEKIT + ["export", model, "-o", fp32], f"export {model}")
    _run(EDGEKIT + ["compress", fp32, "--bits", 8, "--calib", "random", "--target", target, "-o", int8], "compress")
    runtimes = "ort,tvm" + (",openvino" if _has("openvino") else "")
    out = _run(
        EDGEKIT
        + [
            "bench",
            fp32,
            int8,
            "--runtimes",
            runtimes,
            "--target",
            target,
            "--threads",
            threads,
            "--rounds",
            1 if quick else 3,
            "--repeat",
            5 if quick else 20,
            "--json",
        ],
        f"bench {model} on {target}",
    )
    p50 = {
        f"{'int8' if '.int8.' in r['model'] else 'fp32'}/{r['runtime']}": r["p50_ms"] for r in json.loads(out)["runs"]
    }
    return {"model": model, "target": target, "threads": threads, "p50_ms": p50}


def script_rows(script: str, args: list, tmp: Path) -> object:
    out = tmp / f"{script}.json"
    _run([sys.executable, HERE / f"{script}.py", *args, "--out", out], f"bench/{script}.py")
    return json.loads(out.read_text())


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def goals(host: dict, results: dict) -> list[dict]:
    """(goal, measured, threshold, met) for the results this CPU has goals for."""
    avx512_vnni = {"avx512f", "avx512vnni"} <= set(host["features"])
    rows = [
        {"goal": f"demo on {d['target']}: every validation ok", "measured": "ok" if d["ok"] else "FAIL", "met": d["ok"]}
        for d in results["demo"]
    ]

    def ratio(goal: str, value: float | None, limit: float, higher_is_better: bool = False) -> None:
        met = value is not None and (value >= limit if higher_is_better else value <= limit)
        rows.append({"goal": goal, "measured": None if value is None else round(value, 3), "limit": limit, "met": met})

    for r in results["int8"]:
        p = r["p50_ms"]
        if avx512_vnni and r["target"] == "host":
            ratio(f"{r['model']} int8 TVM / TVM fp32 ({r['target']}, VNNI)", p["int8/tvm"] / p["fp32/tvm"], 0.33)
        elif not avx512_vnni and r["target"] == "x86_64":
            ratio(f"{r['model']} int8 TVM / onnxruntime int8 ({r['target']})", p["int8/tvm"] / p["int8/ort"], 1.0)
            ratio(f"{r['model']} int8 TVM / TVM fp32 ({r['target']})", p["int8/tvm"] / p["fp32/tvm"], 0.5)
    for row in results["fp32"]:
        ratio(f"{row['model']} fp32 TVM / onnxruntime (x86_64)", row["tvm_over_ort"], 1.0)
        if "tvm_tuned_over_ort" in row:
            ratio(f"{row['model']} fp32 tuned TVM / onnxruntime (x86_64)", row["tvm_tuned_over_ort"], 0.8)
            if "tvm_tuned_over_openvino" in row:
                ratio(f"{row['model']} fp32 tuned TVM / OpenVINO (x86_64)", row["tvm_tuned_over_openvino"], 1.0)
    for row in results["binary"]:
        speedup = row.get("speedup_vs", {})
        ratio(f"binary conv {row['threads']} thr: XNOR speedup over edgekit fp32", speedup.get("tvm-sched"), 8.0, True)
        ratio(f"binary conv {row['threads']} thr: XNOR speedup over onnxruntime fp32", speedup.get("ort"), 15.0, True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="small models, few repeats, no result file")
    args = ap.parse_args()
    from edgekit.targets import TargetCaps, host_description

    host = host_description()
    print(f"host: {host['cpu']}, {host['cores']} cores, {host['arch']}: {' '.join(host['features'])}", flush=True)
    if not _has("openvino"):
        print("OpenVINO is not installed (pip install -e '.[bench]'): its columns and goals are left out", flush=True)
    model = "digits_cnn" if args.quick else "resnet18"
    quick = ["--quick"] if args.quick else []
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        results["demo"] = [demo(t, tmp, args.quick) for t in ("x86_64", "host")]
        results["int8"] = [int8_vs_fp32(model, t, args.threads, tmp, args.quick) for t in ("x86_64", "host")]
        zoo = ["--models", "digits_cnn"] if args.quick else ["--tuning", HERE.parent / "tuning"]
        results["fp32"] = script_rows(
            "cpu_vs_ort", ["--target", "x86_64", "--threads", args.threads, "--no-bare", *zoo, *quick], tmp
        )
        if not args.quick:
            results["fp32"].append(script_rows("detector", ["--target", "x86_64", "--threads", args.threads], tmp))
        results["binary"] = script_rows("binary", ["--ops", "conv", *quick], tmp)["rows"]
    checked = goals(host, results)
    for g in checked:
        limit = f"{'>=' if 'speedup' in g['goal'] else '<='} {g['limit']}" if "limit" in g else ""
        print(f"{'met    ' if g['met'] else 'NOT MET'}  {g['goal']:62s} {g['measured']!s:>8} {limit}", flush=True)
    if not args.quick:
        out = HERE / "results" / f"every_cpu.{TargetCaps.host().isa_class}.json"
        out.write_text(json.dumps({"host": host, "goals": checked, "results": results}, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
