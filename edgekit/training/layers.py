"""Binary and fake-quantized torch layers, and the module surgery that swaps them in and folds them out."""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.training.quantizers import Binarizer, fake_quant, get_binarizer, hard_sign


class _BinaryMixin:
    """Weights q(W)·α with α_o = mean|W[o]| (XNOR-Net); inputs q_a(x) when binarize_input (xnor mode)."""

    weight: torch.Tensor
    binarizer: Binarizer
    act_binarizer: Binarizer
    binarize_input: bool

    def _setup(self, binarizer: str | Binarizer, binarize_input: bool, act_binarizer: str | Binarizer) -> None:
        self.binarizer = get_binarizer(binarizer)
        self.act_binarizer = get_binarizer(act_binarizer)
        self.binarize_input = binarize_input

    def binary_weight(self) -> torch.Tensor:
        w = self.weight
        alpha = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
        return self.binarizer(w) * alpha

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.binarize_input:
            return x
        return self.act_binarizer(x) if self.training else hard_sign(x)


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._input(x), self.binary_weight(), self.bias)


class BinaryLinear(_BinaryMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self.binary_weight(), self.bias)


class SignInputConv2d(nn.Conv2d):
    """A folded xnor conv: float weights (already ±α) applied to Where(x >= 0, 1, -1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(hard_sign(x))


class SignInputLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(hard_sign(x))


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _kept(names: list[str], keep: Iterable[str]) -> set[str]:
    """Resolve keep = ("first", "last", fnmatch patterns on module names) to module names."""
    kept: set[str] = set()
    for k in keep:
        if k == "first" and names:
            kept.add(names[0])
        elif k == "last" and names:
            kept.add(names[-1])
        else:
            kept.update(n for n in names if fnmatch.fnmatchcase(n, k))
    return kept


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _clone_as(layer: nn.Module, cls: type) -> nn.Module:
    # Same constructor arguments and state dict keys as the original layer: checkpoints stay interchangeable.
    if isinstance(layer, nn.Conv2d):
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
        )
    else:
        new = cls(layer.in_features, layer.out_features, layer.bias is not None)
    new.load_state_dict(layer.state_dict())
    return new.train(layer.training)


def binarize_module(
    model: nn.Module,
    mode: str = "weights",
    binarizer: str | Binarizer = "ste_sign",
    keep: Iterable[str] = ("first", "last"),
    act_binarizer: str | Binarizer = "ste_sign",
    omega: float = 20.0,
) -> nn.Module:
    """A copy of `model` with its Conv2d/Linear layers (except `keep`) made binary.

    mode "weights": binary weights (BWN); "xnor": binary weights and inputs. For "biper" the latent
    weights of each layer are scaled into (-π/2ω, π/2ω) so that sign(sin(ωW)) = sign(W) at the start.
    """
    if mode not in ("weights", "xnor"):
        raise ValueError(f"mode must be 'weights' or 'xnor', got {mode!r}")
    model = copy.deepcopy(model)
    layers = weight_layers(model)
    kept = _kept([n for n, _ in layers], keep)
    wq = get_binarizer(binarizer, omega=omega) if binarizer == "biper" else get_binarizer(binarizer)
    for name, layer in layers:
        if name in kept:
            continue
        new = _clone_as(layer, BinaryConv2d if isinstance(layer, nn.Conv2d) else BinaryLinear)
        new._setup(wq, mode == "xnor", act_binarizer)
        if binarizer == "biper":
            with torch.no_grad():
                new.weight.mul_((math.pi / (2 * omega)) / new.weight.abs().max().clamp_min(1e-12))
        _replace(model, name, new)
    return model


@torch.no_grad()
def fold_binary(model: nn.Module) -> nn.Module:
    """A plain float copy: Binary* layers become Conv2d/Linear (or SignInput* in xnor) with weights sign·α."""
    model = copy.deepcopy(model)
    for name, layer in weight_layers(model):
        if isinstance(layer, _BinaryMixin):
            is_conv = isinstance(layer, nn.Conv2d)
            cls = (
                (SignInputConv2d if is_conv else SignInputLinear)
                if layer.binarize_input
                else (nn.Conv2d if is_conv else nn.Linear)
            )
            new = _clone_as(layer, cls)
            new.weight.copy_(layer.binary_weight())
            _replace(model, name, new)
    return model


def binary_layer_names(model: nn.Module) -> list[str]:
    """Names of the binary layers of an unfolded model (and of a folded xnor one)."""
    return [n for n, m in weight_layers(model) if isinstance(m, (_BinaryMixin, SignInputConv2d, SignInputLinear))]


def model_mode(model: nn.Module) -> str:
    layers = [m for _, m in weight_layers(model) if isinstance(m, (_BinaryMixin, SignInputConv2d, SignInputLinear))]
    xnor = any(isinstance(m, (SignInputConv2d, SignInputLinear)) or getattr(m, "binarize_input", False) for m in layers)
    return "xnor" if xnor else "weights"


class _FakeQuantMixin:
    bits: int

    def _setup_quant(self, bits: int) -> None:
        from edgekit.passes.quantize import quantize_symmetric

        # start from the step the ONNX pass would pick (MSE search), so epoch 0 is the post-training model
        _, scale = quantize_symmetric(self.weight.detach().numpy(), bits, axis=0)
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        self.bits = bits
        self.scale = nn.Parameter(torch.from_numpy(scale.reshape(shape)).to(self.weight.dtype))

    def quant_weight(self) -> torch.Tensor:
        return fake_quant(self.weight, self.scale.abs().clamp_min(1e-8), self.bits)


class FakeQuantConv2d(_FakeQuantMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quant_weight(), self.bias)


class FakeQuantLinear(_FakeQuantMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quant_weight(), self.bias)


def quantize_module(model: nn.Module, bits: int, keep: Iterable[str] = ("first", "last")) -> nn.Module:
    """A copy of `model` with Conv2d/Linear weights fake-quantized to `bits` (kept layers untouched: the
    ONNX pass keeps them at 8 bits, which is near-lossless)."""
    model = copy.deepcopy(model)
    layers = weight_layers(model)
    kept = _kept([n for n, _ in layers], keep)
    for name, layer in layers:
        if name in kept:
            continue
        new = _clone_as(layer, FakeQuantConv2d if isinstance(layer, nn.Conv2d) else FakeQuantLinear)
        new._setup_quant(bits)
        _replace(model, name, new)
    return model


@torch.no_grad()
def fold_quant(model: nn.Module) -> nn.Module:
    """Plain float layers whose weights lie exactly on each channel's quantization grid, so the ONNX
    weight-only pass finds the same grid and is lossless."""
    model = copy.deepcopy(model)
    for name, layer in weight_layers(model):
        if isinstance(layer, _FakeQuantMixin):
            plain = nn.Conv2d if isinstance(layer, nn.Conv2d) else nn.Linear
            weight = layer.quant_weight()
            new = _clone_as_plain(layer, plain)
            new.weight.copy_(weight)
            _replace(model, name, new)
    return model.eval()


def _clone_as_plain(layer: nn.Module, cls: type) -> nn.Module:
    state = {k: v for k, v in layer.state_dict().items() if k != "scale"}
    if cls is nn.Conv2d:
        new = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
        )
    else:
        new = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    new.load_state_dict(state)
    return new
