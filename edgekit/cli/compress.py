"""`edgekit compress` and `edgekit finetune`: the compression stage's commands (registered by cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.support import (
    ForceOpt,
    JsonOpt,
    ShapeOpt,
    emit_json,
    handle_errors,
    out,
    parse_keep,
    print_compress_result,
    print_prune_finetune,
)
from edgekit.core.errors import EdgekitError


@handle_errors
def compress(
    model: Annotated[Path, typer.Argument(help="Input .onnx (fp32).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx.")],
    bits: Annotated[
        Optional[int],
        typer.Option("--bits", help="8, 4, 2 (quantize) or 1 (binarize). Default 8, none with --prune/--nm."),
    ] = None,
    dynamic: Annotated[
        bool, typer.Option("--dynamic", help="int8 dynamic quantization (Gemm/MatMul-heavy models).")
    ] = False,
    weight_only: Annotated[
        bool, typer.Option("--weight-only", help="Quantize weights only (implied below 8 bits).")
    ] = False,
    calib: Annotated[
        Optional[str], typer.Option("--calib", help="Calibration data: data.npz, 'digits' or 'random'.")
    ] = None,
    method: Annotated[str, typer.Option("--method", help="Calibration: minmax, percentile, entropy.")] = "minmax",
    block_size: Annotated[
        int, typer.Option("--block-size", help="Weight-only: one scale per block of N (0 = per channel).")
    ] = 0,
    keep: Annotated[
        Optional[str],
        typer.Option("--keep", help="Layers kept at 8 bits (1-bit: float): first,last,NAME,GLOB or 'none'."),
    ] = None,
    layer_bits: Annotated[
        Optional[list[str]], typer.Option("--layer-bits", help="GLOB=BITS per layer name (repeatable).")
    ] = None,
    mode: Annotated[
        str, typer.Option("--mode", help="1-bit: weights (BWN) or xnor (binary activations too).")
    ] = "weights",
    eval_set: Annotated[
        Optional[str], typer.Option("--eval", help="Report accuracy on a labelled set: digits.")
    ] = None,
    target: Annotated[
        Optional[str],
        typer.Option(
            "--target",
            help="int8: pick the weight format exact on this target and this machine "
            "(7-bit weights where onnxruntime lacks VNNI). Default: this machine.",
        ),
    ] = None,
    prune: Annotated[
        Optional[float],
        typer.Option("--prune", help="Remove this fraction of weights (or of channels, with --structured)."),
    ] = None,
    structured: Annotated[
        bool, typer.Option("--structured", help="Channel pruning: smaller layers, lower latency.")
    ] = False,
    nm: Annotated[Optional[str], typer.Option("--nm", help="N:M sparsity along input channels, e.g. 2:4.")] = None,
    prune_criterion: Annotated[
        str, typer.Option("--prune-criterion", help="Structured: l1, l2 or activation (data-aware, uses --calib).")
    ] = "l2",
    prune_scope: Annotated[
        str, typer.Option("--prune-scope", help="layer (the ratio in every layer/group) or global (one threshold).")
    ] = "layer",
    prune_block: Annotated[
        int,
        typer.Option(
            "--prune-block",
            help="With --prune: remove whole blocks of B output channels (8: what TVM's sparse kernels skip).",
        ),
    ] = 1,
    prune_skip: Annotated[
        Optional[list[str]], typer.Option("--prune-skip", help="Layer name or GLOB left dense (repeatable).")
    ] = None,
    round_to: Annotated[
        int, typer.Option("--round-to", help="Structured: kept channel counts are multiples of this.")
    ] = 8,
    sparse_format: Annotated[
        str, typer.Option("--sparse-format", help="Unstructured storage: mask, coo (sparse_initializer) or dense.")
    ] = "mask",
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep", help="Unstructured: one-shot sparsity sweep of output error / accuracy, with its knee."
        ),
    ] = False,
    rank: Annotated[
        Optional[int],
        typer.Option("--rank", help="Low-rank: split Gemm/MatMul/1×1 Conv into two layers of this rank (SVD)."),
    ] = None,
    rank_energy: Annotated[
        Optional[float],
        typer.Option("--rank-energy", help="Low-rank: per layer, the smallest rank keeping this fraction of Σσ²."),
    ] = None,
    depth: Annotated[
        Optional[int],
        typer.Option("--depth", help="Replace N residual blocks by linear maps fitted on --calib (ReplaceMe)."),
    ] = None,
    input_shape: ShapeOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Quantize (8/4/2-bit), binarize (1-bit) or prune an ONNX model; standard ONNX out, runs in onnxruntime.

    Example: edgekit compress model.onnx --bits 4 -o model.q4.onnx --eval digits
             edgekit compress resnet18.onnx --prune 0.5 --structured --bits 8 --calib random -o r18.p50.int8.onnx
    """
    from edgekit.compress import CompressOptions, compress_file
    from edgekit.core.progress import stderr
    from edgekit.onnxkit.graph import parse_input_shapes

    keep_t = None if keep is None else parse_keep(keep)
    per_layer = {}
    for item in layer_bits or []:
        pattern, _, b = item.rpartition("=")
        if not pattern or not b.isdigit():
            raise EdgekitError(f"bad --layer-bits '{item}'", "write GLOB=BITS, e.g. 'layer4*=8'")
        per_layer[pattern] = int(b)
    if bits is None and prune is None and nm is None and rank is None and rank_energy is None and depth is None:
        bits = 8
    opts = CompressOptions(
        bits=bits,
        dynamic=dynamic,
        method=method,
        calib=calib,
        block_size=block_size,
        keep=keep_t,
        layer_bits=per_layer,
        weight_only=weight_only,
        binarize_mode=mode,
        target=target,
        prune=prune,
        structured=structured,
        nm=nm,
        prune_criterion=prune_criterion,
        prune_scope=prune_scope,
        prune_block=prune_block,
        prune_skip=tuple(prune_skip or ()),
        round_to=round_to,
        sparse_format=sparse_format,
        sweep=sweep,
        rank=rank,
        rank_energy=rank_energy,
        depth=depth,
    )
    with stderr.status("compressing…"):
        result = compress_file(model, output, opts, force, eval_set, parse_input_shapes(input_shape))
    if json_out:
        return emit_json(result)
    print_compress_result(output, result)


@handle_errors
def finetune(
    model: Annotated[str, typer.Argument(help="Zoo name or path/to/file.py:factory (a digits model, N×1×8×8).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx (packed).")],
    bits: Annotated[int, typer.Option("--bits", help="1 (binary), 2 or 4 (quantization-aware).")] = 1,
    mode: Annotated[str, typer.Option("--mode", help="1-bit: weights (BWN) or xnor.")] = "weights",
    binarizer: Annotated[str, typer.Option("--binarizer", help="1-bit: ste_sign or biper.")] = "ste_sign",
    epochs: Annotated[int, typer.Option("--epochs")] = 20,
    lr: Annotated[
        Optional[float], typer.Option("--lr", help="Learning rate (default 2e-3; 5e-3 with --prune).")
    ] = None,
    distill: Annotated[
        float, typer.Option("--distill", help="Weight of distillation from the fp32 model (0 = none).")
    ] = 0.5,
    keep: Annotated[
        str, typer.Option("--keep", help="Layers kept in higher precision: first,last,GLOB or 'none'.")
    ] = "first,last",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    prune: Annotated[
        Optional[float],
        typer.Option("--prune", help="Pruning-aware training to this sparsity (or channel ratio with --structured)."),
    ] = None,
    structured: Annotated[
        bool, typer.Option("--structured", help="With --prune: mask whole channels, finetune, remove them.")
    ] = False,
    lottery: Annotated[
        bool,
        typer.Option(
            "--lottery", help="With --prune: lottery ticket (iterative pruning, rewinding), from a random init."
        ),
    ] = False,
    rewind_epoch: Annotated[
        int, typer.Option("--rewind-epoch", help="Lottery: the epoch whose weights survivors rewind to.")
    ] = 1,
    rounds: Annotated[int, typer.Option("--rounds", help="Lottery: pruning rounds.")] = 3,
    finetune_block: Annotated[
        int,
        typer.Option(
            "--prune-block", help="With --prune: whole blocks of B output channels (8: what TVM's sparse kernels skip)."
        ),
    ] = 1,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Binarization-, quantization- or pruning-aware finetuning on the digits task, with distillation; writes ONNX.

    Example: edgekit finetune digits_cnn --bits 1 --mode weights --binarizer biper -o digits.bwn.onnx
             edgekit finetune digits_cnn --prune 0.9 -o digits.sparse90.onnx      (gradual, cubic schedule)
             edgekit finetune digits_cnn --prune 0.9 --prune-block 8 -o digits.blocks90.onnx   (1x8 blocks)
    """
    from edgekit.core.progress import stderr
    from edgekit.finetune import finetune_to_onnx

    if finetune_block != 1 and (prune is None or not 1 < finetune_block <= 64):
        raise EdgekitError(
            f"bad --prune-block {finetune_block}" if prune is not None else "--prune-block needs --prune R",
            "e.g. finetune digits_cnn --prune 0.9 --prune-block 8 -o out.onnx (a block of 2-64 output channels)",
        )
    if prune is not None:
        return _prune_finetune(
            model,
            output,
            prune,
            structured,
            lottery,
            epochs,
            lr or 5e-3,
            distill,
            rounds,
            rewind_epoch,
            seed,
            force,
            json_out,
            finetune_block,
        )
    lr = lr or 2e-3
    if structured or lottery:
        raise EdgekitError(
            "--structured and --lottery need --prune R", "e.g. finetune digits_cnn --prune 0.5 --structured -o out.onnx"
        )

    keep_t = parse_keep(keep)
    with stderr.status(f"finetuning {model} to {bits} bit ({epochs} epochs)…"):
        result = finetune_to_onnx(model, output, bits, mode, binarizer, epochs, lr, distill, keep_t, seed, force)
    if json_out:
        return emit_json(result)
    a = result["accuracy"]
    out.print(
        f"wrote {output}: {result['mode']}; weights {result['weight_ratio']:.1f}× smaller, file {result['ratio']:.1f}×"
    )
    out.print(
        f"digits accuracy: torch fp32 {a['torch_fp32']:.2%} | finetuned torch {a['torch_finetuned']:.2%} | "
        f"ONNX in onnxruntime {a['onnxruntime']:.2%}"
    )


def _prune_finetune(
    model, output, ratio, structured, lottery, epochs, lr, distill, rounds, rewind_epoch, seed, force, json_out, block=1
) -> None:
    from edgekit.core.progress import stderr
    from edgekit.training.export import prune_finetune_to_onnx

    if structured and lottery:
        raise EdgekitError("--structured and --lottery are different methods", "choose one")
    method = "structured" if structured else "lottery" if lottery else "gradual"
    with stderr.status(f"pruning-aware finetuning of {model} ({method}, {ratio:g}, {epochs} epochs)…"):
        result = prune_finetune_to_onnx(
            model, output, ratio, method, epochs, lr, distill, rounds, rewind_epoch, seed, force, block
        )
    if json_out:
        return emit_json(result)
    print_prune_finetune(output, result, method)
