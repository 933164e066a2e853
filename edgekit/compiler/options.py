"""BuildOptions: every switch of a build, in one frozen value passed explicitly from the CLI to the rules.
No build switch lives in a context variable or in os.environ."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgekit.core.errors import EdgekitError

SCHEDULES = ("default", "none")
PRECISIONS = ("fp32", "fp16")  # fp16: GPU targets only (activations and weights in half, accumulation in fp32)
Knobs = dict[str, object]


@dataclass(frozen=True)
class BuildOptions:
    # "default": edgekit's rules; "none": TVM's bare build (naive single-threaded loops, the honest baseline)
    schedules: str = "default"
    # threads the schedules are planned for (parallel loops, fused-block bands); 0 = the target's, else all cores
    threads: int = 0
    # a tuning database as data: {task key: knobs} (edgekit.compiler.tuning.db.load_database reads the files)
    tuning: Mapping[str, Knobs] = field(default_factory=dict)
    winograd: bool = True  # Winograd F(4x4, 3x3) for the stride-1 3x3 convs that qualify
    fuse_blocks: bool = True  # inverted-residual blocks as one fused kernel
    sparse: bool = True  # pruned 1x1 convs / MatMuls -> block-sparse kernels where the rule picks them
    xnor: bool = True  # binary layers -> XNOR-popcount kernels
    int8: bool = True  # QDQ models -> integer conv/matmul kernels (False: TVM's simulated-float QDQ)
    # conv/matmul weights re-laid out at compile time for streaming; off while the tuner times lone PrimFuncs
    # (there the re-layout would run on every call)
    prepack: bool = True
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.schedules not in SCHEDULES:
            raise EdgekitError(f"unknown --schedules '{self.schedules}'", f"choose from {', '.join(SCHEDULES)}")
        if self.threads < 0:
            raise EdgekitError(f"--threads {self.threads} must be >= 0", "0 means all cores")
        if self.precision not in PRECISIONS:
            raise EdgekitError(f"unknown --precision '{self.precision}'", f"choose from {', '.join(PRECISIONS)}")

    def replace(self, **changes) -> "BuildOptions":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return {
            "schedules": self.schedules,
            "threads": self.threads,
            "tuned_tasks": len(self.tuning),
            "winograd": self.winograd,
            "fuse_blocks": self.fuse_blocks,
            "sparse": self.sparse,
            "xnor": self.xnor,
            "int8": self.int8,
            "prepack": self.prepack,
            "precision": self.precision,
        }
