"""What `edgekit compress` was asked to do: one flat set of the command's options, which each compression
method's `configure` (passes/<method>.py, listed by compress.methods()) turns into that pass's own config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CompressOptions:
    bits: int | None = 8  # None: prune only
    dynamic: bool = False
    method: str = "minmax"
    calib: str | None = None  # .npz path, "digits" or "random"
    calib_samples: int = 256
    block_size: int = 0
    keep: tuple[str, ...] | None = None
    layer_bits: dict[str, int] | None = None
    weight_only: bool = False
    binarize_mode: str = "weights"  # bits == 1: "weights" (BWN) or "xnor"
    scale_activations: bool = False
    target: str | None = None  # int8: the target whose (and this host's) onnxruntime kernels must be exact
    prune: float | None = None  # fraction of weights (unstructured) or channels (structured) removed
    structured: bool = False
    nm: str | None = None  # "N:M"
    prune_criterion: str = "l2"  # structured: l1, l2, activation (needs calib)
    prune_scope: str = "layer"  # layer or global
    prune_block: int = 1  # unstructured: prune whole blocks of this many output channels
    prune_skip: tuple[str, ...] = ()
    round_to: int = 8
    sparse_format: str = "mask"
    sweep: bool = False  # unstructured: one-shot sparsity sweep and its knee
    rank: int | None = None  # low-rank factorization: a fixed rank ...
    rank_energy: float | None = None  # ... or the fraction of Σσ² kept per layer
    depth: int | None = None  # residual blocks replaced by fitted linear maps (needs calib)

    @property
    def prunes(self) -> bool:
        return self.prune is not None or self.nm is not None

    @property
    def factorizes(self) -> bool:
        return self.rank is not None or self.rank_energy is not None
