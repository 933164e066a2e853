"""Comparing outputs: per output, max_abs = max |actual - reference| and max_rel = max_abs / max |reference| (the
output's scale, not per element: per-element ratios explode near zero and mean nothing); an output passes when
max_abs <= atol + rtol * max |reference|. A leaf module (numpy only): the ONNX loader's opset upgrade checks its
conversions with it too. The tolerances themselves live in validate.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# fp32 models compiled by TVM vs onnxruntime: different summation order only.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-5


@dataclass
class OutputError:
    name: str
    max_abs: float
    max_rel: float
    scale: float
    ok: bool

    def to_json(self) -> dict:
        return {"name": self.name, "max_abs": self.max_abs, "max_rel": self.max_rel, "scale": self.scale, "ok": self.ok}


@dataclass
class ValidationReport:
    reference_name: str
    actual_name: str
    atol: float
    rtol: float
    outputs: list[OutputError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "reference": self.reference_name,
            "actual": self.actual_name,
            "atol": self.atol,
            "rtol": self.rtol,
            "outputs": [o.to_json() for o in self.outputs],
        }


def compare_outputs(
    reference: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    reference_name: str = "onnxruntime",
    actual_name: str = "tvm",
) -> ValidationReport:
    report = ValidationReport(reference_name, actual_name, atol, rtol)
    for name, ref in reference.items():
        ref = np.asarray(ref)
        got = np.asarray(actual[name])
        if got.shape != ref.shape:
            report.outputs.append(OutputError(name, float("inf"), float("inf"), 0.0, False))
            continue
        if ref.dtype == bool or ref.dtype.kind in "iu":
            diff = np.abs(got.astype(np.int64) - ref.astype(np.int64))
            ref_f = ref.astype(np.float64)
        else:
            with np.errstate(invalid="ignore"):  # inf - inf: NaN, judged below
                diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            ref_f = ref.astype(np.float64)
            # NaN where the reference has NaN, and the same infinity, are agreement (sqrt or log of a negative
            # input); NaN or infinity anywhere else is not
            got_f = got.astype(np.float64)
            agree = (np.isnan(got_f) & np.isnan(ref_f)) | (np.isinf(ref_f) & (got_f == ref_f))
            diff[agree] = 0.0
            ref_f = np.where(agree, 0.0, ref_f)
        max_abs = float(np.max(diff)) if diff.size else 0.0
        if np.isnan(diff).any():
            max_abs = float("inf")
        scale = float(np.max(np.abs(ref_f[np.isfinite(ref_f)]), initial=0.0)) if ref_f.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        report.outputs.append(OutputError(name, max_abs, max_rel, scale, max_abs <= atol + rtol * scale))
    return report
