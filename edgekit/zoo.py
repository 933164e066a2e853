"""The model zoo (files in models/) and user models given as `path/to/file.py:factory`.

A zoo file defines `create() -> nn.Module`, `INPUT_SHAPE`, `DESCRIPTION` and `WEIGHTS` (a state_dict
file name in models/, or None for random init). Both zoo and user models are loaded by path, so the
zoo needs no package of its own and users' files work exactly like ours.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from edgekit.core.errors import EdgekitError
from edgekit.core.paths import MODELS_DIR

ZOO = ("digits_cnn", "binary_digits", "resnet18", "mobilenetv2", "vit_tiny")


@dataclass
class LoadedModel:
    name: str
    module: "torch.nn.Module"  # noqa: F821 - torch is imported lazily
    input_shape: tuple[int, ...] | None
    description: str
    weights: Path | None


def _import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"edgekit_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise EdgekitError(f"cannot import {path}", "pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: report it in one line, it is not edgekit's bug
        raise EdgekitError(
            f"importing {path} failed: {type(exc).__name__}: {exc}",
            "run the file with python to see the error; it must define the factory function",
        ) from None
    return module


def zoo_info() -> list[dict]:
    rows = []
    for name in ZOO:
        mod = _import_file(MODELS_DIR / f"{name}.py")
        weights = getattr(mod, "WEIGHTS", None)
        rows.append(
            {
                "name": name,
                "input_shape": list(mod.INPUT_SHAPE),
                "weights": "trained" if weights else "random init",
                "description": mod.DESCRIPTION,
            }
        )
    return rows


def _load_weights(module, path: Path) -> None:
    import torch

    if not path.exists():
        raise EdgekitError(f"weights file {path} is missing", "retrain with python models/train_digits.py")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgekitError(
            f"cannot load weights {path}: {type(exc).__name__}", "the file is corrupt or not a state_dict"
        ) from None
    if not isinstance(state, dict):
        raise EdgekitError(
            f"weights {path} are not a state_dict (got {type(state).__name__})",
            "save model.state_dict() with torch.save",
        )
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:  # missing / unexpected keys, shape mismatches
        first = str(exc).strip().splitlines() or ["?"]
        raise EdgekitError(
            f"weights {path} do not fit the model: {' '.join(first)[:240]}", "pass the state_dict saved from this model"
        ) from None


def load_model(ref: str, weights: Path | None = None) -> LoadedModel:
    """`ref` is a zoo name or `file.py:factory` (factory() returns an nn.Module)."""
    if ref in ZOO:
        mod = _import_file(MODELS_DIR / f"{ref}.py")
        module = mod.create()
        weights = weights or (MODELS_DIR / mod.WEIGHTS if getattr(mod, "WEIGHTS", None) else None)
        shape, desc, name = tuple(mod.INPUT_SHAPE), mod.DESCRIPTION, ref
    elif ":" in ref and ref.rsplit(":", 1)[0].endswith(".py"):
        file, factory_name = ref.rsplit(":", 1)
        path = Path(file)
        if not path.exists():
            raise EdgekitError(
                f"{path}: no such file", "write MODEL as path/to/file.py:factory or a zoo name (edgekit models)"
            )
        mod = _import_file(path)
        factory = getattr(mod, factory_name, None)
        if not callable(factory):
            raise EdgekitError(
                f"{path} has no callable '{factory_name}'",
                "write MODEL as path/to/file.py:factory, naming a function that returns an nn.Module",
            )
        try:
            module = factory()
        except Exception as exc:  # noqa: BLE001 - the user's code failed: one line naming it, not an edgekit bug
            raise EdgekitError(
                f"{ref}() raised {type(exc).__name__}: {str(exc)[:200]}", "run the factory in python to debug it"
            ) from None
        shape = tuple(getattr(mod, "INPUT_SHAPE", ())) or None
        desc, name = f"user model {ref}", path.stem
    else:
        raise EdgekitError(f"unknown model '{ref}'", f"use a zoo model ({', '.join(ZOO)}) or path/to/file.py:factory")
    import torch

    if not isinstance(module, torch.nn.Module):
        raise EdgekitError(
            f"{ref} did not return a torch.nn.Module (got {type(module).__name__})",
            "the factory must return an nn.Module instance",
        )
    if weights is not None:
        _load_weights(module, Path(weights))
    module.eval()
    return LoadedModel(name, module, shape, desc, Path(weights) if weights else None)


def calibrate_batchnorm(model, input_shape: tuple[int, ...], batch_size: int = 8) -> None:
    """For random-init zoo models: replace the identity BN running stats (mean 0, var 1) with stats of real activations.

    With torchvision's init and untouched running stats, eval-mode activations shrink
    ~10x every few blocks (logits ~1e-9), which makes numeric parity checks vacuous,
    and every BN is an identity, so BN folding is a no-op that cannot catch bugs. One train-mode
    pass over seeded N(0, 1) noise (i.e. normalised-image statistics) fixes both; the
    learnable weights keep their torchvision init. Uses the global RNG, so call it
    inside create()'s fork_rng block.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: running stats = exact batch stats
    model.train()
    with torch.no_grad():
        model(torch.randn(batch_size, *input_shape[1:]))
    for bn in bns:
        bn.momentum = 0.1  # PyTorch default, so later fine-tuning behaves normally
    model.eval()
