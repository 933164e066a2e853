"""LayerNorm as one kernel (edgekit/kernels/layer_norm.py): the kernel against NumPy on AVX2 / AVX-512 code, and
models exporting LayerNorm as arithmetic (opset 13) or as LayerNormalization (opset 17) built with it, validated
against onnxruntime."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import tvm
from conftest import X86_TARGETS, skip_unless_host_runs

from edgekit.compiler.build import compile_onnx
from edgekit.compiler.options import BuildOptions
from edgekit.kernels.layer_norm import lanes_for, layer_norm_func


@pytest.mark.parametrize("isa,lanes", [("avx512", 16), ("avx2", 8)])
@pytest.mark.parametrize("shape", [(1, 65, 64), (3, 24), (2, 7, 20)])  # ViT-tiny's rows; 8 and 4 lanes
def test_kernel_matches_numpy(isa, lanes, shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    gamma, beta = rng.standard_normal((2, shape[-1])).astype(np.float32)
    func = layer_norm_func(shape, 1e-5, lanes_for(shape[-1], lanes))
    lib = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(X86_TARGETS[isa]))
    skip_unless_host_runs(X86_TARGETS[isa])
    out = tvm.runtime.empty(shape, "float32")
    lib["main"](*[tvm.runtime.tensor(a) for a in (x, gamma, beta)], out)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(out.numpy(), (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-5, atol=1e-5)


def test_rows_narrower_than_a_vector_are_left_alone():
    assert lanes_for(64, 16) == 16 and lanes_for(24, 16) == 8 and lanes_for(20, 16) == 4 and lanes_for(6, 16) is None


class _Norms(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.LayerNorm(48), torch.nn.LayerNorm(48)
        with torch.no_grad():
            for ln in (self.a, self.b):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)) * 2.0)


@pytest.mark.parametrize("opset", [13, 17])
def test_exported_layer_norms_run_as_the_kernel_and_validate(opset, tmp_path):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Norms().eval(), (torch.randn(1, 10, 48) * 4,), buf, opset_version=opset, dynamo=False)
    (tmp_path / "m.onnx").write_bytes(buf.getvalue())
    result = compile_onnx(tmp_path / "m.onnx", tmp_path / "art", "x86_64", BuildOptions(threads=2), quiet=True)
    assert result.validation.ok and result.validation.max_abs <= 1e-4, result.validation.to_json()
    rules = result.meta["build"]["rule_per_function"]
    assert set(rules.values()) == {"layer-norm kernel", "injective"}, rules  # both norms (one shared kernel)
