"""Hand-written TIR kernels (generated per shape) that Relax lowering passes call through call_tir."""

import math

from tvm.script import tirx as T


def clamp(v, lo: float, hi: float):
    """v clipped to [lo, hi] in TIR; an infinite bound (ReLU's hi) adds no instruction."""
    v = T.max(v, T.float32(lo)) if math.isfinite(lo) else v
    return T.min(v, T.float32(hi)) if math.isfinite(hi) else v
