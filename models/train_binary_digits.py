"""Reproducibly train ``binary_digits.py`` (XNOR) with distillation from the fp32 digits CNN.

Usage (from the repository root)::

    PYTHONPATH=. python models/train_binary_digits.py [--binarizer ste_sign|biper] [--epochs N]
    PYTHONPATH=. python models/train_binary_digits.py --compare   # BWN/XNOR x ste_sign/biper table

The shipped model is trained from scratch in xnor mode (binary weights and activations, first and
last layer float) with KD from ``digits_cnn.pt``; it is saved folded (weights exactly sign·α), which is
the form ``binary_digits.create()`` builds. ``--compare`` also finetunes the trained digits CNN with
binary weights only (BWN, from its float weights). Single thread, seeded, deterministic; the test split
is only used for the reported numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from edgekit.finetune import binarize_module, finetune, fold_binary
from edgekit.zoo import load_model

HERE = Path(__file__).resolve().parent
SEED = 0


def _load(name: str) -> ModuleType:
    path = HERE / f"{name}.py"  # models/ is not a package: load by path, as the zoo does
    spec = importlib.util.spec_from_file_location(f"edgekit_zoo_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_xnor(binarizer: str, epochs: int, lr: float, distill: float, seed: int = SEED, log=print):
    teacher = load_model("digits_cnn").module
    student = _load("binary_digits").create_trainable(binarizer=binarizer, mode="xnor")
    return finetune(student, teacher, epochs=epochs, lr=lr, distill_weight=distill, seed=seed, log=log)


def finetune_bwn(binarizer: str, epochs: int, lr: float, distill: float, seed: int = SEED, log=print):
    teacher = load_model("digits_cnn").module
    student = binarize_module(teacher, mode="weights", binarizer=binarizer)
    return finetune(student, teacher, epochs=epochs, lr=lr, distill_weight=distill, seed=seed, log=log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binarizer", default="ste_sign", choices=("ste_sign", "biper"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--distill", type=float, default=0.5, help="KD weight λ (0 = labels only)")
    parser.add_argument("--bwn-epochs", type=int, default=20)
    parser.add_argument("--bwn-lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--compare", action="store_true", help="print the BWN/XNOR x ste_sign/biper table, save nothing"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for --compare")
    parser.add_argument("--out", type=Path, default=HERE / "binary_digits.pt")
    args = parser.parse_args()

    if args.compare:  # one line per (binarizer, seed), then mean per binarizer
        for binarizer in ("ste_sign", "biper"):
            accs = []
            for seed in args.seeds:
                bwn = finetune_bwn(binarizer, args.bwn_epochs, args.bwn_lr, args.distill, seed, log=None)
                xnor = train_xnor(binarizer, args.epochs, args.lr, args.distill, seed, log=None)
                accs.append((bwn.test_accuracy, xnor.test_accuracy))
                print(
                    f"{binarizer:9s} seed {seed}  BWN {bwn.test_accuracy:.4f} ({bwn.seconds:.0f}s)  "
                    f"XNOR {xnor.test_accuracy:.4f} ({xnor.seconds:.0f}s)",
                    flush=True,
                )
            mean = np.mean(accs, axis=0)
            print(f"{binarizer:9s} mean    BWN {mean[0]:.4f}  XNOR {mean[1]:.4f}", flush=True)
        return

    start = time.perf_counter()
    result = train_xnor(args.binarizer, args.epochs, args.lr, args.distill, args.seed)
    folded = fold_binary(result.model).eval()
    torch.save(folded.state_dict(), args.out)
    print(f"train time {time.perf_counter() - start:.1f}s  binarizer {args.binarizer}")
    print(f"test accuracy {result.test_accuracy:.4f}")
    print(f"saved {args.out} (folded: weights are sign·alpha)")


if __name__ == "__main__":
    main()
