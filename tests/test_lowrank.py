"""passes/lowrank.py: low-rank factorization of weight layers (exact at the weights' true rank, ranks chosen by
the energy kept), compiled and validated."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from prune_models import Mlp, export, feed_for, outputs
from torch import nn

from edgekit.compiler.build import compile_onnx
from edgekit.core.errors import EdgekitError


def _low_rank_weights(module: nn.Module, rank: int) -> nn.Module:
    """Weights of exact rank `rank`, so that factorizing at that rank must reproduce the model."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in (module.pw, module.fc1):
            w = m.weight.view(m.weight.shape[0], -1)
            w.copy_(torch.randn(w.shape[0], rank, generator=g) @ torch.randn(rank, w.shape[1], generator=g) * 0.05)
    return module


def test_lowrank_at_the_true_rank_is_exact_and_energy_picks_ranks(tmp_path):
    from edgekit.passes import lowrank

    model = export(_low_rank_weights(Mlp(), 8), (1, 3, 16, 16))
    feed = feed_for(model)
    out, report = lowrank.run(model, lowrank.LowRankConfig(rank=8, skip=("*fc2*",)))  # fc2 is full rank
    notes = {l.name: l.note for l in report.layers}
    assert any("rank 8 of 64" in n for n in notes.values()) and any("rank 8 of 96" in n for n in notes.values())
    np.testing.assert_allclose(outputs(out, feed)[0], outputs(model, feed)[0], rtol=1e-4, atol=1e-4)
    assert report.weight_bytes_after < 0.5 * report.weight_bytes_before
    _, report_e = lowrank.run(model, lowrank.LowRankConfig(energy=0.999))
    ranks = {l.name: l.note for l in report_e.layers}
    assert sum("rank 8 of" in n for n in ranks.values()) == 2, ranks
    onnx.save(out, tmp_path / "lr.onnx")
    result = compile_onnx(tmp_path / "lr.onnx", tmp_path / "art", "x86_64", quiet=True)
    assert result.validation is not None and result.validation.ok
    with pytest.raises(EdgekitError, match="one of --rank"):
        lowrank.run(model, lowrank.LowRankConfig())
    with pytest.raises(EdgekitError, match="outside"):
        lowrank.run(model, lowrank.LowRankConfig(energy=1.5))
