"""Reproducibly train ``digits_cnn.py`` on edgekit's fixed digits split.

Usage (from the repository root)::

    PYTHONPATH=. python models/train_digits.py [--epochs N] [--out models/digits_cnn.pt]

Training runs single-threaded on CPU with all randomness seeded and deterministic
algorithms enforced, so the same torch version reproduces the same weights. The test
split is only used for the final report, never for model selection.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.datasets import accuracy, load_digits_split
from edgekit.finetune import random_shift  # ±1 px shifts: a cheap, label-preserving augmentation

HERE = Path(__file__).resolve().parent
SEED = 0


def _load_model_module() -> ModuleType:
    # The zoo is loaded by path (models/ is not a package), so do the same here.
    path = HERE / "digits_cnn.py"
    spec = importlib.util.spec_from_file_location("edgekit_zoo_digits_cnn", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(x)).numpy()


def train(epochs: int, batch_size: int, lr: float, weight_decay: float) -> tuple[torch.nn.Module, float]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    split = load_digits_split()
    x_train = torch.from_numpy(split.x_train)
    y_train = torch.from_numpy(split.y_train)

    model = _load_model_module().create()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)

    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total_loss = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            xb = random_shift(x_train[idx], 1, gen)
            loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            train_acc = accuracy(predict(model, split.x_train), split.y_train)
            mean_loss = total_loss / len(perm)
            print(f"epoch {epoch + 1:3d}  loss {mean_loss:.4f}  train acc {train_acc:.4f}")

    model.eval()
    test_acc = accuracy(predict(model, split.x_test), split.y_test)
    return model, test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=HERE / "digits_cnn.pt")
    args = parser.parse_args()

    start = time.perf_counter()
    model, test_acc = train(args.epochs, args.batch_size, args.lr, args.weight_decay)
    elapsed = time.perf_counter() - start

    torch.save(model.state_dict(), args.out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}  train time {elapsed:.1f}s")
    print(f"test accuracy {test_acc:.4f}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
