"""The end-to-end job behind `edgekit demo`: export -> compile -> validate -> accuracy -> bench."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.bench import bench, plot
from edgekit.compiler.build import compile_onnx
from edgekit.export import INPUT_NAME, export_model, ort_session
from edgekit.fileio import atomic_file
from edgekit.runtime import load
from edgekit.validate import compare_outputs


def digits_accuracy(model_ref: str, onnx_path: Path, artifact: Path) -> dict:
    """Test-set accuracy of the same network in torch, onnxruntime and TVM, plus their agreement."""
    import torch

    from edgekit.datasets import accuracy, load_digits_split
    from edgekit.zoo import load_model

    split = load_digits_split()
    module = load_model(model_ref).module
    with torch.no_grad():
        torch_logits = module(torch.from_numpy(split.x_test)).numpy()
    session = ort_session(onnx_path)
    compiled = load(artifact)
    ort_logits = np.concatenate([session.run(None, {INPUT_NAME: x[None]})[0] for x in split.x_test])
    tvm_logits = np.concatenate([compiled(x[None])[0] for x in split.x_test])
    agree = compare_outputs({"logits": ort_logits}, {"logits": tvm_logits})
    return {
        "samples": len(split.y_test),
        "torch": accuracy(torch_logits, split.y_test),
        "onnxruntime": accuracy(ort_logits, split.y_test),
        "tvm": accuracy(tvm_logits, split.y_test),
        "tvm_vs_ort_max_abs": agree.max_abs,
        "tvm_vs_ort_ok": agree.ok,
        "predictions_identical": bool((ort_logits.argmax(1) == tvm_logits.argmax(1)).all()),
    }


def run_demo(model_ref: str, workdir: Path, target: str, repeat: int, quiet: bool = False) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path, artifact = workdir / f"{model_ref}.onnx", workdir / f"{model_ref}.{target}"
    exported = export_model(model_ref, onnx_path, force=True)
    compiled = compile_onnx(onnx_path, artifact, target, force=True, quiet=quiet)
    table = [
        ("export", f"{onnx_path} ({exported.size_bytes / 1e3:.0f} kB, {exported.nodes} nodes); ORT vs torch max abs {exported.check.max_abs:.1e}"),
        ("compile", f"{artifact} for {target} in {compiled.meta['build']['seconds']:.1f}s"),
    ]
    ok = exported.check.ok and (compiled.validation is None or compiled.validation.ok)
    if compiled.validation is not None:
        table.append(("validate (random input)", f"TVM vs ORT max abs {compiled.validation.max_abs:.1e} -> {'ok' if compiled.validation.ok else 'FAIL'}"))
    report: dict = {"model": model_ref, "target": target, "export": exported.to_json(), "compile": compiled.meta}
    if model_ref == "digits_cnn":
        acc = digits_accuracy(model_ref, onnx_path, artifact)
        report["accuracy"] = acc
        ok = ok and acc["tvm_vs_ort_ok"] and acc["predictions_identical"]
        table.append(
            (
                f"digits test accuracy ({acc['samples']} images)",
                f"torch {acc['torch']:.2%} | ORT {acc['onnxruntime']:.2%} | TVM {acc['tvm']:.2%}; TVM vs ORT max abs {acc['tvm_vs_ort_max_abs']:.1e}",
            )
        )
    bench_report = bench(artifact, ("ort", "tvm"), repeat=repeat, quiet=quiet)
    plot(bench_report, workdir / "bench.png")
    report["bench"] = bench_report.to_json()
    for run in bench_report.runs:
        ratio = bench_report.ratio(run.runtime)
        table.append((f"bench {run.runtime}", f"p50 {run.p50_ms:.3f} ms ({ratio:.2f}× ORT), peak RSS {run.peak_rss_mb:.0f} MB, {run.size_bytes / 1e3:.0f} kB"))
    report["ok"], report["table"] = ok, table
    with atomic_file(workdir / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    return report
