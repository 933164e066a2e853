"""Pruned 1x1 convs and MatMul / Gemm layers as block-sparse kernels (edgekit/kernels/sparse.py), chosen per layer.

Run on the NHWC module (after nhwc_layout, FoldConstant and the fused-block rewrite, which decides the 1x1 convs of its
blocks itself with `choose`). Recognized, with the
weight a constant:

    conv2d(x, W[1, 1, K, N]) [+ bias]    NHWC / HWIO, stride 1, no padding, groups 1
    matmul(x, W[K, N]) [+ bias]          Gemm and MatMul after import

A layer runs sparse where the share of its non-zero 1 x 8 output-channel blocks is at most MAX_DENSITY and its dense
work is at least MIN_DENSE_MACS (or its weights MIN_WEIGHT_BYTES), dense otherwise: the sparse kernel does the dense
kernel's work per kept block plus an index load, so below the break-even it is slower, and unstructured zeros rarely
empty a whole block (compress --prune-block 8 prunes blocks). The weight then lives in the artifact as the kept
blocks and their indices only. Every pruned layer (a quarter or more of its weights zero) is reported: which kernel
and why.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from edgekit.compiler.relax_passes import (
    KernelTable,
    bias_vector,
    constant_array,
    prim_float,
    rewrite_with_kernels,
    skippable_pass,
    static_shape,
    use_counts,
)
from edgekit.kernels import sparse as ks

MAX_DENSITY = 0.4  # kept blocks / all blocks: measured break-even ~0.5-0.6 (bench/prune.py), with a margin
# below this a layer's sparse call costs more than it saves: the dense op fuses its bias / activation epilogue
# and the next elementwise ops, the sparse kernel does not (measured: ViT-tiny's 0.3-0.8 M MAC MatMuls at 90 %
# blocks pruned made the model 0.85x of dense, AVX2 host)
MIN_DENSE_MACS = 2_000_000
MIN_WEIGHT_BYTES = 256 << 10  # ... unless its weights alone are bigger: a classifier's GEMV reads them all per call
REPORTED_ZEROS = 0.25  # a layer with at least this share of zero weights counts as pruned: reported


def _pointwise_conv(call: relax.Call, weight_shape: tuple[int, ...]) -> str | None:
    """Why this conv2d is not a sparse candidate (None: it is one)."""
    a = call.attrs
    if (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC") or int(a.groups) != 1:
        return f"{a.data_layout}/{a.kernel_layout} groups={a.groups}: sparse kernels are for dense NHWC convs"
    kh, kw = weight_shape[:2]
    if (kh, kw) != (1, 1):
        return f"{kh}x{kw} conv: sparse kernels are for 1x1 convs and MatMul"
    if (
        any(int(s) != 1 for s in a.strides)
        or any(int(p) != 0 for p in a.padding)
        or any(int(d) != 1 for d in a.dilation)
    ):
        return "1x1 conv with stride, padding or dilation: sparse kernels are for stride 1"
    return None


def pruned_entry(op: str, weight: np.ndarray) -> dict | None:
    """The report entry of a pruned layer (a quarter or more of its weights zero), None for any other."""
    zeros = 1.0 - np.count_nonzero(weight) / max(1, weight.size)
    if zeros < REPORTED_ZEROS:
        return None
    return {"op": op, "shape": list(weight.shape), "zeros": round(zeros, 4)}


def _two_four(w2: np.ndarray) -> bool:
    """At most 2 non-zeros in every group of 4 along K (compress --nm 2:4), for the report's reason."""
    k, n = w2.shape
    return k % 4 == 0 and bool(((w2.reshape(k // 4, 4, n) != 0).sum(axis=1) <= 2).all())


def choose(w2: np.ndarray, macs: int) -> tuple[bool, dict]:
    """Sparse or dense for a pruned weight W [K, N] whose dense product is `macs` MACs: (sparse?, report fields).
    The fused-block rewrite (inverted_residual.py) asks the same for the 1x1 convs inside its blocks."""
    density = ks.block_density(w2)
    if density is None:
        return False, {"kernel": "dense", "why": f"{w2.shape[1]} output channels: not a multiple of {ks.BLOCK}"}
    fields = {"block_density": round(density, 4), "dense_macs": macs}
    if density > MAX_DENSITY:
        return False, fields | {
            "kernel": "dense",
            "why": f"{density:.0%} of 1x{ks.BLOCK} blocks non-zero, above {MAX_DENSITY:.0%}: dense is faster"
            + ("; 2:4 pattern: no 2:4 kernel beats dense here (see README)" if _two_four(w2) else ""),
        }
    if macs < MIN_DENSE_MACS and w2.nbytes < MIN_WEIGHT_BYTES:
        return False, fields | {
            "kernel": "dense",
            "why": f"{macs / 1e6:.2f} M MACs, {w2.nbytes / 1e3:.0f} kB of weights dense: "
            "too small for a sparse call to beat the fused dense op",
        }
    return True, fields | {"kernel": "sparse"}


def _layer(
    call: relax.Call,
    bias: relax.Expr | None,
    kernels: KernelTable,
    tile_rows: int,
    epilogue: ks.Epilogue | None = None,
    residual: relax.Expr | None = None,
    out_lead: tuple[int, ...] | None = None,
) -> tuple[relax.Expr | None, dict | None]:
    """(the sparse call or None, the report entry or None for an unpruned layer). `out_lead`: the output's
    leading dims where a reshape of the product was absorbed (same rows, another shape)."""
    epilogue = epilogue or ks.Epilogue()
    x, w_expr = call.args
    weight = constant_array(w_expr)
    if weight.dtype != np.float32 or x.ty.dtype != "float32":
        return None, None
    is_conv = call.op.name == "relax.nn.conv2d"
    entry = pruned_entry("conv2d" if is_conv else "matmul", weight)
    if entry is None:
        return None, None
    x_shape = static_shape(x)
    if x_shape is None:
        return None, entry | {"kernel": "dense", "why": "input shape not static"}
    why = (
        _pointwise_conv(call, weight.shape)
        if is_conv
        else (None if weight.ndim == 2 and len(x_shape) >= 2 else "not x @ W[K, N]")
    )
    if why:
        return None, entry | {"kernel": "dense", "why": why}
    w2 = weight.reshape(weight.shape[-2:])  # [K, N]
    lead = x_shape[:-1]
    sparse_pays, fields = choose(w2, int(np.prod(lead, dtype=np.int64)) * w2.size)
    entry |= fields
    if not sparse_pays:
        return None, entry
    bias_vec = bias_vector(bias, w2.shape[1], len(lead), len(lead) + 1)
    if bias_vec is None:
        return None, entry | {"kernel": "dense", "why": "bias is not per output channel"}
    sparse = ks.to_block_sparse(w2)
    out_lead = tuple(out_lead or lead)
    dims = (*lead, sparse.k, sparse.n, len(sparse.indices), int(bias is not None))
    view = ["as_" + "_".join(map(str, out_lead))] if out_lead != tuple(lead) else []
    key = "_".join(["block_sparse", *map(str, dims), *view, *([epilogue.key()] if epilogue.key() else [])])
    func = kernels.get(key, lambda: ks.spmm_func(lead, sparse, bias is not None, epilogue, tile_rows, out_lead))
    args = [
        x,
        relax.const(sparse.values),
        relax.const(sparse.indices),
        relax.const(sparse.indptr),
        relax.const(bias_vec),
        *([residual] if residual is not None else []),
    ]
    new = relax.call_tir(func, args, relax.TensorType((*out_lead, sparse.n), "float32"))
    return new, entry | {"weight_bytes": sparse.nbytes, "dense_weight_bytes": int(w2.nbytes)}


def _patterns(op: str):
    """(pattern, its parts) for `op` with each epilogue the kernel can take, biggest first (a smaller pattern
    matches what a bigger one left): [act](([op + bias] | op) [+ r]), act = clip or relu, r a same-shaped tensor
    on either side of the add; before the add the product may be reshaped with its rows kept (importers flatten
    a Linear on [B, T, C] to a 2-D MatMul and reshape back before the residual add)."""
    for with_bias in (True, False):
        core, bias = is_op(op)(wildcard(), is_const()), is_const()
        y = is_op("relax.add")(core, bias) if with_bias else core
        res, reshaped = wildcard(), is_op("relax.reshape")(y, wildcard())
        parts = {"core": core, "bias": bias if with_bias else None, "y": y, "res": res}
        sums = [
            (is_op("relax.add")(*pair), view)
            for view in (None, reshaped)
            for pair in (((view or y), res), (res, (view or y)))
        ]
        for inner, summed, view in (*((s, s, v) for s, v in sums), (y, None, None)):
            for act in ("clip", "relu"):
                pattern = (
                    is_op("relax.clip")(inner, wildcard(), wildcard())
                    if act == "clip"
                    else is_op("relax.nn.relu")(inner)
                )
                yield pattern, parts | {"sum": summed, "view": view, "act": act}
        for summed, view in sums:
            yield summed, parts | {"sum": summed, "view": view, "act": None}
        yield y, parts | {"sum": None, "view": None, "act": None}


def _epilogue(m: dict, parts: dict, out_shape: tuple[int, ...]) -> tuple[ks.Epilogue, relax.Expr | None] | None:
    """The matched epilogue and its residual tensor, or None if the residual is not a same-shaped float32 tensor."""
    act, residual = m.get(parts["outer"]) if parts["act"] else None, None
    if parts["sum"] is not None:
        residual = m[parts["res"]]
        if static_shape(residual) != out_shape or residual.ty.dtype != "float32":
            return None
    clip = None
    if act is not None:
        lo_hi = act.args[1:] if parts["act"] == "clip" else None
        clip = (0.0, math.inf) if lo_hi is None else tuple(prim_float(v) for v in lo_hi)
    return ks.Epilogue(clip, residual is not None, add_first=residual is not None and act is not None), residual


def _rewrite(func: relax.Function, pattern, parts: dict, kernels: KernelTable, tile_rows: int, report: list, seen: set):
    uses = use_counts(func)
    var_of = {value: var for var, value in relax.analysis.get_var2val(func).items()}

    def rewriter(expr: relax.Expr, m: dict) -> relax.Expr:
        call = m[parts["core"]]
        if call in seen:  # reported (and left dense) by a bigger match
            return expr
        steps = (parts["core"], parts["y"], parts["view"], parts["sum"])
        inner = [m[p] for p in steps if p is not None and not m[p].same_as(expr)]
        if any(uses.get(var_of.get(e), 0) != 1 for e in inner):
            return expr  # an intermediate is read elsewhere too: a smaller pattern takes the layer
        shape = static_shape(call)
        out_shape = static_shape(m[parts["view"]]) if parts["view"] else shape
        if not (shape and out_shape and out_shape[-1] == shape[-1] and math.prod(out_shape) == math.prod(shape)):
            return expr  # the reshape moves values across rows: not a view of the kernel's output
        found = _epilogue(m, parts | {"outer": pattern}, out_shape)
        if found is None:
            return expr
        seen.add(call)
        bias = m.get(parts["bias"]) if parts["bias"] else None
        new, entry = _layer(call, bias, kernels, tile_rows, *found, out_lead=out_shape[:-1])
        if entry is not None:
            report.append(entry)
        return expr if new is None else new

    return relax.dpl.rewrite_call(pattern, rewriter, func)


def lower_sparse_layers(mod: tvm.IRModule, report: list[dict], tile_rows: int = ks.ROWS) -> tvm.IRModule:
    """`tile_rows`: the kernels' register-tile rows (kernels/sparse.tile_rows of the target)."""
    seen: set = set()

    def rewrite(func: relax.Function, kernels: KernelTable) -> relax.Function:
        for op in ("relax.nn.conv2d", "relax.matmul"):
            for pattern, parts in _patterns(op):
                func = _rewrite(func, pattern, parts, kernels, tile_rows, report, seen)
        return func

    return rewrite_with_kernels(mod, rewrite)


def sparse_layers_pass(report: list[dict], log: list | None = None, tile_rows: int = ks.ROWS) -> tvm.transform.Pass:
    return skippable_pass("SparseLayers", lambda mod: lower_sparse_layers(mod, report, tile_rows), log)
