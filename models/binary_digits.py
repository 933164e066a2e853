"""XNOR (binary weights + binary activations) CNN for scikit-learn's 8x8 digits.

Built for binarization rather than adapted to it: no ReLU in front of a binary conv (sign(ReLU(x)) is
always +1), BatchNorm before every sign so the threshold sits at the batch mean, and a real-valued
shortcut around the same-shape binary block (Bi-Real Net). The first conv and the classifier stay
float. ``create()`` returns the *folded* network: plain Conv2d layers whose weights are exactly
sign·α per output channel, applied to Where(x >= 0, 1, -1) inputs, so the state dict in
``binary_digits.pt`` is the deployed model and `edgekit export` + the binarize pass pack it losslessly.
Trained by ``train_binary_digits.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.finetune import binarize_module, fold_binary

DESCRIPTION = "XNOR CNN for 8x8 digits (1-bit weights+activations inside, float first/last), trained weights"
INPUT_SHAPE: tuple[int, ...] = (1, 1, 8, 8)
WEIGHTS: str | None = "binary_digits.pt"
MODE = "xnor"  # binary weights and activations in every layer except the first and last
BINARIZER = "ste_sign"  # the weight quantizer it was trained with (train_binary_digits.py --binarizer)

NUM_CLASSES = 10
SEED = 0
WIDTH = (32, 64, 128)


class BinaryDigitsNet(nn.Module):
    """stem conv (float) -> [sign -> conv -> BN] x3 with a pool and a shortcut -> GAP -> linear (float)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: tuple[int, int, int] = WIDTH) -> None:
        super().__init__()
        c1, c2, c3 = width
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1))
        self.conv1 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)  # binary from here ...
        self.bn1 = nn.BatchNorm2d(c2)
        self.pool = nn.MaxPool2d(2)  # 8x8 -> 4x4
        self.conv2 = nn.Conv2d(c2, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)  # ... to here
        self.bn3 = nn.BatchNorm2d(c3)
        self.act = nn.PReLU(c3)  # a float nonlinearity before the float head (signs came before every conv)
        self.head = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.pool(self.bn1(self.conv1(x)))
        x = x + self.bn2(self.conv2(x))  # real-valued shortcut keeps the information the sign drops
        x = self.act(self.bn3(self.conv3(x)))
        return self.head(torch.flatten(x.mean(dim=(2, 3)), 1))


def create_float() -> nn.Module:
    """The latent float architecture (what training binarizes), seeded without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = BinaryDigitsNet()
    return model


def create_trainable(binarizer: str = BINARIZER, mode: str = MODE) -> nn.Module:
    return binarize_module(create_float(), mode=mode, binarizer=binarizer, keep=("first", "last"))


def create() -> nn.Module:
    """The deployable (folded) binary model in eval mode; load binary_digits.pt into it."""
    return fold_binary(create_trainable()).eval()
