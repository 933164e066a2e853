"""Host capabilities: an artifact whose target needs a CPU feature this machine lacks is built, never executed
here. compile skips validation with a clear line; validate / run / bench / edgekit.load refuse with one error
line; `targets` says "no (needs ...)". No command ends by SIGILL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_errors import assert_one_line_error

import edgekit
from edgekit.core.errors import EdgekitError
from edgekit.targets import CHECKED_FEATURES, TargetCaps, load_target


def _absent_feature() -> str:
    host = TargetCaps.host()
    if host.arch != "x86_64":
        pytest.skip("x86 host test")
    # prefer rare extensions, so the target stays close to what the host has
    for feature in ("avx512fp16", "avx512bf16", "avx512vbmi2", "avx512vnni", "avx512f"):
        if feature not in host.features:
            return feature
    pytest.skip("this host has every feature edgekit checks")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, digits_onnx):
    """(artifact dir, target toml, feature): the digits CNN built for x86-64-v3 plus one feature this CPU lacks."""
    feature = _absent_feature()
    root = tmp_path_factory.mktemp("foreign")
    toml = root / "needs-more.toml"
    toml.write_text(
        f'description = "test: x86-64-v3 + {feature}"\n[tvm]\nkind = "llvm"\nmtriple = "x86_64-linux-gnu"\n'
        f'mcpu = "x86-64-v3"\nmattr = ["+{feature}"]\n'
    )
    from typer.testing import CliRunner

    from edgekit.cli import app

    result = CliRunner().invoke(
        app, ["compile", str(digits_onnx), "-o", str(root / "art"), "--target", str(toml), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    return root / "art", toml, feature


def test_caps_from_llvm_and_host():
    x86 = load_target("x86_64").caps()
    assert x86.simd_bits == 256 and x86.fp32_lanes == 8 and {"avx2", "fma"} <= x86.features and not x86.has_vnni
    avx512 = load_target("x86_64-avx512").caps()
    assert avx512.has_vnni and avx512.has_vpopcntdq and avx512.vector_registers == 32
    rpi5 = load_target("rpi5").caps()
    assert rpi5.arch == "aarch64" and rpi5.has_dotprod and rpi5.fp32_lanes == 4
    assert not load_target("rpi4").caps().has_dotprod
    assert (x86.isa_class, avx512.isa_class, rpi5.isa_class) == ("x86_64-avx2", "x86_64-avx512", "aarch64")
    host = TargetCaps.host()
    assert set(host.features) <= set(CHECKED_FEATURES[host.arch])
    assert host.missing(load_target("host").caps()) == []  # LLVM's view of this CPU never exceeds the kernel's
    assert avx512.missing(x86) == [] and set(x86.missing(avx512)) >= {"avx512f", "avx512vnni"}
    assert host.missing(rpi5) == ["aarch64"] if host.arch == "x86_64" else True


def test_cpuid_reader_covers_every_checked_x86_feature():
    from edgekit.runtime.lite import _X86_LEAVES, _x86_cpuid_features

    named = [name for registers in _X86_LEAVES.values() for bits in registers.values() for name in bits.values()]
    assert sorted(named) == sorted(CHECKED_FEATURES["x86_64"])
    if TargetCaps.host().arch == "x86_64" and _x86_cpuid_features() is not None:
        # on real hardware CPUID (what the process can execute) and the kernel's flags agree
        from edgekit.runtime.lite import CPUINFO_NAMES

        flags = {
            CPUINFO_NAMES.get(f, f)
            for line in open("/proc/cpuinfo")
            if line.startswith("flags")
            for f in line.split(":", 1)[1].split()
        }
        assert TargetCaps.host().features == frozenset(flags) & set(CHECKED_FEATURES["x86_64"])


def test_compile_builds_but_does_not_execute(foreign):
    art, _, feature = foreign
    meta = json.loads((art / "meta.json").read_text())
    assert meta["validation"]["ok"] is None and feature in meta["validation"]["skipped"]
    assert "edgekit validate" in meta["validation"]["skipped"] and meta["warnings"]
    assert feature in meta["target"]["caps"]["features"]


def test_every_command_refuses_with_one_line(cli, foreign, digits_onnx, tmp_path):
    art, _, feature = foreign
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    for args in (
        ("validate", art),
        ("run", art, "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npy"),
        ("bench", art, "--repeat", "2"),
    ):
        assert_one_line_error(cli(*args), "cannot run on this machine", feature)
    assert not (tmp_path / "y.npy").exists()
    with pytest.raises(EdgekitError, match=feature):
        edgekit.load(art)


def test_targets_lists_what_the_host_lacks(cli):
    host = TargetCaps.host()
    res = cli("targets", "--json")
    rows = {t["name"]: t for t in json.loads(res.stdout)["targets"]}
    avx512 = rows["x86_64-avx512"]
    if host.has_vnni and host.has_vpopcntdq:
        assert avx512["runnable_here"] == "native"
    else:
        assert avx512["runnable_here"] == "no" and avx512["missing_on_host"]
    assert rows["x86_64"]["runnable_here"] == ("native" if "avx2" in host.features else "no")
