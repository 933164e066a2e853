"""Small labelled datasets that ship with installed packages (no hub downloads).

The digits task (scikit-learn's bundled 8x8 handwritten digits, 1797 images) is the
accuracy yardstick for every stage: torch fp32, onnxruntime and TVM must agree on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray  # float32, NCHW (N, 1, 8, 8), scaled to [0, 1]
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split() -> Split:
    """The fixed, stratified train/test split used everywhere in edgekit."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    return Split(np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(axis=1) == labels).mean())


def test_batches(batch: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The digits test images in batches of `batch` (a model's fixed batch; the remainder dropped) and their labels."""
    split = load_digits_split()
    n = len(split.x_test) - len(split.x_test) % batch
    return [split.x_test[i : i + batch] for i in range(0, n, batch)], split.y_test[:n]


def digits_logits(run_batch: Callable[[np.ndarray], np.ndarray], batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A model's logits over the digits test split, run in batches of `batch` (run_batch: images -> logits of
    one batch; test_batches drops the remainder), and their labels."""
    chunks, labels = test_batches(batch)
    return np.concatenate([run_batch(c) for c in chunks]), labels


def digits_accuracy(run_batch: Callable[[np.ndarray], np.ndarray], batch: int = 1) -> float:
    """Top-1 accuracy on the digits test split of a model run as run_batch (see digits_logits)."""
    return accuracy(*digits_logits(run_batch, batch))
