"""LayerNorm over the last axis in one pass over each row, for CPU targets.

ONNX exports before opset 17 (and tf2onnx) carry LayerNorm as ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt /
Div / Mul / Add. TVM fuses that into three kernels (mean + subtract, the power, mean + sqrt + divide) with a
full-size intermediate between each, and its own layer_norm op legalizes to two serial reductions: 8 LayerNorms
of a 128 x 256 encoder took 237 us (opset 13) / 380 us (opset 17) in TVM against 101 us in onnxruntime (Zen 5,
2 threads). Here each parallel job normalizes whole rows: the row (a few kB) is read three times from L1 (sum,
sum of squared deviations, the normalized store) and written once.
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

KERNEL = "layer_norm"  # the edgekit.kernel attribute: schedules/dispatch.py keeps the kernel as written


def lanes_for(width: int, lanes: int) -> int | None:
    """The vector width the kernel uses for rows of `width` (the target's fp32 lanes, or fewer), None below 4."""
    v = math.gcd(width, lanes)
    return v if v >= 4 else None


def layer_norm_func(shape: tuple[int, ...], eps: float, lanes: int):
    """out = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis of x [*shape]; `lanes` divides it."""
    width = shape[-1]
    rows = math.prod(shape[:-1])
    chunks = width // lanes

    @T.prim_func
    def layer_norm(
        x: T.Buffer(shape, "float32"),
        gamma: T.Buffer((width,), "float32"),
        beta: T.Buffer((width,), "float32"),
        out: T.Buffer(shape, "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": KERNEL})
        x_rows = T.decl_buffer((rows, width), "float32", data=x.data)
        out_rows = T.decl_buffer((rows, width), "float32", data=out.data)
        for r in T.parallel(rows):
            acc = T.alloc_buffer((lanes,), "float32", scope="local")
            stat = T.alloc_buffer((2,), "float32", scope="local")  # mean, then 1 / sqrt(var + eps)
            for v in T.vectorized(lanes):
                acc[v] = T.float32(0)
            for c in range(chunks):
                for v in T.vectorized(lanes):
                    acc[v] = acc[v] + x_rows[r, c * lanes + v]
            stat[0] = T.float32(0)
            for v in range(lanes):
                stat[0] = stat[0] + acc[v]
            stat[0] = stat[0] / T.float32(width)
            for v in T.vectorized(lanes):  # two passes: the deviations' squares, as the exported graph computes
                acc[v] = T.float32(0)
            for c in range(chunks):
                for v in T.vectorized(lanes):
                    acc[v] = acc[v] + (x_rows[r, c * lanes + v] - stat[0]) * (x_rows[r, c * lanes + v] - stat[0])
            stat[1] = T.float32(0)
            for v in range(lanes):
                stat[1] = stat[1] + acc[v]
            stat[1] = T.float32(1) / T.sqrt(stat[1] / T.float32(width) + T.float32(eps))
            for c in range(chunks):
                for v in T.vectorized(lanes):
                    out_rows[r, c * lanes + v] = (x_rows[r, c * lanes + v] - stat[0]) * stat[1] * gamma[
                        c * lanes + v
                    ] + beta[c * lanes + v]

    return layer_norm
