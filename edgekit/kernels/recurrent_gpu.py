"""LSTM / GRU / RNN recurrences for GPU targets: the same parameters and results as kernels/recurrent.py's
CPU kernels, with one thread block per direction and one thread per hidden unit.

The steps of a recurrence are serial by nature; what runs in parallel within a step is the hidden units, each
thread computing its unit's gate dot products h·R[:, row] and cell update, and the directions (blocks). The
state h lives in shared memory, double-buffered (step s reads h[s % 2], writes h[(s + 1) % 2]) with one barrier
per step; a GRU without linear_before_reset needs all of r ⊙ h before its candidate's dot product: a second
buffer and barrier. Hidden sizes above the block's thread limit are refused (the rule falls back, the build
says so). R keeps the CPU kernel's packed layout [D, G·H / V, H, V]: row i of gate block i // V, lane i % V.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from edgekit.kernels.binary import _root_block
from edgekit.kernels.recurrent import RecurrentSpec, _time_index, fast_sigmoid, fast_tanh

MAX_THREADS = 1024


def _dot_macro(spec: RecurrentSpec):
    h_, v_ = spec.hidden, spec.tile

    @T.macro
    def dot(acc, src, p, r, d, b, row):
        # acc[0] = src[p, b, :] · R_d[row, :]
        acc[0] = T.float32(0)
        for k in range(h_):
            acc[0] = acc[0] + src[p, b, k] * r[d, row // v_, k, row % v_]

    return dot


def _state_macros(spec: RecurrentSpec):
    t_, b_ = spec.steps, spec.batch

    @T.macro
    def step_out(h, y, value, s, t, d, b, j):
        # unit j's new state: into the buffer step s + 1 reads, and into Y at time t
        h[(s + 1) % 2, b, j] = value
        y[t, d, b, j] = h[(s + 1) % 2, b, j]

    @T.macro
    def initial_state(h, h0, d, j):
        # unit j's initial state into the buffer step 0 reads (every thread's, before any step reads it)
        for b in range(b_):
            h[0, b, j] = h0[d, b, j]
        T.tvm_storage_sync("shared")

    @T.macro
    def final_state(h, yh, d, j):
        for b in range(b_):
            yh[d, b, j] = h[t_ % 2, b, j]

    return initial_state, step_out, final_state


def gpu_lstm_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    t_, b_, h_, d_, v_ = spec.steps, spec.batch, spec.hidden, spec.directions, spec.tile
    gh, nb = spec.gate_width, spec.gate_width // spec.tile
    dot, (_, step_out, final_state) = _dot_macro(spec), _state_macros(spec)

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
        T.func_attr({"tirx.noalias": True})
        for d in T.thread_binding(d_, thread="blockIdx.x"):
            for j in T.thread_binding(h_, thread="threadIdx.x"):
                h = T.alloc_buffer((2, b_, h_), "float32", scope="shared")
                c = T.alloc_buffer((b_,), "float32", scope="local")  # this unit's cell state, per batch row
                gi = T.alloc_buffer((1,), "float32", scope="local")
                gf = T.alloc_buffer((1,), "float32", scope="local")
                gc = T.alloc_buffer((1,), "float32", scope="local")
                go = T.alloc_buffer((1,), "float32", scope="local")
                for b in range(b_):
                    h[0, b, j] = h0[d, b, j]
                    c[b] = c0[d, b, j]
                T.tvm_storage_sync("shared")
                for s in range(t_):
                    t = _time_index(spec, d, s)
                    for b in range(b_):
                        dot(gi, h, s % 2, r, d, b, j)
                        dot(go, h, s % 2, r, d, b, h_ + j)
                        dot(gf, h, s % 2, r, d, b, 2 * h_ + j)
                        dot(gc, h, s % 2, r, d, b, 3 * h_ + j)
                        c[b] = fast_sigmoid(proj[t, b, d, 2 * h_ + j] + gf[0] + peep[d, 2, j] * c[b]) * c[
                            b
                        ] + fast_sigmoid(proj[t, b, d, j] + gi[0] + peep[d, 0, j] * c[b]) * fast_tanh(
                            proj[t, b, d, 3 * h_ + j] + gc[0]
                        )
                        step_out(
                            h,
                            y,
                            fast_sigmoid(proj[t, b, d, h_ + j] + go[0] + peep[d, 1, j] * c[b]) * fast_tanh(c[b]),
                            s,
                            t,
                            d,
                            b,
                            j,
                        )
                    T.tvm_storage_sync("shared")
                final_state(h, yh, d, j)
                for b in range(b_):
                    yc[d, b, j] = c[b]

    return _root_block(lstm)


def gpu_gru_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    t_, b_, h_, d_, v_ = spec.steps, spec.batch, spec.hidden, spec.directions, spec.tile
    gh, nb, lbr = spec.gate_width, spec.gate_width // spec.tile, spec.linear_before_reset
    dot, (initial_state, step_out, final_state) = _dot_macro(spec), _state_macros(spec)

    @T.prim_func
    def gru(
        proj: T.Buffer((t_, b_, d_, gh), "float32"),
        r: T.Buffer((d_, nb, h_, v_), "float32"),
        h0: T.Buffer((d_, b_, h_), "float32"),
        rbh: T.Buffer((d_, h_), "float32"),
        y: T.Buffer((t_, d_, b_, h_), "float32"),
        yh: T.Buffer((d_, b_, h_), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for d in T.thread_binding(d_, thread="blockIdx.x"):
            for j in T.thread_binding(h_, thread="threadIdx.x"):
                h = T.alloc_buffer((2, b_, h_), "float32", scope="shared")
                rh = T.alloc_buffer((1, b_, h_), "float32", scope="shared")  # r ⊙ h (without linear_before_reset)
                z = T.alloc_buffer((b_,), "float32", scope="local")
                reset = T.alloc_buffer((b_,), "float32", scope="local")
                acc = T.alloc_buffer((1,), "float32", scope="local")
                initial_state(h, h0, d, j)
                for s in range(t_):
                    t = _time_index(spec, d, s)
                    for b in range(b_):
                        dot(acc, h, s % 2, r, d, b, j)
                        z[b] = fast_sigmoid(proj[t, b, d, j] + acc[0])
                        dot(acc, h, s % 2, r, d, b, h_ + j)
                        reset[b] = fast_sigmoid(proj[t, b, d, h_ + j] + acc[0])
                        if not lbr:
                            rh[0, b, j] = reset[b] * h[s % 2, b, j]
                    if not lbr:
                        T.tvm_storage_sync("shared")
                    for b in range(b_):
                        if lbr:  # candidate = tanh(proj_h + r · (h·R_h + Rb_h))
                            dot(acc, h, s % 2, r, d, b, 2 * h_ + j)
                            acc[0] = reset[b] * (acc[0] + rbh[d, j])
                        else:  # candidate = tanh(proj_h + (r ⊙ h)·R_h + Rb_h)
                            dot(acc, rh, 0, r, d, b, 2 * h_ + j)
                            acc[0] = acc[0] + rbh[d, j]
                        acc[0] = fast_tanh(proj[t, b, d, 2 * h_ + j] + acc[0])
                        step_out(h, y, acc[0] + z[b] * (h[s % 2, b, j] - acc[0]), s, t, d, b, j)  # (1 - z)·cand + z·h
                    T.tvm_storage_sync("shared")
                final_state(h, yh, d, j)

    return _root_block(gru)


def gpu_rnn_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    t_, b_, h_, d_, v_ = spec.steps, spec.batch, spec.hidden, spec.directions, spec.tile
    nb = spec.gate_width // spec.tile
    dot, (initial_state, step_out, final_state) = _dot_macro(spec), _state_macros(spec)

    @T.prim_func
    def rnn(
        proj: T.Buffer((t_, b_, d_, h_), "float32"),
        r: T.Buffer((d_, nb, h_, v_), "float32"),
        h0: T.Buffer((d_, b_, h_), "float32"),
        y: T.Buffer((t_, d_, b_, h_), "float32"),
        yh: T.Buffer((d_, b_, h_), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for d in T.thread_binding(d_, thread="blockIdx.x"):
            for j in T.thread_binding(h_, thread="threadIdx.x"):
                h = T.alloc_buffer((2, b_, h_), "float32", scope="shared")
                acc = T.alloc_buffer((1,), "float32", scope="local")
                initial_state(h, h0, d, j)
                for s in range(t_):
                    t = _time_index(spec, d, s)
                    for b in range(b_):
                        dot(acc, h, s % 2, r, d, b, j)
                        step_out(h, y, fast_tanh(proj[t, b, d, j] + acc[0]), s, t, d, b, j)
                    T.tvm_storage_sync("shared")
                final_state(h, yh, d, j)

    return _root_block(rnn)


def gpu_sequence_func(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    if spec.hidden > MAX_THREADS:
        raise ValueError(f"hidden size {spec.hidden} exceeds {MAX_THREADS} threads per block")
    return {"LSTM": gpu_lstm_func, "GRU": gpu_gru_func, "RNN": gpu_rnn_func}[spec.kind](spec)
