"""The end-to-end job behind `edgekit demo`: export -> compile -> validate -> accuracy -> bench."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.bench import bench, plot
from edgekit.compiler.build import compile_onnx
from edgekit.core.fileio import atomic_file
from edgekit.export import INPUT_NAME, export_model
from edgekit.onnxkit.tools import ort_session
from edgekit.runtime import load
from edgekit.validate import compare_outputs


def digits_accuracy(model_ref: str, onnx_path: Path, artifact: Path) -> dict:
    """Test-set accuracy of the same network in torch, onnxruntime and TVM, plus their agreement."""
    import torch

    from edgekit.datasets import accuracy, digits_logits, load_digits_split
    from edgekit.zoo import load_model

    split = load_digits_split()
    module = load_model(model_ref).module
    with torch.no_grad():
        torch_logits = module(torch.from_numpy(split.x_test)).numpy()
    session = ort_session(onnx_path)
    compiled = load(artifact)
    ort_logits, _ = digits_logits(lambda x: session.run(None, {INPUT_NAME: x})[0])
    tvm_logits, _ = digits_logits(lambda x: compiled(x)[0])
    from edgekit.onnxkit.graph import load_onnx
    from edgekit.validate import tolerances_for

    atol, rtol = tolerances_for(load_onnx(onnx_path))
    agree = compare_outputs({"logits": ort_logits}, {"logits": tvm_logits}, atol, rtol)
    return {
        "samples": len(split.y_test),
        "torch": accuracy(torch_logits, split.y_test),
        "onnxruntime": accuracy(ort_logits, split.y_test),
        "tvm": accuracy(tvm_logits, split.y_test),
        "tvm_vs_ort_max_abs": agree.max_abs,
        "tvm_vs_ort_ok": agree.ok,
        "predictions_identical": bool((ort_logits.argmax(1) == tvm_logits.argmax(1)).all()),
    }


def _build_variant(
    model_ref: str, variant: str, path: Path, art: Path, target: str, quiet: bool
) -> tuple[dict, list[tuple[str, str]], bool]:
    """One variant compiled and validated (and, for the digits CNN, its accuracy in torch / ORT / TVM): its report,
    its table rows, and whether every check passed."""
    compiled = compile_onnx(path, art, target, force=True, quiet=quiet)
    rules = ", ".join(f"{k} ×{v}" for k, v in compiled.meta["build"]["rules"].items())
    rows = [(f"compile {variant}", f"{art} in {compiled.meta['build']['seconds']:.1f}s ({rules})")]
    ok = True
    if compiled.validation is not None:
        ok = compiled.validation.ok
        rows.append(
            (
                f"validate {variant}",
                f"TVM vs ORT max abs {compiled.validation.max_abs:.1e} -> {'ok' if compiled.validation.ok else 'FAIL'}",
            )
        )
    variant_report: dict = {"compile": compiled.meta}
    if model_ref == "digits_cnn":
        acc = digits_accuracy(model_ref, path, art)
        variant_report["accuracy"] = acc
        ok = ok and acc["predictions_identical"] and acc["tvm_vs_ort_ok"]
        torch_part = f"torch fp32 {acc['torch']:.2%} | " if variant == "fp32" else ""
        rows.append(
            (
                f"digits accuracy {variant} ({acc['samples']} test images)",
                f"{torch_part}ORT {acc['onnxruntime']:.2%} | TVM {acc['tvm']:.2%}; "
                f"TVM vs ORT max abs {acc['tvm_vs_ort_max_abs']:.1e}",
            )
        )
    return variant_report, rows, ok


def run_demo(model_ref: str, workdir: Path, target: str, repeat: int, quiet: bool = False, bits: int = 8) -> dict:
    """fp32 and a compressed variant, both compiled, validated, measured for accuracy and benchmarked."""
    from edgekit.compress import CompressOptions, compress_file

    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = workdir / f"{model_ref}.onnx"
    exported = export_model(model_ref, onnx_path, force=True)
    table = [
        (
            "export",
            f"{onnx_path} ({exported.size_bytes / 1e3:.0f} kB, {exported.nodes} nodes); "
            f"ORT vs torch max abs {exported.check.max_abs:.1e}",
        )
    ]
    ok = exported.check.ok
    is_digits = model_ref == "digits_cnn"
    q_path = workdir / f"{model_ref}.int{bits}.onnx"
    compressed = compress_file(
        onnx_path,
        q_path,
        CompressOptions(bits=bits, calib="digits" if is_digits else "random", target=target),
        force=True,
    )
    table.append(
        (
            f"compress int{bits}",
            f"{q_path}: {compressed['mode']}, weights {compressed['weight_ratio']:.2f}× smaller, "
            f"file {compressed['file_ratio']:.2f}×",
        )
    )
    report: dict = {
        "model": model_ref,
        "target": target,
        "export": exported.to_json(),
        "compress": compressed,
        "variants": {},
    }
    artifacts = {}
    for variant, path in (("fp32", onnx_path), (f"int{bits}", q_path)):
        artifacts[variant] = workdir / f"{path.stem}.{target}"
        report["variants"][variant], rows, variant_ok = _build_variant(
            model_ref, variant, path, artifacts[variant], target, quiet
        )
        table += rows
        ok = ok and variant_ok
    from edgekit.bench import merge

    bench_report = merge([bench(artifacts[v], ("ort", "tvm"), repeat=repeat, quiet=quiet) for v in artifacts])
    plot(bench_report, workdir / "bench.png")
    report["bench"] = bench_report.to_json()
    ort_fp32 = next(r.p50_ms for r in bench_report.runs if r.runtime == "ort")
    for run in bench_report.runs:
        table.append(
            (
                f"bench {run.model} {run.runtime}",
                f"p50 {run.p50_ms:.3f} ms ({run.p50_ms / ort_fp32:.2f}× ORT fp32), "
                f"peak RSS {run.peak_rss_mb:.0f} MB, {run.size_bytes / 1e3:.0f} kB",
            )
        )
    report["ok"], report["table"] = ok, table
    with atomic_file(workdir / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    return report
