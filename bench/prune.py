"""What each kind of pruning buys: file size, weight bytes, latency in onnxruntime and in edgekit's TVM build
(dense vs pruned, side by side, each runtime in its own process) and digits accuracy.

    python bench/prune.py [--models resnet18,mobilenetv2] [--ratios 0.3,0.5,0.7] [--threads 2] [--quick]
    python bench/prune.py --sparse-only [--sparse-models mobilenetv2,vit_tiny,bert_encoder]

Structured rows remove channels (training-free, L2 + BN criterion, per group); unstructured rows zero weights
(mask storage): their latency is the dense model's, which the table shows rather than claims. The sparse rows
prune 1x8 blocks (--prune-block 8), which edgekit's TVM build runs as block-sparse kernels per layer where they pay:
TVM with that rule vs the same model built --no-sparse vs onnxruntime, one run, each runtime in its own process. \
Accuracy comes
from the digits CNN (training-free, no finetune). Writes bench/results/prune.x86_64-<isa>.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnx

from edgekit.bench import bench
from edgekit.compress import CompressOptions, compress_file
from edgekit.export import export_model
from edgekit.onnxkit.graph import fixed_shapes
from edgekit.targets import TargetCaps, host_description

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the corpus builders live beside their tests
import realworld  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CORPUS_SIZES = {"bert_encoder": {"size": 128, "hidden": 256}}  # sparse-row models built by tests/realworld.py


def timed(path: Path, target: str, threads: int, repeat: int, rounds: int, runtimes=("ort", "tvm")) -> dict[str, float]:
    report = bench(path, runtimes, threads=threads, warmup=3, repeat=repeat, rounds=rounds, target=target, quiet=True)
    return {r.runtime: r.p50_ms for r in report.runs}


def latency_rows(model: str, ratios: list[float], target: str, args, tmp: Path) -> list[dict]:
    src = tmp / f"{model}.onnx"
    export_model(model, src)
    dense = timed(src, target, args.threads, args.repeat, args.rounds)
    rows = [
        {
            "model": model,
            "variant": "dense",
            "file_mb": src.stat().st_size / 1e6,
            "ort_ms": dense["ort"],
            "tvm_ms": dense["tvm"],
            "ort_speedup": 1.0,
            "tvm_speedup": 1.0,
        }
    ]
    variants = [(f"structured {r:.0%}", CompressOptions(bits=None, prune=r, structured=True)) for r in ratios]
    variants.append(("structured 50% + int8", CompressOptions(bits=8, prune=0.5, structured=True, calib="random")))
    variants.append(("int8", CompressOptions(bits=8, calib="random")))
    variants += [(f"unstructured {r:.0%}", CompressOptions(bits=None, prune=r)) for r in (0.5, 0.9)]
    variants.append(("2:4", CompressOptions(bits=None, nm="2:4")))
    variants.append(("low-rank 0.9 energy", CompressOptions(bits=None, rank_energy=0.9)))
    for name, opts in variants:
        out = tmp / f"{model}.{name.replace(' ', '_').replace('%', '').replace(':', '-')}.onnx"
        res = compress_file(src, out, opts)
        changes_shapes = opts.structured or opts.bits or opts.factorizes  # unstructured zeros: TVM runs the dense model
        p50 = timed(out, target, args.threads, args.repeat, args.rounds, ("ort", "tvm") if changes_shapes else ("ort",))
        row = {
            "model": model,
            "variant": name,
            "file_mb": out.stat().st_size / 1e6,
            "weight_ratio": res["weight_ratio"],
            "ort_ms": p50["ort"],
            "ort_speedup": dense["ort"] / p50["ort"],
        }
        if "tvm" in p50:
            macs = res["passes"][0].get("macs_before"), res["passes"][0].get("macs_after")
            row |= {
                "tvm_ms": p50["tvm"],
                "tvm_speedup": dense["tvm"] / p50["tvm"],
                "macs_ratio": macs[0] / macs[1] if all(macs) else None,
            }
        rows.append(row)
        print(
            f"{model:12s} {name:17s} file {row['file_mb']:7.2f} MB  "
            f"ORT {row['ort_ms']:8.2f} ms ({row['ort_speedup']:.2f}x)"
            + (f"  TVM {row['tvm_ms']:8.2f} ms ({row['tvm_speedup']:.2f}x)" if "tvm_ms" in row else "")
            + (f"  MACs {row['macs_ratio']:.2f}x fewer" if row.get("macs_ratio") else ""),
            flush=True,
        )
    return rows


def sparse_rows(model: str, target: str, args, tmp: Path) -> list[dict]:
    """1x8-block pruning at 90% (sparse kernels) and 50% (below the break-even: the rule keeps dense), and 2:4 (the
    2:4 kernel on x86): TVM with the per-layer rule vs the same pruned model built --no-sparse vs onnxruntime, and
    the weight bytes of each build."""
    from edgekit.compiler.build import compile_onnx
    from edgekit.compiler.options import BuildOptions
    from edgekit.runtime import LIBRARY, read_meta

    src = tmp / f"{model}.onnx"
    shapes = None
    if model in CORPUS_SIZES:  # a corpus builder (tests/realworld.py) at its benchmark size, batch fixed to 1
        built = realworld.build(model, **({} if args.quick else CORPUS_SIZES[model]))
        onnx.save(built, src)
        shapes = fixed_shapes(built)
    elif not src.exists():
        export_model(model, src)
    rows = []
    variants = [(f"1x8 blocks {r:.0%}", CompressOptions(bits=None, prune=r, prune_block=8)) for r in (0.9, 0.5)]
    variants.append(("2:4", CompressOptions(bits=None, nm="2:4")))
    for variant, opts in variants:
        tag = variant.replace(" ", "_").replace("%", "").replace(":", "-")
        pruned = tmp / f"{model}.{tag}.onnx"
        compress_file(src, pruned, opts, force=True, input_shapes=shapes)
        arts = {}
        for name, sparse in (("rule", True), ("dense", False)):
            arts[name] = tmp / f"{model}.{tag}.{name}"
            build_opts = BuildOptions(threads=args.threads, sparse=sparse)
            compile_onnx(pruned, arts[name], target, build_opts, input_shapes=shapes, quiet=True, force=True)
        both = bench(
            arts["rule"],
            ("ort", "tvm"),
            threads=args.threads,
            warmup=3,
            repeat=args.repeat,
            rounds=args.rounds,
            onnx_path=pruned,
            quiet=True,
        )
        dense = bench(
            arts["dense"],
            ("tvm",),
            threads=args.threads,
            warmup=3,
            repeat=args.repeat,
            rounds=args.rounds,
            onnx_path=pruned,
            quiet=True,
        )
        p50 = {r.runtime: r.p50_ms for r in both.runs} | {"tvm_dense": dense.runs[0].p50_ms}
        metas = {k: read_meta(a).raw["build"] for k, a in arts.items()}
        layers = metas["rule"]["sparse_layers"]
        row = {
            "model": model,
            "variant": variant,
            "sparse_layers": sum(l["kernel"] != "dense" for l in layers),
            "pruned_layers": len(layers),
            "ort_ms": p50["ort"],
            "tvm_dense_ms": p50["tvm_dense"],
            "tvm_ms": p50["tvm"],
            "tvm_over_dense": p50["tvm_dense"] / p50["tvm"],
            "tvm_over_ort": p50["ort"] / p50["tvm"],
            "weight_bytes": metas["rule"]["memory"].get("weight_bytes"),
            "dense_weight_bytes": metas["dense"]["memory"].get("weight_bytes"),
            "library_bytes": (arts["rule"] / LIBRARY).stat().st_size,
            "dense_library_bytes": (arts["dense"] / LIBRARY).stat().st_size,
        }
        rows.append(row)
        wb = (row["weight_bytes"] or 0) / max(1, row["dense_weight_bytes"] or 1)
        print(
            f"{model:12s} {row['variant']:17s} {row['sparse_layers']}/{row['pruned_layers']} layers sparse  "
            f"ORT {row['ort_ms']:7.2f} ms  "
            f"TVM dense {row['tvm_dense_ms']:7.2f} ms  TVM rule {row['tvm_ms']:7.2f} ms  "
            f"({row['tvm_over_dense']:.2f}x dense, "
            f"{row['tvm_over_ort']:.2f}x ORT)  weights {wb:.2f}x",
            flush=True,
        )
    return rows


def accuracy_rows(tmp: Path) -> list[dict]:
    src = tmp / "digits.onnx"
    export_model("digits_cnn", src)
    rows = []
    variants = [
        (
            f"structured {r:.0%} {c}",
            CompressOptions(bits=None, prune=r, structured=True, prune_criterion=c, calib="digits", round_to=4),
        )
        for r in (0.25, 0.5)
        for c in ("l2", "activation")
    ]
    variants += [(f"unstructured {r:.0%}", CompressOptions(bits=None, prune=r)) for r in (0.5, 0.8, 0.9)]
    for name, opts in variants:
        acc = compress_file(src, tmp / "d.onnx", opts, force=True, eval_set="digits")["accuracy"]
        rows.append(
            {
                "variant": name,
                "fp32": acc["fp32_ort"],
                "ort": acc["compressed_ort"],
                "tvm": acc["compressed_tvm"],
                "drop_pt": acc["drop_pt"],
            }
        )
        print(
            f"digits {name:28s} ORT {acc['compressed_ort']:.2%}  TVM {acc['compressed_tvm']:.2%}  "
            f"(fp32 {acc['fp32_ort']:.2%}, drop {acc['drop_pt']:.1f} pt)",
            flush=True,
        )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for model in sorted({r["model"] for r in rows}):
        pts = [
            r
            for r in rows
            if r["model"] == model
            and (r["variant"].startswith("structured") and r["variant"].endswith("%") or r["variant"] == "dense")
        ]
        ratios = [0.0 if r["variant"] == "dense" else float(r["variant"].split()[1].rstrip("%")) / 100 for r in pts]
        ax.plot(ratios, [r["ort_speedup"] for r in pts], "o-", label=f"{model} onnxruntime")
        ax.plot(ratios, [r["tvm_speedup"] for r in pts], "s--", label=f"{model} edgekit TVM")
    ax.set_xlabel("structured pruning ratio (channels removed per group)")
    ax.set_ylabel("speedup over the dense model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenetv2")
    ap.add_argument("--ratios", default="0.3,0.5,0.7")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--sparse-models", default="mobilenetv2,vit_tiny,bert_encoder", help="models of the block-sparse rows"
    )
    ap.add_argument(
        "--sparse-only", action="store_true", help="the block-sparse rows only (results to prune_sparse.*.json)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="digits_cnn only, few repeats: checks the script, not the numbers"
    )
    args = ap.parse_args()
    if args.quick:
        args.models, args.sparse_models, args.repeat, args.rounds = "digits_cnn", "digits_cnn", 3, 1
    isa = "avx512" if "avx512f" in TargetCaps.host().features else "avx2"
    target = "x86_64-avx512" if isa == "avx512" else "x86_64"
    ratios = [float(r) for r in args.ratios.split(",")]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        sparse = [row for m in args.sparse_models.split(",") for row in sparse_rows(m, target, args, tmp)]
        if args.sparse_only:
            out = RESULTS / f"prune_sparse.x86_64-{isa}.json"
            if not args.quick:
                out.write_text(
                    json.dumps(
                        {"host": host_description(), "target": target, "threads": args.threads, "sparse": sparse},
                        indent=2,
                    )
                )
                print(f"wrote {out}")
            return
        rows = [row for m in args.models.split(",") for row in latency_rows(m, ratios, target, args, tmp)]
        accuracy = accuracy_rows(tmp)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"prune.x86_64-{isa}.json"
        out.write_text(
            json.dumps(
                {
                    "host": host_description(),
                    "target": target,
                    "threads": args.threads,
                    "latency": rows,
                    "sparse": sparse,
                    "digits_accuracy": accuracy,
                },
                indent=2,
            )
        )
        plot(rows, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
