"""1-bit and low-bit quantizers for training, each a small function registered by name (Larq style): sign-STE,
BiPer, ApproxSign, and LSQ fake quantization."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Binarizer = Callable[[torch.Tensor], torch.Tensor]


BINARIZERS: dict[str, Callable[..., torch.Tensor]] = {}


def register_binarizer(name: str) -> Callable:
    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        BINARIZERS[name] = fn
        return fn

    return wrap


def get_binarizer(name: str | Binarizer, **kwargs: float) -> Binarizer:
    """A quantizer by registered name (kwargs bind its parameters), or a callable passed through."""
    if callable(name):
        return name
    if name not in BINARIZERS:
        raise ValueError(f"unknown binarizer '{name}' (known: {', '.join(sorted(BINARIZERS))})")
    fn = BINARIZERS[name]
    return (lambda x: fn(x, **kwargs)) if kwargs else fn


def hard_sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, i.e. Where(x >= 0, 1, -1): the inference-time binarization (ORT/TVM Sign(0) = 0)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _SteSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, clip_value: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip_value = clip_value
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.clip_value).to(grad.dtype), None


@register_binarizer("ste_sign")
def ste_sign(x: torch.Tensor, clip_value: float = 1.0) -> torch.Tensor:
    r"""Sign with a clipped straight-through estimator.

    .. math::
        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} := \mathbf{1}_{|x| \le c}

    (c = clip_value = 1): the gradient of hardtanh, so latent values that drifted past ±c stop moving.

    References:
        Hubara et al., "Binarized Neural Networks", NeurIPS 2016.
        Larq, `larq.quantizers.ste_sign`.
    """
    return _SteSign.apply(x, clip_value)


class _BiPer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, omega: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.omega = omega
        return hard_sign(torch.sin(omega * x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.omega * torch.cos(ctx.omega * x), None


@register_binarizer("biper")
def biper(x: torch.Tensor, omega: float = 20.0) -> torch.Tensor:
    r"""BiPer: periodic binarization, a square wave forward and its sine fundamental backward.

    .. math::
        q(x) = \operatorname{sign}(\sin(\omega x)) \in \{-1, +1\}
        \qquad
        \frac{\partial q}{\partial x} := \omega \cos(\omega x)

    The forward pass is a square wave of period 2π/ω (sign(0) := +1). The backward pass differentiates
    the sine that has the same period (the square wave's first Fourier term, up to the constant 4/π),
    so the surrogate is smooth, bounded by ω and never zero on an interval — unlike the clipped STE,
    latent weights anywhere keep receiving gradient, and a weight can flip by moving half a period in
    either direction. ω trades quantization error against gradient magnitude (the paper uses ω = 20).
    For |x| < π/ω, q(x) = sign(x): `binarize_module` warm-starts pretrained weights into that range.

    References:
        Vargas, Jacome, Hinojosa, Arguello, "BiPer: Binary Neural Networks using a Periodic Function",
        CVPR 2024 (github.com/edmav4/BiPer).
    """
    return _BiPer.apply(x, omega)


@register_binarizer("approx_sign")
def approx_sign(x: torch.Tensor) -> torch.Tensor:
    r"""Sign with the Bi-Real piecewise-quadratic gradient (for activations).

    .. math::
        q(x) = \operatorname{sign}(x), \qquad \frac{\partial q}{\partial x} := \max(0,\; 2 - 2|x|)

    References:
        Liu et al., "Bi-Real Net", ECCV 2018. Larq, `larq.quantizers.approx_sign`.
    """
    # value hard_sign(x), gradient d/dx of the clipped quadratic 2x - x|x| (= 2 - 2|x| inside ±1)
    soft = torch.where(x.abs() <= 1, 2 * x - x * x.abs(), hard_sign(x))
    return soft + (hard_sign(x) - soft).detach()


class _LsqRound(torch.autograd.Function):
    """round(w/s) clamped to [qmin, qmax], times s, with LSQ gradients for w (STE inside the range) and s."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        v = w / scale
        ctx.save_for_backward(v, scale)
        ctx.qmin, ctx.qmax = qmin, qmax
        return v.round().clamp(qmin, qmax) * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        v, scale = ctx.saved_tensors
        inside = (v >= ctx.qmin) & (v <= ctx.qmax)
        # d(ŵ)/ds = round(v) - v inside the range, the clamp bound outside (Esser et al.)
        ds = torch.where(inside, v.round() - v, v.clamp(ctx.qmin, ctx.qmax))
        g_scale = (grad * ds).sum(dim=tuple(range(1, grad.dim())), keepdim=True)
        g_scale = g_scale / math.sqrt(v[0].numel() * ctx.qmax)  # LSQ's gradient scale keeps steps stable
        return grad * inside, g_scale, None, None


def fake_quant(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    r"""Symmetric per-output-channel fake quantization with a learned step (LSQ).

    .. math:: \hat w = s \cdot \mathrm{clamp}(\lfloor w/s \rceil, -2^{b-1}, 2^{b-1}-1)

    References: Esser et al., "Learned Step Size Quantization", ICLR 2020.
    """
    return _LsqRound.apply(w, scale, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
