"""Binary (XNOR-popcount) conv2d / dense vs fp32 of the same shape: TVM default, TVM edgekit schedules, onnxruntime.

    python bench/binary.py [--threads 1,2] [--rounds 3] [--target host] [--quick]

--target x86_64 times the AVX2 kernels (and the AVX2 fp32 schedules) on any x86 host, e.g. an AVX-512 machine
standing in for an AVX2-only one; onnxruntime still uses the host's best ISA then.

Shapes: conv 3x3 256->256 14x14 pad 1 (batch 1), dense 4096->4096 (batch 1).
  xnor          edgekit's kernels via lower_binary_layers, timed through the Relax VM: sign + bit packing of
                the float input, the XNOR-popcount layer and its float epilogue (alpha, bias) all included
  tvm-default   fp32 layer, relax.build with no schedule (TVM 0.27 default: naive loops; few repeats)
  tvm-sched     fp32 layer through edgekit.compiler.build.build_module (edgekit's CPU pipeline)
  ort           fp32 layer in onnxruntime (intra_op_num_threads = threads)
Every (runtime, threads) runs in its own process (idle runtimes' thread pools would compete for the cores),
the order alternating between rounds; the table shows the median over rounds of per-process medians.
Ratios are what to compare: the machine is shared. Writes bench/results/binary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.core.errors import last_line

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"conv": (1, 256, 14, 14), "dense": (1, 4096)}
RUNTIMES = ("xnor", "tvm-sched", "ort", "tvm-default")
# default: this machine's own CPU (LLVM host detection: AVX-512 VPOPCNTDQ where present, else AVX2), never a
# hard-coded CPU model
DEFAULT_TARGET = "host"


# ----------------------------------------------------------------------------------------------------------
# Models (ONNX, built with onnx.helper): fp32 layer, and the binarized layer in edgekit's representation
# ----------------------------------------------------------------------------------------------------------


def fp32_model(op: str):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if op == "conv":
        w = rng.standard_normal((256, 256, 3, 3)).astype(np.float32) * 0.05
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
        out_shape = [1, 256, 14, 14]
    else:
        w = rng.standard_normal((4096, 4096)).astype(np.float32) * 0.02
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        out_shape = [1, 4096]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(rng.standard_normal(w.shape[0]).astype(np.float32), "b"),
    ]
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPES[op]))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def binary_model(op: str):
    """sign(x) -> binary layer (1-bit weights unpacked by standard ops) -> + bias, made by edgekit's own pass."""
    from edgekit.passes.binarize import BinarizeConfig, run

    packed, _ = run(fp32_model(op), BinarizeConfig(mode="xnor", keep=()))
    return packed


# ----------------------------------------------------------------------------------------------------------
# Workers (one runtime, one process)
# ----------------------------------------------------------------------------------------------------------


def _time_calls(fn, number: int, repeat: int) -> float:
    """Median over `repeat` batches of the mean time of `number` calls, in microseconds."""
    fn()
    per_call = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        per_call.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(per_call)


def _tvm_vm(op: str, kind: str, threads: int, target_name: str):
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from edgekit.targets import load_target

    target = load_target(target_name).tvm_target()
    model = binary_model(op) if kind == "xnor" else fp32_model(op)
    mod = relax.transform.FoldConstant()(
        from_onnx(model, shape_dict={"x": list(SHAPES[op])}, keep_params_in_input=False)
    )
    note = ""
    if kind == "xnor":
        from edgekit.compiler.relax_passes.binary import lower_binary_layers

        mod, report = lower_binary_layers(mod, target)
        assert [r["status"] for r in report] == ["lowered"], report
        ex = relax.build(mod, target=target)
    elif kind == "tvm-sched":
        from edgekit.compiler.build import build_module
        from edgekit.compiler.options import BuildOptions

        built = build_module(mod, load_target(target_name), BuildOptions(threads=threads))
        ex, note = built.executable, ",".join(sorted({r.rule for r in built.rules.values()}))
    else:
        ex = relax.build(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = tvm.runtime.tensor(np.random.default_rng(1).standard_normal(SHAPES[op]).astype(np.float32))
    main = vm["main"]
    return (lambda: main(x)), note


def _ort(op: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(fp32_model(op).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(1).standard_normal(SHAPES[op]).astype(np.float32)}
    return (lambda: sess.run(None, feeds)), ""


def worker(runtime: str, op: str, threads: int, quick: bool, target: str) -> dict:
    fn, note = _ort(op, threads) if runtime == "ort" else _tvm_vm(op, runtime, threads, target)
    if runtime == "tvm-default":
        number, repeat = 1, 3  # naive loops: 10-100 ms a call
    else:
        number, repeat = (20, 3) if quick else (200, 9)
    return {"us": _time_calls(fn, number, repeat), "note": note}


def _spawn(runtime: str, op: str, threads: int, quick: bool, target: str) -> dict:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--worker", runtime, "--op", op, "--threads", str(threads), "--target", target] + (
        ["--quick"] if quick else []
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = last_line(proc.stderr)
        return {"us": None, "note": f"failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--ops", default="conv,dense")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--target", default=DEFAULT_TARGET)
    ap.add_argument("--quick", action="store_true", help="few repeats, one round: checks the script, not the numbers")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/binary.<isa>.json; --quick: none)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--op", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.op, int(args.threads), args.quick, args.target)))
        return
    rounds = 1 if args.quick else args.rounds
    runtimes = args.runtimes.split(",")
    rows = []
    for op in args.ops.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            samples: dict[str, list[float]] = {r: [] for r in runtimes}
            notes: dict[str, str] = {}
            for rnd in range(rounds):
                order = runtimes if rnd % 2 == 0 else runtimes[::-1]
                for rt in order:
                    if rt == "tvm-default" and rnd > 0:
                        continue  # one round is plenty for a 100x slower baseline
                    res = _spawn(rt, op, threads, args.quick, args.target)
                    notes[rt] = res["note"]
                    if res["us"] is not None:
                        samples[rt].append(res["us"])
            med = {rt: statistics.median(v) if v else None for rt, v in samples.items()}
            row = {
                "op": op,
                "shape": list(SHAPES[op]),
                "threads": threads,
                "target": args.target,
                "us": med,
                "notes": notes,
            }
            if med.get("xnor"):
                row["speedup_vs"] = {rt: med[rt] / med["xnor"] for rt in runtimes if rt != "xnor" and med.get(rt)}
            rows.append(row)
            _print_row(row, runtimes)
    if args.quick and not args.out:
        return
    from edgekit.targets import TargetCaps, host_description

    isa = TargetCaps.host().isa_class
    out = args.out or RESULTS / (
        f"binary.{isa}.json" if args.target == DEFAULT_TARGET else f"binary.{args.target}-target.{isa}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": host_description(), "rows": rows}, indent=2))


def _print_row(row: dict, runtimes: list[str]) -> None:
    cells = []
    for rt in runtimes:
        us = row["us"].get(rt)
        ratio = row.get("speedup_vs", {}).get(rt)
        cells.append(f"{rt} {us:9.1f} us" + (f" ({ratio:5.1f}x)" if ratio else "") if us else f"{rt} {'n/a':>9s}    ")
    print(f"{row['op']:5s} {row['threads']} thr | " + " | ".join(cells), flush=True)
    for rt, note in row["notes"].items():
        if note.startswith("failed"):
            print(f"      {rt}: {note}", flush=True)


if __name__ == "__main__":
    main()
