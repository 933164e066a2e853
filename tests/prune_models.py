"""Small torch models and helpers shared by the pruning-family tests (test_structured, test_prune, test_lowrank,
test_depth): the export every test uses, the residual CNN and the MLP more than one file prunes, and the
onnxruntime run the results are compared with. Imported as a plain module, as realworld.py is."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from edgekit.onnxkit.graph import fixed_shapes, random_inputs, resolve_input_specs
from edgekit.onnxkit.tools import ort_session


def export(module: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    torch.manual_seed(0)
    module.eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.rand(*shape),), buf, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"]
        )
    return onnx.load_from_string(buf.getvalue())


def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    """Two basic blocks (identity and 1x1-projection shortcuts), GAP, Flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.a1, self.a2 = cbr(32, 32), nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32))
        self.b1, self.b2 = cbr(32, 64, s=2), nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1), nn.BatchNorm2d(64))
        self.proj = nn.Sequential(nn.Conv2d(32, 64, 1, 2), nn.BatchNorm2d(64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a2(self.a1(x)))
        x = torch.relu(self.proj(x) + self.b2(self.b1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.pw = nn.Conv2d(64, 64, 1, stride=2, padding=1)
        self.fc1, self.fc2 = nn.Linear(64 * 9 * 9, 96), nn.Linear(96, 10)

    def forward(self, x):
        x = torch.relu(self.pw(torch.relu(self.conv(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def outputs(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort_session(model).run(None, feed)


def feed_for(model: onnx.ModelProto) -> dict:
    return random_inputs(resolve_input_specs(model, fixed_shapes(model)))
