"""A DBNet-style text detector stand-in (PP-OCR det shape): small depthwise Hardswish backbone, FPN with nearest
upsampling, two ConvTranspose k2s2 upsamplers, 640x640. Random weights: a speed and compile-time check only
(no third-party OCR model can be downloaded here). Used by bench/detector.py."""

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 3, 640, 640)


def cbr(i, o, k=3, s=1, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.Hardswish())


class Block(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.dw = cbr(i, i, 3, s, g=i)
        self.pw = cbr(i, o, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class DBNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16, 3, 2)
        chans = [
            (16, 24, 2),
            (24, 24, 1),
            (24, 40, 2),
            (40, 40, 1),
            (40, 80, 2),
            (80, 80, 1),
            (80, 112, 1),
            (112, 160, 2),
            (160, 160, 1),
        ]
        self.blocks = nn.ModuleList(Block(i, o, s) for i, o, s in chans)
        self.taps = {1, 3, 6, 8}
        self.lat = nn.ModuleList(nn.Conv2d(c, 96, 1) for c in (24, 40, 112, 160))
        self.smooth = nn.ModuleList(nn.Conv2d(96, 24, 3, padding=1) for _ in range(4))
        self.head = nn.Sequential(
            cbr(96, 24),
            nn.ConvTranspose2d(24, 24, 2, 2),
            nn.BatchNorm2d(24),
            nn.ReLU(),
            nn.ConvTranspose2d(24, 1, 2, 2),
            nn.Sigmoid(),
        )

    def forward(self, x):
        feats = []
        x = self.stem(x)
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in self.taps:
                feats.append(x)
        p = [l(f) for l, f in zip(self.lat, feats)]
        for i in range(3, 0, -1):
            p[i - 1] = p[i - 1] + F.interpolate(p[i], size=p[i - 1].shape[-2:], mode="nearest")
        outs = [F.interpolate(s(q), size=p[0].shape[-2:], mode="nearest") for s, q in zip(self.smooth, p)]
        return self.head(torch.cat(outs, 1))


def make():
    torch.manual_seed(0)
    return DBNetLike().eval()
