"""passes/options.py: CompressOptions, the command's flat option set; its two derived questions."""

from __future__ import annotations

import pytest

from edgekit.passes.options import CompressOptions


@pytest.mark.parametrize(
    ("opts", "prunes", "factorizes"),
    [
        (CompressOptions(), False, False),  # the default is int8 quantization alone
        (CompressOptions(prune=0.5), True, False),
        (CompressOptions(prune=0.0), True, False),  # 0 is a ratio given, not "no pruning"
        (CompressOptions(nm="2:4"), True, False),
        (CompressOptions(prune=0.5, structured=True), True, False),
        (CompressOptions(rank=4), False, True),
        (CompressOptions(rank=0), False, True),
        (CompressOptions(rank_energy=0.9), False, True),
        (CompressOptions(depth=1, sweep=True, prune_skip=("*fc*",)), False, False),  # neither flag: no ratio, no rank
    ],
)
def test_prunes_and_factorizes(opts: CompressOptions, prunes: bool, factorizes: bool):
    assert (opts.prunes, opts.factorizes) == (prunes, factorizes)


def test_defaults_are_int8_minmax_and_compress_re_exports_the_class():
    from edgekit import compress

    opts = CompressOptions()
    assert (opts.bits, opts.method, opts.sparse_format, opts.round_to) == (8, "minmax", "mask", 8)
    assert compress.CompressOptions is CompressOptions  # the older import path tests and callers use
