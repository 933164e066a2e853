"""LSTM / GRU / RNN recurrences as one hand-written TIR kernel per layer: all time steps in one call.

TVM 0.27 has no recurrent op. Unrolling the steps into graph ops (one GEMV + gate ops per step) made a
bidirectional 40-step CRNN head 160 small PrimFunc calls plus ~1300 VM allocations and reshapes, each GEMV
waking the thread pool: 1.75x onnxruntime's LSTM. Here the input projection of all steps stays one big GEMM in
the graph (compiler/recurrent.py), and this kernel runs the recurrence itself:

    for each direction d (in parallel: a bidirectional layer keeps two cores busy without any barrier)
        h, c = initial states
        for each step t (reversed for a reverse direction)
            g = h · R_d                      GEMV, R prepacked [D, GH/V, H, V]: V lanes stream one row
            h, c = gates(proj[t, :, d] + g)  the ONNX equations, polynomial sigmoid / tanh (vectorized)
            Y[t, d] = h

Gate order and equations are ONNX's (LSTM i, o, f, c with optional peepholes; GRU z, r, h with either
linear_before_reset; RNN tanh). The kernel is target-neutral TIR: LLVM picks the vector instructions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

from edgekit.kernels.binary import _root_block

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STEP_PARALLEL_R_BYTES = 1 << 20  # see RecurrentSpec.step_parallel
SPEC_ATTR = "edgekit.recurrent_spec"  # the kernel's RecurrentSpec as JSON: what the GPU rule rebuilds it from
MAX_TILE = 64  # GEMV output lanes per block: 4 zmm / 8 ymm / 16 q accumulators, enough chains to hide FMA latency

# tanh(x) ~ x·p(x²)/q(x²) on [-9, 9] (the rational form of Eigen's and TVM's fast_tanh; |error| < 1e-6);
# libm's tanhf / expf are scalar calls that LLVM cannot vectorize
_TANH_P = (
    -2.76076847742355e-16,
    2.00018790482477e-13,
    -8.60467152213735e-11,
    5.12229709037114e-08,
    1.48572235717979e-05,
    6.37261928875436e-04,
    4.89352455891786e-03,
)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def _f32(value: float) -> tvm.tirx.PrimExpr:
    return tvm.tirx.const(value, "float32")


def _horner(coefficients: tuple[float, ...], x2: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
    acc = _f32(coefficients[0])
    for coefficient in coefficients[1:]:
        acc = acc * x2 + _f32(coefficient)
    return acc


def fast_tanh(x: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
    # Let-bound, so that x and x² are computed once (nested sigmoid(tanh(...)) would grow exponentially)
    xv, x2v = tvm.tirx.Var("tanh_x", "float32"), tvm.tirx.Var("tanh_x2", "float32")
    body = xv * _horner(_TANH_P, x2v) / _horner(_TANH_Q, x2v)
    clamped = tvm.tirx.max(tvm.tirx.min(x, _f32(9.0)), _f32(-9.0))
    return tvm.tirx.Let(xv, clamped, tvm.tirx.Let(x2v, xv * xv, body))


def fast_sigmoid(x: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
    return _f32(0.5) + _f32(0.5) * fast_tanh(x * _f32(0.5))


@dataclass(frozen=True)
class RecurrentSpec:
    kind: str  # LSTM, GRU or RNN
    steps: int
    batch: int
    hidden: int
    reverse: tuple[bool, ...]  # per direction: (False,), (True,) or (False, True)
    linear_before_reset: bool = False  # GRU only

    def __post_init__(self) -> None:
        if self.kind not in GATES or not self.reverse or len(self.reverse) > 2:
            raise ValueError(f"unsupported recurrent spec {self}")

    @property
    def directions(self) -> int:
        return len(self.reverse)

    @property
    def gate_width(self) -> int:
        return GATES[self.kind] * self.hidden

    @property
    def tile(self) -> int:
        """GEMV lanes per block: the largest divisor of hidden <= MAX_TILE, so that gate boundaries fall on
        block boundaries (the GRU candidate's GEMV runs on its own blocks)."""
        return max(v for v in range(1, min(self.hidden, MAX_TILE) + 1) if self.hidden % v == 0)

    @property
    def step_parallel(self) -> bool:
        """Split each step's unit blocks over the threads (a thread-pool launch per step) instead of running the
        directions in parallel: when one direction's R outgrows a core's L2 (LSTM hidden 512: 4 MB, streamed from L3
        every step; hidden 256: 1 MB stays). LSTM and GRU with linear_before_reset; a GRU without it needs all of r ⊙ h
        before its candidate GEMV, and RNN keeps the direction-parallel kernel."""
        unit_parallel = self.kind == "LSTM" or (self.kind == "GRU" and self.linear_before_reset)
        return unit_parallel and 4 * self.gate_width * self.hidden > STEP_PARALLEL_R_BYTES

    @property
    def packed_weight_shape(self) -> tuple[int, int, int, int]:
        return (self.directions, self.gate_width // self.tile, self.hidden, self.tile)


def pack_recurrent_weights(r: np.ndarray, spec: RecurrentSpec) -> np.ndarray:
    """ONNX R [D, G·H, H] -> [D, G·H / V, H, V]: block j, row k holds R[d, j·V : (j+1)·V, k], the V weights
    one GEMV step multiplies by h[k]."""
    d, gh, h = r.shape
    if (d, gh, h) != (spec.directions, spec.gate_width, spec.hidden):
        raise ValueError(f"recurrence weights {r.shape} do not match {spec}")
    v = spec.tile
    return np.ascontiguousarray(r.reshape(d, gh // v, v, h).transpose(0, 1, 3, 2)).astype(np.float32)


def _time_index(spec: RecurrentSpec, d, s):
    """Step s of direction d reads / writes time index t (T-1-s for a reverse direction)."""
    scale, offset = (1, 0) if spec.directions == 2 else (0, int(spec.reverse[0]))
    return s + (d * scale + offset) * (spec.steps - 1 - 2 * s)


def _gemv_macro(spec: RecurrentSpec):
    hidden, v_ = spec.hidden, spec.tile

    @T.macro
    def gemv(src, p, r, g, acc, d, b, first_block, last_block):
        # g[b, blk·V : (blk+1)·V] = src[p, b, :] · R_d over blocks [first_block, last_block)
        for blk in range(first_block, last_block):
            for v in T.vectorized(v_):
                acc[v] = T.float32(0)
            for k in range(hidden):
                for v in T.vectorized(v_):
                    acc[v] = acc[v] + src[p, b, k] * r[d, blk, k, v]
            for v in T.vectorized(v_):
                g[b, blk * v_ + v] = acc[v]

    return gemv


def _lstm_cell_macro(spec: RecurrentSpec):
    h_, v_ = spec.hidden, spec.tile

    @T.macro
    def cell(proj, peep, g, h, c, y, d, b, t, out, jb):
        # units jb·V .. jb·V+V-1 of step t: gates from proj + g (h·R, gate-major), c in place, h into h[out]
        for v in T.vectorized(v_):  # no let-bound index here: TVM 0.27 vectorizes LetStmts wrongly
            g[b, jb * v_ + v] = fast_sigmoid(  # i, then f, in place
                proj[t, b, d, jb * v_ + v] + g[b, jb * v_ + v] + peep[d, 0, jb * v_ + v] * c[b, jb * v_ + v]
            )
            g[b, 2 * h_ + jb * v_ + v] = fast_sigmoid(
                proj[t, b, d, 2 * h_ + jb * v_ + v]
                + g[b, 2 * h_ + jb * v_ + v]
                + peep[d, 2, jb * v_ + v] * c[b, jb * v_ + v]
            )
            c[b, jb * v_ + v] = g[b, 2 * h_ + jb * v_ + v] * c[b, jb * v_ + v] + g[b, jb * v_ + v] * fast_tanh(
                proj[t, b, d, 3 * h_ + jb * v_ + v] + g[b, 3 * h_ + jb * v_ + v]
            )
            h[out, b, jb * v_ + v] = fast_sigmoid(
                proj[t, b, d, h_ + jb * v_ + v] + g[b, h_ + jb * v_ + v] + peep[d, 1, jb * v_ + v] * c[b, jb * v_ + v]
            ) * fast_tanh(c[b, jb * v_ + v])
            y[t, d, b, jb * v_ + v] = h[out, b, jb * v_ + v]

    return cell


def lstm_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    """(proj [T, B, D, 4H], R packed, h0 [D, B, H], c0 [D, B, H], peepholes [D, 3, H] (i, o, f)) ->
    (Y [T, D, B, H], Y_h [D, B, H], Y_c [D, B, H]). Directions in
    parallel, each step one whole GEMV then the cells; or, where R is too big for one core's cache
    (spec.step_parallel), the unit blocks of each step in parallel, each with its four gates' GEMV blocks (h then
    double-buffered: step s reads h[s % 2])."""
    t_, b_, h_, d_, v_ = spec.steps, spec.batch, spec.hidden, spec.directions, spec.tile
    gh, nb, ub = spec.gate_width, spec.gate_width // spec.tile, spec.hidden // spec.tile
    gemv, cell, step_parallel = _gemv_macro(spec), _lstm_cell_macro(spec), spec.step_parallel
    per_direction = T.serial if step_parallel else T.parallel

    @T.prim_func
    def lstm(
        proj: T.Buffer((t_, b_, d_, gh), "float32"),
        r: T.Buffer((d_, nb, h_, v_), "float32"),
        h0: T.Buffer((d_, b_, h_), "float32"),
        c0: T.Buffer((d_, b_, h_), "float32"),
        peep: T.Buffer((d_, 3, h_), "float32"),
        y: T.Buffer((t_, d_, b_, h_), "float32"),
        yh: T.Buffer((d_, b_, h_), "float32"),
        yc: T.Buffer((d_, b_, h_), "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "recurrent"})
        for d in per_direction(d_):
            h = T.alloc_buffer((2, b_, h_), "float32", scope="global")
            c = T.alloc_buffer((b_, h_), "float32", scope="global")
            g = T.alloc_buffer((b_, gh), "float32", scope="global")
            for b, j in T.grid(b_, h_):
                h[0, b, j] = h0[d, b, j]
                c[b, j] = c0[d, b, j]
            for s in range(t_):
                t = _time_index(spec, d, s)
                if step_parallel:
                    for jb in T.parallel(ub):
                        acc = T.alloc_buffer((v_,), "float32", scope="global")
                        for b in range(b_):
                            for gate in range(4):
                                gemv(h, s % 2, r, g, acc, d, b, gate * ub + jb, gate * ub + jb + 1)
                            cell(proj, peep, g, h, c, y, d, b, t, (s + 1) % 2, jb)
                else:  # the whole GEMV reads h before any cell writes it: one state buffer
                    acc = T.alloc_buffer((v_,), "float32", scope="global")
                    for b in range(b_):
                        gemv(h, 0, r, g, acc, d, b, 0, nb)
                        for jb in range(ub):
                            cell(proj, peep, g, h, c, y, d, b, t, 0, jb)
            for b, j in T.grid(b_, h_):
                yh[d, b, j] = h[t_ % 2 if step_parallel else 0, b, j]
                yc[d, b, j] = c[b, j]

    return _root_block(lstm)


def gru_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    """(proj [T, B, D, 3H] (z, r, h; W and R biases of z, r and W's of h folded in), R packed, h0 [D, B, H],
    Rb_h [D, H]) -> (Y [T, D, B, H], Y_h [D, B, H]). linear_before_reset: r gates (h·R_h + Rb_h), and each unit
    block needs only its own three GEMV blocks (so spec.step_parallel may split a step over the threads, h then
    double-buffered); otherwise the candidate's GEMV runs on r ⊙ h, after all z / r gates."""
    t_, b_, h_, d_, v_ = spec.steps, spec.batch, spec.hidden, spec.directions, spec.tile
    gh, nb, ub, zr_blocks = (
        spec.gate_width,
        spec.gate_width // spec.tile,
        spec.hidden // spec.tile,
        2 * spec.hidden // spec.tile,
    )
    lbr, step_parallel = spec.linear_before_reset, spec.step_parallel
    gemv = _gemv_macro(spec)

    @T.prim_func
    def gru(
        proj: T.Buffer((t_, b_, d_, gh), "float32"),
        r: T.Buffer((d_, nb, h_, v_), "float32"),
        h0: T.Buffer((d_, b_, h_), "float32"),
        rbh: T.Buffer((d_, h_), "float32"),
        y: T.Buffer((t_, d_, b_, h_), "float32"),
        yh: T.Buffer((d_, b_, h_), "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "recurrent"})
        for d in (T.serial if step_parallel else T.parallel)(d_):
            h = T.alloc_buffer((2, b_, h_), "float32", scope="global")
            rh = T.alloc_buffer((1, b_, h_), "float32", scope="global")
            g = T.alloc_buffer((b_, gh), "float32", scope="global")
            for b, j in T.grid(b_, h_):
                h[0, b, j] = h0[d, b, j]
            for s in range(t_):
                t = _time_index(spec, d, s)
                if step_parallel:  # linear_before_reset: z, r and h·R_h + Rb_h of a unit block need only its rows
                    for jb in T.parallel(ub):
                        acc = T.alloc_buffer((v_,), "float32", scope="global")
                        for b in range(b_):
                            for gate in range(3):
                                gemv(h, s % 2, r, g, acc, d, b, gate * ub + jb, gate * ub + jb + 1)
                            for v in T.vectorized(v_):  # no let-bound values here: TVM 0.27 vectorizes LetStmts wrongly
                                g[b, jb * v_ + v] = fast_sigmoid(proj[t, b, d, jb * v_ + v] + g[b, jb * v_ + v])  # z
                                g[b, h_ + jb * v_ + v] = fast_tanh(
                                    proj[t, b, d, 2 * h_ + jb * v_ + v]
                                    + fast_sigmoid(proj[t, b, d, h_ + jb * v_ + v] + g[b, h_ + jb * v_ + v])
                                    * (g[b, 2 * h_ + jb * v_ + v] + rbh[d, jb * v_ + v])
                                )  # the candidate, in r's place
                                h[(s + 1) % 2, b, jb * v_ + v] = g[b, h_ + jb * v_ + v] + g[b, jb * v_ + v] * (
                                    h[s % 2, b, jb * v_ + v] - g[b, h_ + jb * v_ + v]
                                )  # (1 - z)·cand + z·h
                                y[t, d, b, jb * v_ + v] = h[(s + 1) % 2, b, jb * v_ + v]
                else:
                    acc = T.alloc_buffer((v_,), "float32", scope="global")
                    for b in range(b_):
                        gemv(h, 0, r, g, acc, d, b, 0, nb if lbr else zr_blocks)
                        for jb in range(ub):
                            for v in T.vectorized(v_):
                                g[b, jb * v_ + v] = fast_sigmoid(
                                    proj[t, b, d, jb * v_ + v] + g[b, jb * v_ + v]
                                )  # z, kept
                                rh[0, b, jb * v_ + v] = fast_sigmoid(
                                    proj[t, b, d, h_ + jb * v_ + v] + g[b, h_ + jb * v_ + v]
                                ) * (g[b, 2 * h_ + jb * v_ + v] + rbh[d, jb * v_ + v] if lbr else h[0, b, jb * v_ + v])
                        if not lbr:
                            gemv(rh, 0, r, g, acc, d, b, zr_blocks, nb)
                        for jb in range(ub):
                            for v in T.vectorized(v_):
                                g[b, 2 * h_ + jb * v_ + v] = fast_tanh(
                                    proj[t, b, d, 2 * h_ + jb * v_ + v]
                                    + (
                                        rh[0, b, jb * v_ + v]
                                        if lbr
                                        else g[b, 2 * h_ + jb * v_ + v] + rbh[d, jb * v_ + v]
                                    )
                                )  # candidate
                                h[0, b, jb * v_ + v] = g[b, 2 * h_ + jb * v_ + v] + g[b, jb * v_ + v] * (
                                    h[0, b, jb * v_ + v] - g[b, 2 * h_ + jb * v_ + v]
                                )  # (1 - z)·cand + z·h
                                y[t, d, b, jb * v_ + v] = h[0, b, jb * v_ + v]
            for b, j in T.grid(b_, h_):
                yh[d, b, j] = h[t_ % 2 if step_parallel else 0, b, j]

    return _root_block(gru)


def rnn_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    """(proj [T, B, D, H], R packed, h0 [D, B, H]) -> (Y [T, D, B, H], Y_h [D, B, H]); h = tanh(proj + h·R)."""
    t_, b_, h_, d_, v_ = spec.steps, spec.batch, spec.hidden, spec.directions, spec.tile
    nb = spec.gate_width // spec.tile
    gemv = _gemv_macro(spec)

    @T.prim_func
    def rnn(
        proj: T.Buffer((t_, b_, d_, h_), "float32"),
        r: T.Buffer((d_, nb, h_, v_), "float32"),
        h0: T.Buffer((d_, b_, h_), "float32"),
        y: T.Buffer((t_, d_, b_, h_), "float32"),
        yh: T.Buffer((d_, b_, h_), "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": "recurrent"})
        for d in T.parallel(d_):
            h = T.alloc_buffer((1, b_, h_), "float32", scope="global")
            g = T.alloc_buffer((b_, h_), "float32", scope="global")
            acc = T.alloc_buffer((v_,), "float32", scope="global")
            for b, j in T.grid(b_, h_):
                h[0, b, j] = h0[d, b, j]
            for s in range(t_):
                t = _time_index(spec, d, s)
                for b in range(b_):
                    gemv(h, 0, r, g, acc, d, b, 0, nb)
                    for j in T.vectorized(h_):
                        h[0, b, j] = fast_tanh(proj[t, b, d, j] + g[b, j])
                        y[t, d, b, j] = h[0, b, j]
            for b, j in T.grid(b_, h_):
                yh[d, b, j] = h[0, b, j]

    return _root_block(rnn)


def sequence_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    func = {"LSTM": lstm_func, "GRU": gru_func, "RNN": rnn_func}[spec.kind](spec)
    return func.with_attr(SPEC_ATTR, json.dumps(asdict(spec)))


def spec_of(func: tvm.tirx.PrimFunc) -> RecurrentSpec:
    """The RecurrentSpec sequence_func recorded in a kernel."""
    data = json.loads(str(func.attrs[SPEC_ATTR]))
    return RecurrentSpec(**(data | {"reverse": tuple(data["reverse"])}))
