"""bench/every_cpu.py's goal table: which goals apply on which CPU, and that a figure past its limit is not met
(the script's measurements themselves run in `python bench/every_cpu.py --quick`, ~4 min)."""

from __future__ import annotations

import bench_scripts


def _every_cpu():
    return bench_scripts.load("every_cpu")


RESULTS = {
    "demo": [{"target": "x86_64", "ok": True}, {"target": "host", "ok": False}],
    "int8": [
        {
            "model": "resnet18",
            "target": t,
            "threads": 2,
            "p50_ms": {"fp32/ort": 28.0, "fp32/tvm": 20.0, "int8/ort": 21.0, "int8/tvm": 15.0},
        }
        for t in ("x86_64", "host")
    ],
    "fp32": [{"model": "mobilenetv2", "tvm_over_ort": 0.9, "tvm_tuned_over_ort": 0.85, "tvm_tuned_over_openvino": 0.7}],
    "binary": [{"threads": 1, "speedup_vs": {"tvm-sched": 9.0, "ort": 14.0}}],
}


def _met(goals: list[dict]) -> dict[str, bool]:
    return {g["goal"]: g["met"] for g in goals}


def test_avx2_host_goals():
    met = _met(_every_cpu().goals({"features": ["avx2", "fma"]}, RESULTS))
    assert met["demo on x86_64: every validation ok"] and not met["demo on host: every validation ok"]
    assert met["resnet18 int8 TVM / onnxruntime int8 (x86_64)"]  # 15 / 21
    assert not met["resnet18 int8 TVM / TVM fp32 (x86_64)"]  # 0.75 > 0.5
    assert not any("VNNI" in g for g in met)
    assert (
        met["mobilenetv2 fp32 TVM / onnxruntime (x86_64)"]
        and not met["mobilenetv2 fp32 tuned TVM / onnxruntime (x86_64)"]
    )
    assert met["mobilenetv2 fp32 tuned TVM / OpenVINO (x86_64)"]
    assert (
        met["binary conv 1 thr: XNOR speedup over edgekit fp32"]
        and not met["binary conv 1 thr: XNOR speedup over onnxruntime fp32"]
    )


def test_avx512_vnni_host_goals():
    met = _met(_every_cpu().goals({"features": ["avx2", "avx512f", "avx512vnni"]}, RESULTS))
    assert not met["resnet18 int8 TVM / TVM fp32 (host, VNNI)"]  # 0.75 > 0.33
    assert not any("onnxruntime int8" in g for g in met)
