"""passes/depth.py: residual blocks replaced by linear maps fitted on calibration data, and the CLI's --depth
(with --rank beside it)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from prune_models import cbr, export, outputs
from torch import nn

from edgekit.core.errors import EdgekitError


class Deep(nn.Module):
    """Four identity-shortcut blocks; block 2's branch is scaled down so that it changes its input least."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.blocks = nn.ModuleList([nn.Sequential(cbr(16, 16), nn.Conv2d(16, 16, 3, 1, 1)) for _ in range(4)])
        with torch.no_grad():
            self.blocks[2][1].weight.mul_(0.01)
            self.blocks[2][1].bias.mul_(0.01)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.head(x)


def test_depth_replaces_the_least_changing_block_by_a_fitted_map(tmp_path):
    from edgekit.passes import depth

    model = export(Deep(), (2, 3, 12, 12))
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(0, 1, (2, 3, 12, 12)).astype(np.float32)} for _ in range(6)]
    out, report = depth.run(model, depth.DepthConfig(blocks=1, calibration=calib))
    assert len(report.extra["candidates"]) == 4
    (replaced,) = report.layers
    assert "blocks.2" in replaced.name or report.extra["candidates"][0]["exit"] == replaced.name.split(" -> ")[1]
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    assert len(convs) == 1 + 3 * 2 + 1 + 1  # stem, three blocks, the fitted 1×1 map, head
    err = np.mean(
        [np.abs(outputs(out, f)[0] - outputs(model, f)[0]).mean() / np.abs(outputs(model, f)[0]).mean() for f in calib]
    )
    assert err < 0.05, err
    with pytest.raises(EdgekitError, match="replaceable residual block"):
        depth.run(model, depth.DepthConfig(blocks=5, calibration=calib))
    with pytest.raises(EdgekitError, match="needs calibration"):
        depth.run(model, depth.DepthConfig(blocks=1))


def test_cli_depth_and_lowrank(cli, tmp_path):
    model = export(Deep(), (1, 3, 12, 12))
    onnx.save(model, tmp_path / "deep.onnx")
    res = cli(
        "compress", tmp_path / "deep.onnx", "--depth", "1", "--calib", "random", "-o", tmp_path / "d.onnx", "--json"
    )
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["pass"] == "depth"
    res = cli("compress", tmp_path / "deep.onnx", "--rank", "2", "-o", tmp_path / "r.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["pass"] == "lowrank"
    res = cli("compress", tmp_path / "deep.onnx", "--depth", "1", "-o", tmp_path / "e.onnx")
    assert res.exit_code == 2 and "needs calibration" in res.stderr
