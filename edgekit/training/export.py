"""Export of a trained (binary or low-bit) torch model to packed standard ONNX."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.training.layers import (
    binarize_module,
    binary_layer_names,
    fold_binary,
    fold_quant,
    model_mode,
    quantize_module,
    weight_layers,
)
from edgekit.training.loop import evaluate, finetune


def export_binarized(
    model: nn.Module, out: Path | None = None, input_shape: tuple[int, ...] = (1, 1, 8, 8), opset: int = 18
):
    """Fold the binary model, export it to ONNX and pack it with the binarize pass (lossless: see module doc).

    Returns (onnx.ModelProto, PassReport); writes `out` when given. Layers that are float in torch are
    kept float in ONNX by their weight names (the exporter keeps torch parameter names).
    """
    import onnx

    from edgekit.export import INPUT_NAME, torch_to_onnx
    from edgekit.onnxkit.tools import simplify
    from edgekit.passes import binarize

    folded, mode = fold_binary(model).eval(), model_mode(model)
    binary = set(binary_layer_names(model))  # from the unfolded model: folded BWN layers are plain Conv2d
    float_weights = tuple(f"{n}.weight" for n, _ in weight_layers(model) if n not in binary)
    example = torch.zeros(input_shape)
    graph = torch_to_onnx(folded, example, opset, dynamic_batch=False)
    graph, _ = simplify(graph, {INPUT_NAME: list(input_shape)})  # before packing: onnxsim would unpack bits
    packed, report = binarize.run(graph, binarize.BinarizeConfig(mode=mode, keep=float_weights))
    if out is not None:
        onnx.save(packed, str(out))
    return packed, report


def digits_teacher(ref: str) -> nn.Module:
    """The zoo or user model `ref` in eval mode, checked to take digits (N×1×8×8): what finetuning trains on."""
    from edgekit.core.errors import EdgekitError
    from edgekit.zoo import load_model

    loaded = load_model(ref)
    if loaded.input_shape is not None and tuple(loaded.input_shape)[1:] != (1, 8, 8):
        raise EdgekitError(
            f"{ref} takes {list(loaded.input_shape)}; finetuning runs on the digits task (N×1×8×8)",
            "finetune trains on scikit-learn digits: pass a model taking N×1×8×8",
        )
    return loaded.module.eval()


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
    from edgekit.core.errors import EdgekitError
    from edgekit.core.fileio import atomic_file, check_output_path
    from edgekit.datasets import digits_accuracy, load_digits_split
    from edgekit.export import INPUT_NAME, torch_to_onnx
    from edgekit.onnxkit.tools import ort_session, simplify
    from edgekit.passes.quantize import QuantizeConfig
    from edgekit.passes.quantize import run as quantize_run

    if bits not in (1, 2, 4):
        raise EdgekitError(
            f"--bits {bits} is not trainable here",
            "finetune handles 1 (binary), 2 and 4 bits; 8 bits needs no training",
        )
    check_output_path(out, force, kind="onnx")
    teacher = digits_teacher(ref)
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
        graph = torch_to_onnx(fold_quant(result.model), torch.zeros(1, 1, 8, 8), 18, dynamic_batch=False)
        graph, _ = simplify(graph, {INPUT_NAME: [1, 1, 8, 8]})
        model, report = quantize_run(graph, QuantizeConfig(bits=bits, keep=("first", "last") if keep else ()))
    with atomic_file(out) as tmp:
        import onnx

        onnx.save(model, str(tmp))
    session = ort_session(out)
    ort_acc = digits_accuracy(lambda x: session.run(None, {INPUT_NAME: x})[0])
    return {
        **{k: v for k, v in report.to_json().items() if k != "layers"},
        "model": ref,
        "output": str(out),
        "bits": bits,
        "mode": f"{mode} ({binarizer})" if bits == 1 else f"weight-only int{bits} QAT (LSQ)",
        "epochs": epochs,
        "seconds": result.seconds,
        "accuracy": {"torch_fp32": fp32_acc, "torch_finetuned": result.test_accuracy, "onnxruntime": ort_acc},
    }


PRUNE_METHODS = ("gradual", "lottery", "structured")


def _to_onnx(model: nn.Module):
    from edgekit.export import INPUT_NAME, torch_to_onnx
    from edgekit.onnxkit.tools import simplify

    graph = torch_to_onnx(model.eval(), torch.zeros(1, 1, 8, 8), 18, dynamic_batch=False)
    return simplify(graph, {INPUT_NAME: [1, 1, 8, 8]})[0]


def _ort_accuracy(model) -> tuple[float, np.ndarray]:
    """onnxruntime's digits test accuracy of `model`, and its logits."""
    from edgekit.datasets import accuracy, digits_logits
    from edgekit.export import INPUT_NAME
    from edgekit.onnxkit.tools import ort_session

    session = ort_session(model)
    logits, labels = digits_logits(lambda x: session.run(None, {INPUT_NAME: x})[0])
    return accuracy(logits, labels), logits


def _random_init(module: nn.Module, seed: int) -> nn.Module:
    fresh = copy.deepcopy(module)
    torch.manual_seed(seed)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    return fresh


def _train_pruned(method, teacher, dense_onnx, ratio, epochs, lr, distill_weight, rounds, rewind_epoch, seed, block=1):
    """(the training-free pruned ONNX at the same ratio, the pruned torch student, its training result or None,
    the lottery-ticket figures or None) for one pruning method."""
    from edgekit.passes import prune, structured
    from edgekit.training.pruning import ChannelMasks, gradual_prune, lottery_ticket

    if method == "structured":
        free, _ = structured.run(dense_onnx, structured.StructuredConfig(ratio=ratio, round_to=4))
        student = copy.deepcopy(teacher)
        masks = ChannelMasks(student, ratio, round_to=4)
        masks.apply()
        trained = finetune(
            student,
            teacher=teacher,
            epochs=epochs,
            lr=lr,
            distill_weight=distill_weight,
            seed=seed,
            after_step=lambda *_: masks.apply(),
        )
        return free, student, trained, None
    # the first conv stays dense (1 input channel: 9 weights per filter), in torch and in ONNX alike
    free, _ = prune.run(dense_onnx, prune.PruneConfig(ratio=ratio, skip=("first",), block=block))
    skip = (weight_layers(teacher)[0][0],)
    if method == "gradual":
        student = copy.deepcopy(teacher)
        trained, _ = gradual_prune(
            student,
            ratio,
            epochs,
            teacher=teacher,
            lr=lr,
            seed=seed,
            distill_weight=distill_weight,
            skip=skip,
            block=block,
        )
        return free, student, trained, None
    ticket = lottery_ticket(
        lambda: _random_init(teacher, seed),
        ratio,
        rounds=rounds,
        epochs=epochs,
        rewind_epoch=rewind_epoch,
        seed=seed,
        skip=skip,
        block=block,
    )
    return free, ticket["model"], None, {k: v for k, v in ticket.items() if k not in ("model", "masks")}


def prune_finetune_to_onnx(
    ref: str,
    out: Path,
    ratio: float,
    method: str = "gradual",
    epochs: int = 20,
    lr: float = 5e-3,
    distill_weight: float = 0.5,
    rounds: int = 3,
    rewind_epoch: int = 1,
    seed: int = 0,
    force: bool = False,
    block: int = 1,
) -> dict:
    """Pruning-aware training on digits (gradual, lottery ticket or structured), exported to ONNX that the ONNX
    passes store sparsely (unstructured) or shrink (structured); the training-free figure at the same ratio beside.
    `block` > 1 (gradual / lottery): whole 1 x block output-channel blocks, as compress --prune-block prunes."""
    import onnx

    from edgekit.core.errors import EdgekitError
    from edgekit.core.fileio import atomic_file, check_output_path
    from edgekit.datasets import load_digits_split
    from edgekit.passes import prune, structured

    structured.check_ratio(ratio)
    if block != 1 and method == "structured":
        raise EdgekitError("--prune-block is for unstructured pruning", "drop --structured, or drop --prune-block")
    if method not in PRUNE_METHODS:
        raise EdgekitError(f"unknown pruning method '{method}'", f"choose from {', '.join(PRUNE_METHODS)}")
    check_output_path(out, force, kind="onnx")
    teacher = digits_teacher(ref)
    split = load_digits_split()
    dense_onnx = _to_onnx(teacher)
    result: dict = {
        "model": ref,
        "output": str(out),
        "method": method,
        "ratio": ratio,
        "block": block,
        "epochs": epochs,
        "accuracy": {"torch_fp32": evaluate(teacher, split.x_test, split.y_test)},
    }
    free, student, trained, lottery = _train_pruned(
        method, teacher, dense_onnx, ratio, epochs, lr, distill_weight, rounds, rewind_epoch, seed, block
    )
    if lottery is not None:
        result["lottery"] = lottery
    if method == "structured":
        model, report = structured.run(_to_onnx(student), structured.StructuredConfig(ratio=ratio, round_to=4))
    else:
        model, report = prune.run(_to_onnx(student), prune.PruneConfig(ratio=ratio, skip=("first",), block=block))
    onnx_acc, logits = _ort_accuracy(model)
    with torch.no_grad():
        torch_logits = student.eval()(torch.from_numpy(split.x_test)).numpy()
    # the ONNX pass must have removed exactly what training zeroed: same logits as the trained torch model
    if not np.allclose(logits, torch_logits, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(torch_logits).max()))):
        raise EdgekitError(
            "the pruned ONNX model does not reproduce the finetuned torch model",
            "structured finetuning supports models whose convolutions are not tied by residual adds; "
            "use compress --structured",
        )
    with atomic_file(out) as tmp:
        onnx.save(model, str(tmp))
    result["accuracy"] |= {
        "training_free_onnxruntime": _ort_accuracy(free)[0],
        "onnxruntime": onnx_acc,
        "torch_finetuned": trained.test_accuracy if trained else result["lottery"]["ticket_accuracy"],
    }
    result["accuracy"]["drop_pt"] = 100 * (result["accuracy"]["torch_fp32"] - onnx_acc)
    result |= {k: v for k, v in report.to_json().items() if k not in ("layers", "groups")}
    return result
