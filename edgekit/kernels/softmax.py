"""Softmax over the last axis, rows in parallel, with a vectorizable exp, for CPU targets.

TVM's fast_softmax (topi) scheduled by dlight's CPU reduction rule took 17 us for ViT-tiny's 4 x 65 x 65
attention scores (Zen 5, 2 threads): a quarter of the model. Per row here: the max, exp(x - max) stored with
its running sum, then one scaling pass; the row stays in L1. Rows whose width no vector divides run their last
width % lanes columns as scalars.

exp: Cephes' single-precision scheme (written out because LLVM turns a vector llvm.exp into one libm call per
lane): x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2, e^r by a degree-6 polynomial, 2^n through the
float exponent bits; relative error ~1e-7 over the clamped range [-87, 88].
"""

from __future__ import annotations

import math

import tvm
from tvm.script import tirx as T

from edgekit.kernels.binary import _root_block

KERNEL = "softmax"  # the edgekit.kernel attribute: schedules/dispatch.py keeps the kernel as written
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def vector_exp(x):
    """e^x as vectorizable float32 arithmetic (see the module docstring)."""
    f32 = lambda v: tvm.tirx.const(v, "float32")  # noqa: E731
    x = tvm.tirx.max(tvm.tirx.min(x, f32(88.0)), f32(-87.0))
    n = tvm.tirx.floor(x * f32(1.4426950408889634) + f32(0.5))
    r = x - n * f32(0.693359375) - n * f32(-2.12194440e-4)  # ln 2 in two parts: r without cancellation
    p = f32(EXP_POLY[0])
    for c in EXP_POLY[1:]:
        p = p * r + f32(c)
    p = p * r * r + r + f32(1.0)
    two_n = tvm.tirx.reinterpret("float32", tvm.tirx.shift_left(tvm.tirx.Cast("int32", n) + 127, 23))
    return p * two_n


def softmax_func(shape: tuple[int, ...], lanes: int):
    """out = softmax(x) over the last axis of x [*shape]."""
    width = shape[-1]
    rows = math.prod(shape[:-1])
    chunks, tail = divmod(width, lanes)

    @T.prim_func
    def softmax(x: T.Buffer(shape, "float32"), out: T.Buffer(shape, "float32")):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": KERNEL})
        x_rows = T.decl_buffer((rows, width), "float32", data=x.data)
        out_rows = T.decl_buffer((rows, width), "float32", data=out.data)
        for r in T.parallel(rows):
            acc = T.alloc_buffer((lanes,), "float32", scope="local")
            stat = T.alloc_buffer((2,), "float32", scope="local")  # the row's max, then 1 / sum
            for v in T.vectorized(lanes):
                acc[v] = T.float32(-3.0e38)
            for c in range(chunks):
                for v in T.vectorized(lanes):
                    acc[v] = T.max(acc[v], x_rows[r, c * lanes + v])
            stat[0] = T.float32(-3.0e38)
            for v in range(lanes):
                stat[0] = T.max(stat[0], acc[v])
            for t in range(tail):
                stat[0] = T.max(stat[0], x_rows[r, chunks * lanes + t])
            for v in T.vectorized(lanes):
                acc[v] = T.float32(0)
            for c in range(chunks):
                for v in T.vectorized(lanes):
                    out_rows[r, c * lanes + v] = vector_exp(x_rows[r, c * lanes + v] - stat[0])
                    acc[v] = acc[v] + out_rows[r, c * lanes + v]
            stat[1] = T.float32(0)
            for v in range(lanes):
                stat[1] = stat[1] + acc[v]
            for t in range(tail):
                out_rows[r, chunks * lanes + t] = vector_exp(x_rows[r, chunks * lanes + t] - stat[0])
                stat[1] = stat[1] + out_rows[r, chunks * lanes + t]
            stat[1] = T.float32(1) / stat[1]
            for c in range(chunks):
                for v in T.vectorized(lanes):
                    out_rows[r, c * lanes + v] = out_rows[r, c * lanes + v] * stat[1]
            for t in range(tail):
                out_rows[r, chunks * lanes + t] = out_rows[r, chunks * lanes + t] * stat[1]

    return _root_block(softmax)  # Relax's reshape analysis expects a root block in every call_tir callee
