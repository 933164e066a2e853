"""Pruning during training (the `edgekit finetune --prune` side): masks on Conv2d / Linear weights, kept through
every optimizer step.

    gradual     magnitude pruning whose sparsity follows the cubic schedule of Zhu & Gupta,
                s_t = s_f + (s_i - s_f)·(1 - (t - t0)/(n·Δt))³, from the trained model, with distillation
    lottery     iterative magnitude pruning with weight rewinding: train, prune p% of what is left, rewind the
                surviving weights to their values at an early epoch, retrain; and the same final mask with a
                random re-initialization beside it (the control that says whether the ticket matters)
    structured  whole output channels (filter + its BatchNorm γ, β) masked to zero, then finetuned; the ONNX
                structured pass then removes exactly those channels, since their importance is 0

References:
    Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model compression", 2017.
    Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019; Frankle et al., "Stabilizing the Lottery
    Ticket Hypothesis" (rewinding to iteration k), 2019.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgekit.training.layers import weight_layers


def cubic_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule: `initial` before `begin`, `final` from `end` on, cubic in between."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1.0 - (step - begin) / (end - begin)) ** 3


class WeightMasks:
    """One 0/1 mask per Conv2d/Linear weight (all layers but those named in `skip`), re-applied after each step.
    `block` > 1: whole blocks of that many output channels at one input position, ranked by their RMS, as the ONNX
    pass prunes them (passes/prune.block_masks: the same count per layer, so it finds exactly the zeroed blocks);
    depthwise convs and layers whose output channels `block` does not divide stay dense there and here."""

    def __init__(self, model: nn.Module, skip: tuple[str, ...] = (), block: int = 1) -> None:
        self.block = block
        self.layers = {
            name: m for name, m in weight_layers(model) if name not in skip and (block == 1 or self._blockable(m))
        }
        self.masks = {name: torch.ones_like(m.weight, dtype=torch.bool) for name, m in self.layers.items()}

    def _blockable(self, m: nn.Module) -> bool:
        depthwise = isinstance(m, nn.Conv2d) and m.groups > 1 and m.weight.shape[1] == 1
        return m.weight.shape[0] % self.block == 0 and not depthwise

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Per-layer magnitude masks at `sparsity` (of each layer's weights or blocks; pruned ones stay pruned)."""
        for name, m in self.layers.items():
            b = self.block
            w = m.weight.reshape(m.weight.shape[0] // b, b, -1)  # block = 1: one weight per "block"
            score = w.pow(2).mean(dim=1).sqrt().masked_fill(~self.masks[name].reshape(w.shape)[:, 0], -1.0).flatten()
            k = int(round(sparsity * score.numel()))
            keep = torch.ones_like(score, dtype=torch.bool)
            if k:
                keep[torch.argsort(score, stable=True)[:k]] = False
            mask = keep.view(w.shape[0], 1, -1).expand(w.shape).reshape(m.weight.shape)
            self.masks[name] = mask & self.masks[name]
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for name, m in self.layers.items():
            m.weight.mul_(self.masks[name])

    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total


def gradual_prune(
    model: nn.Module,
    final: float,
    epochs: int,
    teacher: nn.Module | None = None,
    lr: float = 2e-3,
    seed: int = 0,
    skip: tuple[str, ...] = (),
    distill_weight: float = 0.5,
    block: int = 1,
):
    """Finetune `model` (in place) while its sparsity rises from 0 to `final` over the first 60% of the steps,
    pruning every 1/20 of that span; the rest of training recovers at the final sparsity."""
    from edgekit.training.loop import finetune

    masks = WeightMasks(model, skip, block)

    def after_step(step: int, total: int) -> None:
        end = int(0.6 * total)
        every = max(1, end // 20)
        if step % every == 0 or step == end:
            masks.prune_to(cubic_sparsity(step, final, 0, end))
        masks.apply()

    result = finetune(
        model, teacher=teacher, epochs=epochs, lr=lr, distill_weight=distill_weight, seed=seed, after_step=after_step
    )
    return result, masks


def lottery_ticket(
    create: callable,
    sparsity: float,
    rounds: int = 3,
    epochs: int = 30,
    rewind_epoch: int = 1,
    lr: float = 5e-3,
    seed: int = 0,
    skip: tuple[str, ...] = (),
    block: int = 1,
) -> dict:
    """Iterative magnitude pruning with rewinding, from a fresh `create()` model: returns the ticket (a trained
    model, its masks, its accuracy), the dense accuracy, and the random re-initialization control."""
    from edgekit.training.loop import finetune

    model = create()
    snapshot: dict = {}

    def remember(epoch: int) -> None:
        if epoch == rewind_epoch:
            snapshot.update(copy.deepcopy(model.state_dict()))

    dense = finetune(model, epochs=epochs, lr=lr, seed=seed, after_epoch=remember).test_accuracy
    masks = WeightMasks(model, skip, block)
    history = []
    for r in range(1, rounds + 1):
        masks.prune_to(1.0 - (1.0 - sparsity) ** (r / rounds))  # the same fraction of what is left, each round
        model.load_state_dict(snapshot)
        masks.apply()
        acc = finetune(model, epochs=epochs, lr=lr, seed=seed, after_step=lambda *_: masks.apply()).test_accuracy
        history.append({"round": r, "sparsity": masks.sparsity(), "accuracy": acc})
    control = create()
    with torch.no_grad():  # a different random initialization, the ticket's mask
        torch.manual_seed(seed + 1)
        for m in control.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
    control_masks = WeightMasks(control, skip, block)
    control_masks.masks = {k: v.clone() for k, v in masks.masks.items()}
    control_masks.apply()
    control_acc = finetune(
        control, epochs=epochs, lr=lr, seed=seed, after_step=lambda *_: control_masks.apply()
    ).test_accuracy
    return {
        "model": model,
        "masks": masks,
        "dense_accuracy": dense,
        "ticket_accuracy": history[-1]["accuracy"],
        "random_reinit_accuracy": control_acc,
        "rounds": history,
        "rewind_epoch": rewind_epoch,
    }


class ChannelMasks:
    """Structured: whole output channels of each Conv2d (and the BatchNorm after it) held at zero."""

    def __init__(self, model: nn.Module, ratio: float, round_to: int = 4) -> None:
        from edgekit.passes.structured import _kept_count

        self.pairs = []
        modules = list(model.modules())
        for i, m in enumerate(modules):
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                bn = next((b for b in modules[i + 1 : i + 2] if isinstance(b, nn.BatchNorm2d)), None)
                with torch.no_grad():
                    score = m.weight.flatten(1).norm(dim=1)
                    if bn is not None:
                        score = score * bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)
                keep = torch.zeros(m.out_channels, dtype=torch.bool)
                keep[torch.argsort(-score, stable=True)[: _kept_count(m.out_channels, ratio, round_to)]] = True
                self.pairs.append((m, bn, keep))

    @torch.no_grad()
    def apply(self) -> None:
        for conv, bn, keep in self.pairs:
            conv.weight[~keep] = 0
            if conv.bias is not None:
                conv.bias[~keep] = 0
            if bn is not None:
                bn.weight[~keep] = 0
                bn.bias[~keep] = 0
