"""Block-sparse x dense products for pruned 1x1 convs and Gemm / MatMul layers (channels-last activations).

The weight W [K, N] (HWIO of a 1x1 conv, or a MatMul's right operand) is cut into blocks of 1 x BLOCK output
channels; a block that is all zeros is dropped, the rest are stored block-CSR by output-channel group:

    values  [nnzb, BLOCK]  float32  the kept blocks, group by group
    indices [nnzb]         int32    the input channel k of each kept block
    indptr  [N / BLOCK + 1] int32   group b owns blocks indptr[b] .. indptr[b + 1]

    out[p, b*BLOCK : (b+1)*BLOCK] = sum over the blocks j of group b of  x[p, indices[j]] * values[j]

so each kept block costs one vector load and, per output row, one broadcast and one FMA: the register tile of a
dense channels-last kernel with the zero blocks skipped. Unstructured zeros rarely empty a whole block, which is
why compress --prune-block prunes whole blocks (XNNPACK's sparse inference vectorizes over pixels instead, in
a channels-first layout that edgekit's NHWC pipeline does not have).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm.script import tirx as T

from edgekit.kernels import clamp

BLOCK = 8  # one AVX2 / NEON-pair vector of float32; AVX-512 runs it as ymm (the FLOPs saved dwarf the width lost)
KERNEL = "block_sparse_matmul"  # the edgekit.kernel attribute: schedules/dispatch.py keeps the kernel as written
ROWS = 8  # output rows per register tile where the target's budget is not given (tile_rows)


def tile_rows(lanes: int, acc_regs: int) -> int:
    """Output rows per register tile: one BLOCK-wide accumulator per row (two registers where vectors hold 4
    floats), as many as the target's accumulator budget (schedules.tiles.simd). Measured on MobileNetV2's sparse
    layers (2 Zen 5 cores): AVX-512's 24 rows 1.1-2.3x faster than 8, AVX2 code best at 12."""
    return max(1, acc_regs // max(1, BLOCK // min(lanes, BLOCK)))


@dataclass(frozen=True)
class BlockSparse:
    values: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    k: int
    n: int

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.indices.nbytes + self.indptr.nbytes


def block_density(w: np.ndarray) -> float | None:
    """Share of non-zero 1 x BLOCK blocks of W [K, N], or None if N is not a multiple of BLOCK."""
    k, n = w.shape
    if n % BLOCK:
        return None
    return float(np.any(w.reshape(k, n // BLOCK, BLOCK) != 0, axis=2).mean())


def to_block_sparse(w: np.ndarray) -> BlockSparse:
    k, n = w.shape
    blocks = np.ascontiguousarray(w.reshape(k, n // BLOCK, BLOCK).transpose(1, 0, 2))  # [group, k, BLOCK]
    kept = np.any(blocks != 0, axis=2)
    indptr = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int32)
    groups, ks = np.nonzero(kept)  # row-major: group by group, k ascending (streams x's row forward)
    values = blocks[groups, ks].astype(np.float32).reshape(-1, BLOCK)
    if len(ks) == 0:  # an all-zero weight: one explicit zero block keeps the buffers non-empty
        values, ks = np.zeros((1, BLOCK), np.float32), np.zeros(1, np.int64)
        indptr = np.zeros(n // BLOCK + 1, np.int32)
    return BlockSparse(values, ks.astype(np.int32), indptr, k, n)


@dataclass(frozen=True)
class Epilogue:
    """What the kernel applies to x @ W + bias before the store: clip(lo, hi) (ReLU6, ReLU: hi inf) and/or adding a
    same-shaped tensor (a residual), in the graph's order: `add_first` = clip(y + r), else clip(y) + r."""

    clip: tuple[float, float] | None = None
    residual: bool = False
    add_first: bool = False

    def key(self) -> str:
        """The kernel-name suffix (kernels with equal shapes and epilogues are one PrimFunc)."""
        parts = [f"clip{self.clip[0]:g}_{self.clip[1]:g}"] if self.clip else []
        parts += ["res" + ("_first" if self.add_first else "")] if self.residual else []
        return "_".join(parts)


def spmm_func(
    lead: tuple[int, ...],
    sparse: BlockSparse,
    with_bias: bool,
    epilogue: Epilogue = Epilogue(),
    rows_per_tile: int = ROWS,
    out_lead: tuple[int, ...] | None = None,
):
    """out [*out_lead, N] = epilogue(x [*lead, K] @ W (+ bias [N])): a parallel loop over (row tile, output
    group), the leading dims (N, H, W of an NHWC 1x1 conv; the batch of a MatMul) read as rows of flat views of
    the buffers; out_lead (default lead) is another shape of the same rows. With a residual the kernel takes it
    (shaped as out) as a parameter between bias and out."""
    out_lead = tuple(out_lead or lead)
    k, n, nnzb = sparse.k, sparse.n, len(sparse.indices)
    rows = int(np.prod(lead, dtype=np.int64))
    groups = n // BLOCK
    tile = min(rows_per_tile, rows)
    tiles = -(-rows // tile)
    lo, hi = epilogue.clip or (-math.inf, math.inf)

    def clip(v):
        return clamp(v, lo, hi)

    @T.macro
    def body(x, values, indices, indptr, bias, res, out, residual):
        T.func_attr({"tirx.noalias": True, "edgekit.kernel": KERNEL})
        x_rows = T.decl_buffer((rows, k), "float32", data=x.data)
        out_rows = T.decl_buffer((rows, n), "float32", data=out.data)
        res_rows = T.decl_buffer((rows, n), "float32", data=res.data)
        for job in T.parallel(groups * tiles):
            g = T.meta_var(job % groups)
            r0 = T.meta_var(T.min((job // groups) * tile, rows - tile))  # the last tile overlaps its neighbour
            acc = T.alloc_buffer((tile, BLOCK), "float32", scope="local")
            for r in T.unroll(tile):
                for lane in T.vectorized(BLOCK):
                    acc[r, lane] = bias[g * BLOCK + lane] if with_bias else T.float32(0)
            for j in T.serial(indptr[g], indptr[g + 1]):
                for r in T.unroll(tile):
                    for lane in T.vectorized(BLOCK):
                        acc[r, lane] = acc[r, lane] + x_rows[r0 + r, indices[j]] * values[j, lane]
            # Python-level branches (decided when the kernel is built): an `if` inside the vector loop scalarizes it
            if not residual:
                for r in T.unroll(tile):
                    for lane in T.vectorized(BLOCK):
                        out_rows[r0 + r, g * BLOCK + lane] = clip(acc[r, lane])
            elif epilogue.add_first:
                for r in T.unroll(tile):
                    for lane in T.vectorized(BLOCK):
                        out_rows[r0 + r, g * BLOCK + lane] = clip(acc[r, lane] + res_rows[r0 + r, g * BLOCK + lane])
            else:
                for r in T.unroll(tile):
                    for lane in T.vectorized(BLOCK):
                        out_rows[r0 + r, g * BLOCK + lane] = clip(acc[r, lane]) + res_rows[r0 + r, g * BLOCK + lane]

    if epilogue.residual:

        @T.prim_func
        def spmm_residual(
            x: T.Buffer((*lead, k), "float32"),
            values: T.Buffer((nnzb, BLOCK), "float32"),
            indices: T.Buffer((nnzb,), "int32"),
            indptr: T.Buffer((groups + 1,), "int32"),
            bias: T.Buffer((n,), "float32"),
            res: T.Buffer((*out_lead, n), "float32"),
            out: T.Buffer((*out_lead, n), "float32"),
        ):
            body(x, values, indices, indptr, bias, res, out, True)

        return spmm_residual

    @T.prim_func
    def spmm(
        x: T.Buffer((*lead, k), "float32"),
        values: T.Buffer((nnzb, BLOCK), "float32"),
        indices: T.Buffer((nnzb,), "int32"),
        indptr: T.Buffer((groups + 1,), "int32"),
        bias: T.Buffer((n,), "float32"),
        out: T.Buffer((*out_lead, n), "float32"),
    ):
        body(x, values, indices, indptr, bias, out, out, False)  # `res` unused without a residual

    return spmm
