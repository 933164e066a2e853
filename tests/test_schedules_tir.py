"""The shared schedule helpers (edgekit/compiler/schedules/tir.py) on small TE functions."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir import Schedule

from edgekit.compiler.schedules.tir import LANES, par_vec


def _vector_widths(func: tvm.tirx.PrimFunc) -> set[int]:
    """The extents of the vectorized loops (read off the printed TIR: tirx exposes no statement visitor)."""
    return {int(n) for n in re.findall(r"T\.vectorized\((\d+)\)", func.script())}


@pytest.mark.parametrize("width,vectorized", [(64, {16}), (24, {8}), (249, set())])
def test_elementwise_rows_vectorize_in_register_pieces_or_not_at_all(width, vectorized):
    """249 (3 x 83, an STFT's frame count) has no divisor of register size: left to LLVM's vectorizer rather than
    one <249 x float> vector (whose code generation took LLVM 70 s on Zen 4/5 targets)."""
    x = te.placeholder((32, width), name="x")
    y = te.compute((32, width), lambda i, j: te.log(x[i, j] * x[i, j] + 1e-6), name="y")
    sch = Schedule(te.create_prim_func([x, y]))
    par_vec(sch, sch.get_sblock("y"), threads=2)
    assert _vector_widths(sch.mod["main"]) == vectorized
    assert max(vectorized, default=0) <= LANES
    lib = tvm.compile(sch.mod, target=tvm.target.Target({"kind": "llvm"}))
    a = np.random.default_rng(0).random((32, width)).astype(np.float32)
    out = tvm.runtime.empty((32, width), "float32")
    lib["main"](tvm.runtime.tensor(a), out)
    np.testing.assert_allclose(out.numpy(), np.log(a * a + 1e-6), rtol=1e-5)
