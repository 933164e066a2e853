"""The finetuning loop on the digits task, with knowledge distillation from the float model."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FinetuneResult:
    model: nn.Module
    test_accuracy: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2, zero-filled.

    Handwritten digits are not perfectly centred, so small translations are a cheap, label-preserving
    augmentation for a 1.3k-image training set (used by models/train_digits.py too)."""
    n, _, h, w = x.shape
    k = 2 * max_shift + 1
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, k, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for dy in range(k):
        for dx in range(k):
            sel = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            out[sel] = padded[sel, :, dy : dy + h, dx : dx + w]
    return out


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Hinton KD: T² · KL(softmax(t/T) ‖ softmax(s/T)); the T² keeps gradients comparable across T."""
    t = temperature
    return (
        F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True)
        * t
        * t
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def finetune(
    model: nn.Module,
    teacher: nn.Module | None = None,
    epochs: int = 40,
    lr: float = 5e-3,
    distill_weight: float = 0.5,
    temperature: float = 4.0,
    seed: int = 0,
    batch_size: int = 64,
    log: Callable[[str], None] | None = None,
    after_step: Callable[[int, int], None] | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Train `model` (in place) on the fixed digits split; loss = (1-λ)·CE + λ·KD(teacher) when a teacher is given.

    Single-threaded, seeded and deterministic; the test split is only used for the final number.
    Adam without weight decay: decay would pull latent weights to 0, where binary signs flip at random.
    `after_step(step, total_steps)` runs after every optimizer step (pruning masks are re-applied there),
    `after_epoch(epoch)` after every epoch (1-based; lottery tickets snapshot their rewind point there).
    """
    from edgekit.datasets import load_digits_split

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        split = load_digits_split()
        x_train, y_train = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
        if teacher is not None:
            teacher.eval()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * ((len(x_train) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
        history = []
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(x_train), generator=gen)
            total = 0.0
            for i in range(0, len(perm), batch_size):
                idx = perm[i : i + batch_size]
                xb = random_shift(x_train[idx], 1, gen)
                out = model(xb)
                loss = F.cross_entropy(out, y_train[idx])
                if teacher is not None and distill_weight > 0:
                    with torch.no_grad():
                        t_out = teacher(xb)
                    loss = (1 - distill_weight) * loss + distill_weight * distillation_loss(out, t_out, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if after_step is not None:
                    after_step(sched.last_epoch, steps)
                total += loss.item() * len(idx)
            history.append({"epoch": epoch + 1, "loss": total / len(perm)})
            if after_epoch is not None:
                after_epoch(epoch + 1)
            if log and ((epoch + 1) % 10 == 0 or epoch == epochs - 1):
                log(f"epoch {epoch + 1:3d}  loss {total / len(perm):.4f}")
        model.eval()
        acc = evaluate(model, split.x_test, split.y_test)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return FinetuneResult(model, acc, time.perf_counter() - start, history)
