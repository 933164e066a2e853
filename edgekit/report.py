"""Stage 6: which variant to ship. `edgekit report MODEL --target T`: every compression variant built, validated
against onnxruntime, and measured for file size, weight bytes, quality (accuracy with labels, output error vs
fp32 without) and latency in onnxruntime and in edgekit's build on the target; a table, JSON and two plots
with the Pareto front (report_plot.py).

Each variant's ONNX, artifact and measured row are cached under DIR/cache by the source's sha256, the variant's
options, the target and edgekit's version: a second run, or one more variant, rebuilds only what changed.
A variant that fails is a row with the reason, never the end of the sweep.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import edgekit.core.interrupts as interrupts
from edgekit import __version__
from edgekit.core.errors import EdgekitError, first_line, last_line
from edgekit.core.fileio import sha256_of
from edgekit.targets import DEFAULT_TARGET

# name -> CompressOptions fields (None: the fp32 model itself)
VARIANTS: dict[str, dict | None] = {
    "fp32": None,
    "int8": {"bits": 8},
    "int4": {"bits": 4},
    "int2": {"bits": 2},
    "bwn": {"bits": 1, "binarize_mode": "weights"},
    "xnor": {"bits": 1, "binarize_mode": "xnor"},
    "prune30s": {"bits": None, "prune": 0.3, "structured": True},
    "prune50s": {"bits": None, "prune": 0.5, "structured": True},
    "prune70s": {"bits": None, "prune": 0.7, "structured": True},
    "prune50": {"bits": None, "prune": 0.5},
    "prune90": {"bits": None, "prune": 0.9},
    "nm24": {"bits": None, "nm": "2:4"},
    "prune50s+int8": {"bits": 8, "prune": 0.5, "structured": True},
    "prune90+int8": {"bits": 8, "prune": 0.9},
    "lowrank90": {"bits": None, "rank_energy": 0.9},
    "depth2": {"bits": None, "depth": 2},
}
# training-based variants (digits models, with --finetune): edgekit finetune's recipes
FINETUNED: dict[str, dict] = {
    "ft-bwn": {"bits": 1, "mode": "weights"},
    "ft-int4": {"bits": 4},
    "ft-prune90": {"prune": 0.9, "method": "gradual"},
    "ft-prune50s": {"prune": 0.5, "method": "structured"},
}
DEFAULT_VARIANTS = ("fp32", "int8", "int4", "bwn", "prune50s", "prune90", "prune50s+int8")


@dataclass
class ReportConfig:
    model: str  # an .onnx path or a zoo name
    target: str = DEFAULT_TARGET
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    eval: str | None = None  # "digits", or data.npz with the model's inputs and a "labels" array
    calib: str | None = None
    out: Path = Path("report")
    finetune: bool = False
    threads: int = 2
    repeat: int = 20

    @classmethod
    def from_toml(cls, path: Path) -> "ReportConfig":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # the same parser, as a package (a dependency on 3.10)
            import tomli as tomllib
        try:
            data = tomllib.loads(Path(path).read_text()).get("report", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise EdgekitError(
                f"cannot read {path}: {exc}", "write a [report] table: model = ..., target = ..., variants = [...]"
            ) from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown or "model" not in data:
            raise EdgekitError(
                f"{path}: {'unknown keys ' + ', '.join(unknown) if unknown else 'no model'} in [report]",
                f"keys: {', '.join(sorted(known))}",
            )
        data["variants"] = tuple(data.get("variants", DEFAULT_VARIANTS))
        data["out"] = Path(data.get("out", "report"))
        return cls(**data)


@dataclass
class Row:
    variant: str
    status: str = "ok"  # "ok" or "failed: <reason>"
    file_bytes: int | None = None
    weight_bytes: int | None = None
    quality: float | None = None  # accuracy (with labels) or relative output error vs fp32 (without)
    quality_tvm: float | None = None
    ort_ms: float | None = None
    tvm_ms: float | None = None
    validated: bool | None = None
    max_abs_vs_ort: float | None = None
    latency_note: str = ""
    notes: list[str] = field(default_factory=list)


def check_variants(cfg: ReportConfig) -> None:
    known = set(VARIANTS) | (set(FINETUNED) if cfg.finetune else set())
    unknown = [v for v in cfg.variants if v not in known]
    if unknown:
        extra = "" if cfg.finetune else f" ({', '.join(FINETUNED)} need --finetune)"
        raise EdgekitError(f"unknown variant(s) {', '.join(unknown)}", f"choose from {', '.join(sorted(known))}{extra}")


def source_model(cfg: ReportConfig, cache: Path) -> tuple[Path, str | None]:
    """(the fp32 ONNX, the zoo name when the model came from the zoo)."""
    path = Path(cfg.model)
    if path.suffix == ".onnx" or path.exists():
        if not path.exists():
            raise EdgekitError(f"{path}: no such file", "pass an .onnx file or a zoo model name")
        return path, None
    from edgekit.export import export_model
    from edgekit.zoo import ZOO

    if cfg.model not in ZOO:
        raise EdgekitError(f"unknown model '{cfg.model}'", f"pass an .onnx file or a zoo model ({', '.join(ZOO)})")
    onnx_path = cache / f"{cfg.model}.fp32.onnx"
    if not onnx_path.exists():
        export_model(cfg.model, onnx_path)
    return onnx_path, cfg.model


def cache_key(source: Path, variant: str, cfg: ReportConfig) -> str:
    import hashlib

    spec = {
        "variant": variant,
        "options": VARIANTS.get(variant) or FINETUNED.get(variant),
        "target": cfg.target,
        "calib": cfg.calib,
        "eval": cfg.eval,
        "edgekit": __version__,
        "repeat": cfg.repeat,
        "threads": cfg.threads,
    }
    return hashlib.sha256((sha256_of(source) + json.dumps(spec, sort_keys=True)).encode()).hexdigest()[:16]


def build_variant(
    variant: str, source: Path, zoo_name: str | None, cfg: ReportConfig, work: Path
) -> tuple[Path, dict, list[str]]:
    """(the variant's ONNX, its compress/finetune result, notes)."""
    from edgekit.compress import CompressOptions, compress_file

    out = work / "model.onnx"
    notes: list[str] = []
    if variant == "fp32":
        shutil.copy2(source, out)
        return out, {}, notes
    if variant in FINETUNED:
        if zoo_name is None:
            raise EdgekitError("training-based variants need a zoo or torch model", "pass a zoo name (e.g. digits_cnn)")
        recipe = FINETUNED[variant]
        if "prune" in recipe:
            from edgekit.training.export import prune_finetune_to_onnx

            return out, prune_finetune_to_onnx(zoo_name, out, recipe["prune"], recipe["method"], force=True), notes
        from edgekit.finetune import finetune_to_onnx

        return out, finetune_to_onnx(zoo_name, out, recipe["bits"], recipe.get("mode", "weights"), force=True), notes
    options = dict(VARIANTS[variant])
    structured_calib = cfg.calib or ("digits" if cfg.eval == "digits" else None)  # bias compensation where data exists
    if options.get("bits") == 8 or options.get("depth") or (options.get("structured") and structured_calib):
        options["calib"] = cfg.calib or ("digits" if cfg.eval == "digits" else "random")
        if options["calib"] == "random":
            notes.append("calibrated on random inputs (pass --calib data.npz)")
    if options.get("structured") and not options.get("calib"):
        notes.append("no calibration: no bias compensation")
    result = compress_file(source, out, CompressOptions(**options), force=True)
    return out, result, notes


# --- measuring one variant ---------------------------------------------------------------------------------


def eval_set(cfg: ReportConfig, specs) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """(input feeds, labels or None): the digits test split, a labelled .npz, or 4 random inputs (no labels)."""
    from edgekit.onnxkit.graph import random_inputs

    if cfg.eval == "digits":
        from edgekit.datasets import test_batches

        chunks, labels = test_batches(int(specs[0].shape[0]))
        return [{specs[0].name: c} for c in chunks], labels
    if cfg.eval:
        from edgekit.onnxkit.checks import load_arrays

        arrays = load_arrays(Path(cfg.eval))
        if "labels" not in arrays:
            raise EdgekitError(
                f"{cfg.eval} has no 'labels' array",
                "save the inputs under the model's input names and the class ids as 'labels'",
            )
        count = len(arrays["labels"])
        return [{s.name: arrays[s.name][i : i + 1] for s in specs} for i in range(count)], arrays["labels"]
    return [random_inputs(specs, seed=i) for i in range(4)], None


def quality_of(outputs: list[list[np.ndarray]], labels: np.ndarray | None, reference: list[list[np.ndarray]]) -> float:
    """Top-1 accuracy of the first output (with labels), else the mean relative L2 error against the fp32 outputs."""
    if labels is not None:
        predicted = np.concatenate([o[0].reshape(len(o[0]), -1).argmax(1) for o in outputs])
        return float((predicted == labels[: len(predicted)]).mean())
    errors = [
        np.linalg.norm(np.concatenate([a.ravel() for a in got]) - np.concatenate([b.ravel() for b in want]))
        / max(np.linalg.norm(np.concatenate([b.ravel() for b in want])), 1e-12)
        for got, want in zip(outputs, reference)
    ]
    return float(np.mean(errors))


def tvm_outputs(artifact: Path, feeds: list[dict[str, np.ndarray]], classes_only: bool) -> list[list[np.ndarray]]:
    """The artifact's outputs for every feed: in this process natively; under qemu, when only the top class
    matters, through the bundle's C++ app (one emulator start for all samples instead of one per sample)."""
    from edgekit.runners import open_runner
    from edgekit.runtime import read_meta

    meta = read_meta(artifact)
    if meta.target.get("runner") != "qemu" or not classes_only:
        runner = open_runner(artifact)
        return [list(runner.run(f).values()) for f in feeds]
    return _emulated_outputs(artifact, meta, feeds)


def _emulated_outputs(artifact: Path, meta, feeds) -> list[list[np.ndarray]]:
    import subprocess
    import tempfile

    from edgekit.runners.cpp import cached_bundle
    from edgekit.runners.qemu import _require_tool

    if len(meta.inputs) != 1 or len(meta.outputs) != 1:
        from edgekit.runners import open_runner

        runner = open_runner(artifact)
        return [list(runner.run(f).values()) for f in feeds]
    bundle = cached_bundle(artifact)
    spec = meta.inputs[0]
    with tempfile.TemporaryDirectory(prefix="edgekit-report-") as tmp:
        stacked = Path(tmp) / "x.npy"
        np.save(stacked, np.concatenate([np.asarray(f[spec.name], dtype=spec.dtype) for f in feeds]))
        cmd = [
            _require_tool(meta.target["qemu"], "qemu-user"),
            "-L",
            meta.target["qemu_sysroot"],
            str(bundle / "bin" / "edgekit_example"),
            str(bundle),
            str(stacked),
            "--warmup",
            "0",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgekitError(f"the emulated run failed: {last_line(proc.stderr)}", "run the bundle's example by hand")
    classes = [int(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("sample ")]
    width = int(meta.outputs[0].shape[-1])
    per_call = len(classes) // max(len(feeds), 1)
    # one-hot logits carry the top class, which is all accuracy needs
    return [[np.eye(width, dtype=np.float32)[classes[i * per_call : (i + 1) * per_call]]] for i in range(len(feeds))]


def measure(
    variant: str, onnx_path: Path, artifact: Path, built: dict, cfg: ReportConfig, feeds, labels, reference, row: Row
) -> None:
    from edgekit.bench import bench
    from edgekit.onnxkit.tools import ort_session
    from edgekit.runtime import read_meta

    row.file_bytes = onnx_path.stat().st_size
    row.weight_bytes = built.get("weight_bytes_after") or _initializer_bytes(onnx_path)
    meta = read_meta(artifact)
    validation = meta.validation or {}
    row.validated = validation.get("ok")
    row.max_abs_vs_ort = max((o["max_abs"] for o in validation.get("outputs", [])), default=None)
    session = ort_session(onnx_path)
    row.quality = quality_of([session.run(None, f) for f in feeds], labels, reference)
    row.quality_tvm = quality_of(tvm_outputs(artifact, feeds, labels is not None), labels, reference)
    report = bench(artifact, ("ort", "tvm"), threads=cfg.threads, warmup=2, repeat=cfg.repeat, rounds=2, quiet=True)
    p50 = {r.runtime: r for r in report.runs}
    row.ort_ms, row.tvm_ms = p50["ort"].p50_ms, p50["tvm"].p50_ms
    row.latency_note = "emulated, not a speed figure" if "emulated" in p50["tvm"].target else ""


def _initializer_bytes(path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


# --- the sweep -------------------------------------------------------------------------------------------------


def run_variant(
    variant: str, source: Path, zoo_name: str | None, cfg: ReportConfig, cache: Path, feeds, labels, reference
) -> Row:
    """Build, compile (validating against onnxruntime) and measure one variant, or return the row of its failure;
    a cached row is returned as it is."""
    from edgekit.compiler.build import compile_onnx

    work = cache / f"{variant}-{cache_key(source, variant, cfg)}"
    if (work / "row.json").exists():
        return Row(**json.loads((work / "row.json").read_text()))
    work.mkdir(parents=True, exist_ok=True)
    row = Row(variant)
    try:
        onnx_path, built, row.notes = build_variant(variant, source, zoo_name, cfg, work)
        compile_onnx(onnx_path, work / "art", cfg.target, quiet=True, force=True)
        measure(variant, onnx_path, work / "art", built, cfg, feeds, labels, reference, row)
    except EdgekitError as exc:
        row.status = f"failed: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - one variant's bug is that variant's row, not the end of the sweep
        interrupts.check()
        row.status = f"failed: {type(exc).__name__}: {first_line(str(exc), 200, '')}"
    if row.status == "ok":
        (work / "row.json").write_text(json.dumps(asdict(row)))
    return row


def run_report(cfg: ReportConfig, quiet: bool = False) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekit.core.fileio import check_writable
    from edgekit.core.progress import stderr
    from edgekit.onnxkit.graph import load_onnx, resolve_input_specs
    from edgekit.onnxkit.tools import ort_session
    from edgekit.report_plot import write_outputs
    from edgekit.targets import host_description, load_target

    check_variants(cfg)
    load_target(cfg.target)  # an unknown target fails before any work
    out = Path(cfg.out)
    cache = out / "cache"
    if out.resolve() in (Path("/"), Path.cwd().resolve(), Path.home().resolve()):
        raise EdgekitError(f"-o {out} is a protected directory", "write the report to a new directory, e.g. -o report/")
    check_writable(out, 64 << 20)
    cache.mkdir(parents=True, exist_ok=True)
    source, zoo_name = source_model(cfg, cache)
    specs = resolve_input_specs(load_onnx(source), {})
    feeds, labels = eval_set(cfg, specs)
    fp32 = ort_session(source)
    reference = [fp32.run(None, f) for f in feeds]
    rows, t0 = [], time.perf_counter()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr, disable=quiet) as progress:
        task = progress.add_task("report", total=len(cfg.variants))
        for variant in cfg.variants:
            progress.update(task, description=f"building {variant}")
            rows.append(run_variant(variant, source, zoo_name, cfg, cache, feeds, labels, reference))
            progress.advance(task)
    result = {
        "model": cfg.model,
        "target": cfg.target,
        "host": host_description(),
        "quality": "accuracy" if labels is not None else "relative output error vs fp32",
        "eval": cfg.eval or "random inputs",
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": [asdict(r) for r in rows],
    }
    result["files"] = write_outputs(result, out)
    return result
