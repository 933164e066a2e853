"""Numerical equivalence checks. The one place that knows tolerances.

Errors are reported per output as
  max_abs = max |actual - reference|
  max_rel = max_abs / max |reference|      (relative to the output's scale, not per element:
                                            per-element ratios explode near zero and mean nothing)
An output passes when max_abs <= atol + rtol * max |reference|.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import edgekit.core.interrupts as interrupts
from edgekit.core.errors import EdgekitError, message_line
from edgekit.onnxkit.comparison import DEFAULT_ATOL, DEFAULT_RTOL, OutputError, ValidationReport, compare_outputs  # noqa: F401 - re-exported
from edgekit.passes.legacy_opset import reference_model

# Models with quantized activations (QuantizeLinear in the graph): onnxruntime runs integer kernels with
# fixed-point requantization, TVM dequantizes and computes in float, so a value sitting on a rounding
# boundary can land one quantization step apart in any layer; measured on the digits CNN: up to 2.7e-3 of
# the output scale. 1e-2 of the output scale allows a few steps, and still fails on a wrong model.
QUANTIZED_RTOL = 1e-2
# DFT / STFT: here the reference is the less exact side. onnxruntime's STFT of 400-sample Hann frames is 1.2e-3
# off float64 numpy at an output scale of 35; edgekit's DFT-matrix MatMul (compiler/spectral.py) 2.9e-5. 1e-4 of
# the output scale still fails a wrong window or bin order by orders of magnitude.
SPECTRAL_RTOL = 1e-4
# --precision fp16 (GPU builds): activations and weights rounded to half (11-bit significand, 4.9e-4 relative)
# at every op, accumulation in fp32; a few roundings per layer over tens of layers stay well inside 1e-2 of the
# output scale, while a wrong kernel is off by the scale itself.
FP16_RTOL = 1e-2


def tolerances_for(model, precision: str = "fp32") -> tuple[float, float]:
    """(atol, rtol) for comparing TVM with onnxruntime on this ONNX model built at `precision`."""
    if any(node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for node in model.graph.node):
        rtol = QUANTIZED_RTOL
    elif any(node.op_type in ("DFT", "STFT") for node in model.graph.node):
        rtol = SPECTRAL_RTOL
    else:
        rtol = DEFAULT_RTOL
    return DEFAULT_ATOL, max(rtol, FP16_RTOL) if precision == "fp16" else rtol


def load_inputs_npz(path: Path, specs) -> list[dict[str, np.ndarray]]:
    """Inputs for validation from an .npz: arrays named like the model inputs; a leading extra axis means several
    samples."""
    from edgekit.onnxkit.checks import check_array, load_arrays

    data = load_arrays(Path(path))
    for name, arr in data.items():
        check_array(name or "(array)", arr, str(path))
    if len(specs) == 1 and specs[0].name not in data and len(data) == 1:
        data = {specs[0].name: next(iter(data.values()))}
    samples: list[dict[str, np.ndarray]] = []
    for spec in specs:
        if spec.name in data and data[spec.name].size == 0:
            raise EdgekitError(f"{path}: array '{spec.name}' is empty", "save at least one sample")
        if spec.name not in data:
            raise EdgekitError(
                f"{path} has no array for input '{spec.name}'", f"it holds: {', '.join(data) or 'nothing'}"
            )
        arr = data[spec.name]
        if np.dtype(spec.dtype).kind in "iu" and arr.dtype.kind == "f":
            raise EdgekitError(
                f"{path}: input '{spec.name}' is {spec.dtype} in the model, the file holds {arr.dtype}",
                "save it as integers",
            )
        arr = arr.astype(spec.dtype, copy=False)
        shape = tuple(int(d) for d in spec.shape)
        if arr.shape == shape:
            batch = [arr]
        elif arr.shape[1:] == shape:
            batch = list(arr)
        else:
            raise EdgekitError(
                f"{path}: input '{spec.name}' has shape {list(arr.shape)}, expected {list(shape)} (or N×{list(shape)})",
                "save arrays of the model input shape, or N of them stacked on a leading axis",
            )
        for i, sample in enumerate(batch):
            if i == len(samples):
                samples.append({})
            samples[i][spec.name] = np.asarray(sample, order="C")  # ascontiguousarray makes 0-d 1-d
    return samples


def validate_artifact(
    artifact_dir: Path,
    onnx_path: Path | None = None,
    inputs: Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    device: dict | None = None,
) -> ValidationReport:
    """Run the compiled artifact and onnxruntime on the same inputs; errors are the worst over all samples."""
    from edgekit.onnxkit.graph import random_inputs
    from edgekit.onnxkit.tools import ort_session
    from edgekit.runners import open_runner
    from edgekit.runtime import read_meta

    compiled = open_runner(artifact_dir, **(device or {}))
    if onnx_path is None:
        onnx_path = read_meta(artifact_dir).source_path or Path("")
        if not onnx_path.is_file():
            raise EdgekitError(f"the artifact's source ONNX {onnx_path} is gone", "pass the ONNX file explicitly")
    onnx_path = Path(onnx_path)
    from edgekit.onnxkit.graph import load_onnx

    model = load_onnx(onnx_path)  # also: a clear error if it is not a valid model
    frozen = read_meta(artifact_dir).frozen
    check_same_interface(model, compiled, onnx_path, frozen)
    precision = ((read_meta(artifact_dir).raw.get("build") or {}).get("options") or {}).get("precision", "fp32")
    default_atol, default_rtol = tolerances_for(model, precision)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    session = ort_session(reference_model(onnx_path), reference=True)
    samples = load_inputs_npz(inputs, compiled.inputs) if inputs else [random_inputs(compiled.inputs, seed)]
    return compare_samples(samples, session, compiled, atol, rtol, frozen)


def check_same_interface(model, compiled, onnx_path: Path, frozen: dict | None = None) -> None:
    """The reference model must take and return what the artifact does (same names; shapes where the model fixes
    them), apart from the inputs compile --freeze bound to constants."""
    from edgekit.onnxkit.graph import graph_inputs, graph_outputs

    def describe(specs) -> str:
        return ", ".join(f"{s.name} {s.dtype}{list(s.shape)}" for s in specs)

    ref_inputs = [s for s in graph_inputs(model) if s.name not in (frozen or {})]
    for kind, ref, art in (
        ("inputs", ref_inputs, compiled.inputs),
        ("outputs", graph_outputs(model), compiled.outputs),
    ):
        same = len(ref) == len(art) and all(
            r.name == a.name
            and r.dtype == a.dtype
            and len(r.shape) == len(a.shape)
            and all(not isinstance(d, int) or d == int(e) for d, e in zip(r.shape, a.shape))
            for r, a in zip(ref, art)
        )
        if not same:
            raise EdgekitError(
                f"{onnx_path} does not match the artifact's {kind}: the model has {describe(ref) or 'none'}, "
                f"the artifact {describe(art)}",
                "validate the artifact against the model it was compiled from",
            )


def compare_samples(
    samples, session, compiled, atol: float, rtol: float, frozen: dict | None = None
) -> ValidationReport:
    """Worst errors over the samples; onnxruntime also gets the frozen inputs (bound to constants in the artifact)."""
    worst: ValidationReport | None = None
    out_names = [o.name for o in compiled.outputs]
    for feeds in samples:
        try:
            ref = dict(zip(out_names, session.run(out_names, feeds | (frozen or {}))))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's pybind errors reach the user as one line
            interrupts.check()
            first = message_line(exc, 240, first=True)
            raise EdgekitError(
                f"onnxruntime could not run the reference model on these inputs: {first}",
                "check the inputs' names, shapes and dtypes against the model",
            ) from None
        got = compiled.run(feeds)
        report = compare_outputs(ref, got, atol, rtol)
        if worst is None:
            worst = report
        else:
            worst.outputs = [a if a.max_abs >= b.max_abs else b for a, b in zip(worst.outputs, report.outputs)]
    assert worst is not None
    return worst
