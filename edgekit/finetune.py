"""Binarization- and quantization-aware training on the torch side (the `edgekit finetune` stage).

The code lives in edgekit/training/: quantizers.py (binarizers, LSQ), layers.py (binary / fake-quant layers
and module surgery), loop.py (the training loop with KD), export.py (to packed ONNX). This module is their
public API.

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

from edgekit.training.export import export_binarized, finetune_to_onnx
from edgekit.training.layers import (
    BinaryConv2d,
    BinaryLinear,
    FakeQuantConv2d,
    FakeQuantLinear,
    SignInputConv2d,
    SignInputLinear,
    binarize_module,
    binary_layer_names,
    fold_binary,
    fold_quant,
    model_mode,
    quantize_module,
)
from edgekit.training.loop import FinetuneResult, distillation_loss, evaluate, finetune, random_shift
from edgekit.training.quantizers import (
    BINARIZERS,
    Binarizer,
    approx_sign,
    biper,
    fake_quant,
    get_binarizer,
    hard_sign,
    register_binarizer,
    ste_sign,
)

__all__ = [
    "export_binarized",
    "finetune_to_onnx",
    "BinaryConv2d",
    "BinaryLinear",
    "FakeQuantConv2d",
    "FakeQuantLinear",
    "SignInputConv2d",
    "SignInputLinear",
    "binarize_module",
    "binary_layer_names",
    "fold_binary",
    "fold_quant",
    "model_mode",
    "quantize_module",
    "FinetuneResult",
    "distillation_loss",
    "evaluate",
    "finetune",
    "random_shift",
    "BINARIZERS",
    "Binarizer",
    "approx_sign",
    "biper",
    "fake_quant",
    "get_binarizer",
    "hard_sign",
    "register_binarizer",
    "ste_sign",
]
