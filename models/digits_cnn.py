"""Small CNN for scikit-learn's 8x8 digits: the accuracy yardstick of the zoo.

BatchNorm layers are kept on purpose so that the BN-folding passes have something
to fold; the trained weights live in ``digits_cnn.pt`` (see ``train_digits.py``).
"""

from __future__ import annotations

import torch
from torch import nn

DESCRIPTION = "Small conv+BN CNN for 8x8 grayscale digits (10 classes), trained weights"
INPUT_SHAPE: tuple[int, ...] = (1, 1, 8, 8)
WEIGHTS: str | None = "digits_cnn.pt"

NUM_CLASSES = 10
SEED = 0


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # bias=False: the following BatchNorm provides the shift, as in standard CNNs.
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 16),  # 8x8
            _conv_bn_relu(16, 32),  # 8x8
            nn.MaxPool2d(2),  # -> 4x4
            _conv_bn_relu(32, 64),  # 4x4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


def create() -> nn.Module:
    """Randomly initialised model in eval mode; init is seeded without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = DigitsCNN()
    return model.eval()
