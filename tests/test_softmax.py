"""Softmax as one kernel (edgekit/kernels/softmax.py): the kernel and its exp against NumPy on AVX2 / AVX-512 code,
widths with and without a scalar tail; a transformer built with it validates (tests/test_realworld.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import X86_TARGETS, skip_unless_host_runs

from edgekit.kernels.softmax import softmax_func


@pytest.mark.parametrize("isa,lanes", [("avx512", 16), ("avx2", 8)])
@pytest.mark.parametrize("shape", [(1, 4, 65, 65), (9, 32), (3, 1, 21)])  # ViT-tiny's scores; no tail; 5 left over
def test_kernel_matches_numpy(isa, lanes, shape):
    x = (np.random.default_rng(0).standard_normal(shape) * 8).astype(np.float32)
    x.reshape(-1, shape[-1])[0, :3] = [-200.0, 90.0, 89.0]  # exp's clamped range at both ends
    lib = tvm.compile(tvm.IRModule({"main": softmax_func(shape, lanes)}), target=tvm.target.Target(X86_TARGETS[isa]))
    skip_unless_host_runs(X86_TARGETS[isa])
    out = tvm.runtime.empty(shape, "float32")
    lib["main"](tvm.runtime.tensor(x), out)
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    np.testing.assert_allclose(out.numpy(), e / e.sum(-1, keepdims=True), rtol=2e-6, atol=1e-7)
