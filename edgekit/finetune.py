"""Binarization-aware training on the torch side: 1-bit quantizers, binary layers, finetuning with KD.

Quantizers are small functions registered by name (Larq style), so the CLI (`--binarizer ste_sign|biper`)
and the Python API pick them the same way: `get_binarizer("biper", omega=20.0)`.

The flow from a float model to a packed 1-bit ONNX file::

    student = binarize_module(float_model, mode="xnor", binarizer="biper")  # Conv2d/Linear -> Binary*
    result = finetune(student, teacher=float_model, epochs=40)              # digits task, KD optional
    folded = fold_binary(result.model)   # plain Conv2d/Linear whose float weights are exactly sign·α
    model, report = export_binarized(result.model, out_path)                # torch -> ONNX -> binarize.run

`fold_binary` is what makes the ONNX side lossless: every folded weight row is ±α_o, so the ONNX pass
(edgekit.passes.binarize) recomputes the same signs and α_o = mean|±α_o| = α_o exactly, and the
packed model reproduces the torch binary model to float rounding. In xnor mode the folded layers keep
their `Where(x >= 0, 1, -1)` input binarization, which the exporter writes as GreaterOrEqual + Where and
the pass recognises instead of adding a second one. BatchNorm stays float; a BN that follows a binary
conv may be folded into it by the exporter: that scales each row by one number, so rows stay ±const.

The latent (real-valued) weights exist only for training; `binarize_module(..., keep=("first", "last"))`
keeps the first and last Conv2d/Linear in float, as the ONNX pass does by default.
"""
from __future__ import annotations

import copy
import fnmatch
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


# --- binary layers ---------------------------------------------------------------------------------


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


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
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
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                  layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
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
    layers = _layers(model)
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
    for name, layer in _layers(model):
        if isinstance(layer, _BinaryMixin):
            is_conv = isinstance(layer, nn.Conv2d)
            cls = (SignInputConv2d if is_conv else SignInputLinear) if layer.binarize_input else (
                nn.Conv2d if is_conv else nn.Linear)
            new = _clone_as(layer, cls)
            new.weight.copy_(layer.binary_weight())
            _replace(model, name, new)
    return model


def binary_layer_names(model: nn.Module) -> list[str]:
    """Names of the binary layers of an unfolded model (and of a folded xnor one)."""
    return [n for n, m in _layers(model) if isinstance(m, (_BinaryMixin, SignInputConv2d, SignInputLinear))]


def model_mode(model: nn.Module) -> str:
    layers = [m for _, m in _layers(model) if isinstance(m, (_BinaryMixin, SignInputConv2d, SignInputLinear))]
    xnor = any(isinstance(m, (SignInputConv2d, SignInputLinear)) or getattr(m, "binarize_input", False) for m in layers)
    return "xnor" if xnor else "weights"


# --- finetuning on the digits task -----------------------------------------------------------------


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
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                    log_target=True) * t * t


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
) -> FinetuneResult:
    """Train `model` (in place) on the fixed digits split; loss = (1-λ)·CE + λ·KD(teacher) when a teacher is given.

    Single-threaded, seeded and deterministic; the test split is only used for the final number.
    Adam without weight decay: decay would pull latent weights to 0, where binary signs flip at random.
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
                total += loss.item() * len(idx)
            history.append({"epoch": epoch + 1, "loss": total / len(perm)})
            if log and ((epoch + 1) % 10 == 0 or epoch == epochs - 1):
                log(f"epoch {epoch + 1:3d}  loss {total / len(perm):.4f}")
        model.eval()
        acc = evaluate(model, split.x_test, split.y_test)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return FinetuneResult(model, acc, time.perf_counter() - start, history)


def export_binarized(
    model: nn.Module, out: Path | None = None, input_shape: tuple[int, ...] = (1, 1, 8, 8), opset: int = 18
):
    """Fold the binary model, export it to ONNX and pack it with the binarize pass (lossless: see module doc).

    Returns (onnx.ModelProto, PassReport); writes `out` when given. Layers that are float in torch are
    kept float in ONNX by their weight names (the exporter keeps torch parameter names).
    """
    import onnx

    from edgekit.export import INPUT_NAME, _torch_to_onnx, simplify
    from edgekit.passes import binarize

    folded, mode = fold_binary(model).eval(), model_mode(model)
    binary = set(binary_layer_names(model))  # from the unfolded model: folded BWN layers are plain Conv2d
    float_weights = tuple(f"{n}.weight" for n, _ in _layers(model) if n not in binary)
    example = torch.zeros(input_shape)
    graph = _torch_to_onnx(folded, example, opset, dynamic_batch=False)
    graph, _ = simplify(graph, {INPUT_NAME: list(input_shape)})  # before packing: onnxsim would unpack bits
    packed, report = binarize.run(graph, binarize.BinarizeConfig(mode=mode, keep=float_weights))
    if out is not None:
        onnx.save(packed, str(out))
    return packed, report


# --- quantization-aware training (int4 / int2 weights) ----------------------------------------------


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
    layers = _layers(model)
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
    for name, layer in _layers(model):
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
        new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
    else:
        new = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    new.load_state_dict(state)
    return new


# --- the `edgekit finetune` job ---------------------------------------------------------------------


def finetune_to_onnx(
    ref: str,
    out: Path,
    bits: int,
    mode: str = "weights",
    binarizer: str = "ste_sign",
    epochs: int = 20,
    lr: float = 2e-3,
    distill_weight: float = 0.5,
    keep: tuple[str, ...] = ("first", "last"),
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Zoo or user model (`file.py:factory`) -> 1/2/4-bit-aware finetuning on digits with KD from its fp32
    self -> packed standard ONNX. Returns accuracies (torch fp32, torch finetuned, onnxruntime) and sizes."""
    from edgekit.datasets import load_digits_split
    from edgekit.errors import EdgekitError
    from edgekit.export import INPUT_NAME, _torch_to_onnx, ort_session, simplify
    from edgekit.fileio import atomic_file, check_output_path
    from edgekit.passes.quantize import QuantizeConfig, run as quantize_run
    from edgekit.zoo import load_model

    if bits not in (1, 2, 4):
        raise EdgekitError(f"--bits {bits} is not trainable here", "finetune handles 1 (binary), 2 and 4 bits; 8 bits needs no training")
    check_output_path(out, force, kind="onnx")
    loaded = load_model(ref)
    if loaded.input_shape is not None and tuple(loaded.input_shape)[1:] != (1, 8, 8):
        raise EdgekitError(f"{ref} takes {list(loaded.input_shape)}; finetuning runs on the digits task (N×1×8×8)")
    teacher = loaded.module.eval()
    split = load_digits_split()
    fp32_acc = evaluate(teacher, split.x_test, split.y_test)
    if bits == 1:
        student = binarize_module(teacher, mode=mode, binarizer=binarizer, keep=keep)
    else:
        student = quantize_module(teacher, bits, keep=keep)
    result = finetune(student, teacher=teacher, epochs=epochs, lr=lr, distill_weight=distill_weight, seed=seed)
    if bits == 1:
        model, report = export_binarized(result.model)
    else:
        graph = _torch_to_onnx(fold_quant(result.model), torch.zeros(1, 1, 8, 8), 18, dynamic_batch=False)
        graph, _ = simplify(graph, {INPUT_NAME: [1, 1, 8, 8]})
        model, report = quantize_run(graph, QuantizeConfig(bits=bits, keep=("first", "last") if keep else ()))
    with atomic_file(out) as tmp:
        import onnx

        onnx.save(model, str(tmp))
    session = ort_session(out)
    logits = np.concatenate([session.run(None, {INPUT_NAME: x[None]})[0] for x in split.x_test])
    return {
        **{k: v for k, v in report.to_json().items() if k != "layers"},
        "model": ref, "output": str(out), "bits": bits, "mode": f"{mode} ({binarizer})" if bits == 1 else f"weight-only int{bits} QAT (LSQ)",
        "epochs": epochs, "seconds": result.seconds,
        "accuracy": {"torch_fp32": fp32_acc, "torch_finetuned": result.test_accuracy,
                     "onnxruntime": float((logits.argmax(1) == split.y_test).mean())},
    }
