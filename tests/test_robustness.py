"""Hostile inputs through every command, in-process: mutated ONNX protos (truncation, bit flips, dims, dtypes,
opsets, external data locations, duplicate names, cycles, unknown ops) and mutated data files (NaN/Inf, huge
values, strings, pickles, wrong shapes). Every case must end with exit 0, 1 or 2, never a traceback or a signal;
an exit 2 is one `error:` line and one `hint:` line; inputs stay byte-identical; a failed command leaves no
output and no temp file.

CI runs EDGEKIT_FUZZ_EXAMPLES (default 200) cases; locally, e.g. EDGEKIT_FUZZ_EXAMPLES=10000. Failures found
here are kept as regression files in tests/fuzz_corpus/ (replayed by test_corpus_replays)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.slow  # builds whole models end to end: the slow tier (README: Tests)

EXAMPLES = int(os.environ.get("EDGEKIT_FUZZ_EXAMPLES", "200"))
CORPUS = Path(__file__).parent / "fuzz_corpus"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("EDGEKIT_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def tiny_model(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, 1x2x6x6: small enough to compile in a second."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _mutate_proto(model: onnx.ModelProto, kind: str, data: st.DataObject) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if kind == "dim":
        dim = g.input[0].type.tensor_type.shape.dim[data.draw(st.integers(0, 3))]
        choice = data.draw(st.sampled_from(["zero", "negative", "huge", "symbolic", "big"]))
        if choice == "symbolic":
            dim.dim_param = "N"
        else:
            dim.dim_value = {"zero": 0, "negative": -3, "huge": 100000, "big": 1 << 40}[choice]
    elif kind == "dtype":
        g.input[0].type.tensor_type.elem_type = data.draw(
            st.sampled_from(
                [
                    TensorProto.STRING,
                    TensorProto.INT64,
                    TensorProto.BOOL,
                    TensorProto.FLOAT16,
                    TensorProto.INT8,
                    TensorProto.DOUBLE,
                    0,
                ]
            )
        )
    elif kind == "opset":
        m.opset_import[0].version = data.draw(st.integers(0, 40))
    elif kind == "external":
        t = g.initializer[0]
        location = data.draw(st.sampled_from(["../outside.bin", "/etc/hostname", "missing.bin", "sub/../../x.bin", ""]))
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        t.external_data.add(key="length", value=str(data.draw(st.integers(0, 1 << 20))))
    elif kind == "duplicate":
        g.node[1].output[0] = g.node[0].output[0]
    elif kind == "cycle":
        g.node[0].input[0] = g.node[2].output[0]
    elif kind == "unknown_op":
        g.node[data.draw(st.integers(0, len(g.node) - 1))].op_type = data.draw(
            st.sampled_from(["FooBarOp", "Det", "Unique", "If"])
        )
        if data.draw(st.booleans()):
            g.node[0].domain = "com.example.custom"
    elif kind == "drop_initializer":
        del g.initializer[data.draw(st.integers(0, len(g.initializer) - 1))]
    elif kind == "attribute":
        node = g.node[0]
        del node.attribute[:]
        node.attribute.append(
            helper.make_attribute(
                data.draw(st.sampled_from(["pads", "strides", "group", "kernel_shape"])),
                data.draw(st.sampled_from([[0], [-1, 2], [1000, 1000, 1000, 1000], 0, 7])),
            )
        )
    raw = m.SerializeToString()
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "bitflip":
        buf = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        raw = bytes(buf)
    return raw


PROTO_KINDS = [
    "truncate",
    "bitflip",
    "dim",
    "dtype",
    "opset",
    "external",
    "duplicate",
    "cycle",
    "unknown_op",
    "drop_initializer",
    "attribute",
]
COMMANDS = ["compile", "compress8", "compress4", "compress1", "validate"]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_command(cli, args: list, inputs_dir: Path, out: Path) -> None:
    before = _snapshot(inputs_dir)
    result = cli(*args)
    text = result.stdout + result.stderr
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, text[-2000:])
    assert "Traceback" not in text and "internal error" not in text, (args, text[-3000:])
    if result.exit_code == 2:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip() and not ln.startswith(("✓", "warning:"))]
        assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr
        assert not out.exists(), f"{out} written by a failed command"
    assert _snapshot(inputs_dir) == before, "an input was modified"
    left = [p.name for p in out.parent.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert not left, left


def _run_case(cli, root: Path, raw: bytes, command: str, artifact: Path | None) -> None:
    inputs_dir = root / "in"
    shutil.rmtree(root, ignore_errors=True)
    inputs_dir.mkdir(parents=True)
    model = inputs_dir / "model.onnx"
    model.write_bytes(raw)
    out = root / ("art" if command == "compile" else "out.onnx")
    args = {
        "compile": ["compile", model, "-o", out],
        "compress8": ["compress", model, "--bits", "8", "--calib", "random", "-o", out],
        "compress4": ["compress", model, "--bits", "4", "--keep", "none", "-o", out],
        "compress1": ["compress", model, "--bits", "1", "-o", out],
        "validate": ["validate", artifact, model] if artifact else ["validate", inputs_dir, model],
    }[command]
    check_command(cli, args, inputs_dir, out)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory) -> Path:
    from edgekit.compiler.build import compile_onnx

    root = tmp_path_factory.mktemp("tiny")
    onnx.save(tiny_model(), root / "tiny.onnx")
    return compile_onnx(root / "tiny.onnx", root / "art", "x86_64", quiet=True).artifact


@FUZZ
@given(data=st.data(), kind=st.sampled_from(PROTO_KINDS), command=st.sampled_from(COMMANDS))
def test_mutated_models_never_crash(cli, tmp_path, tiny_artifact, data, kind, command):
    raw = _mutate_proto(tiny_model(), kind, data)
    _run_case(cli, tmp_path / "case", raw, command, tiny_artifact)


def _mutate_array(kind: str, data: st.DataObject) -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((4, 1, 2, 6, 6)).astype(np.float32)
    if kind in ("nan", "inf", "huge"):
        x.flat[data.draw(st.integers(0, x.size - 1))] = {"nan": np.nan, "inf": np.inf, "huge": 1e30}[kind]
        if data.draw(st.booleans()):
            x[:] = {"nan": np.nan, "inf": -np.inf, "huge": 1e30}[kind]
    elif kind == "string":
        return {"x": np.array(["a", "b"])}
    elif kind == "shape":
        x = x.reshape(4, 2, 6, 6, 1)
    elif kind == "name":
        return {"image": x}
    elif kind == "int":
        return {"x": x.astype(np.int64)}
    elif kind == "empty":
        return {"x": x[:0]}
    return {"x": x}


@FUZZ
@given(
    data=st.data(),
    kind=st.sampled_from(["nan", "inf", "huge", "string", "shape", "name", "int", "empty", "pickle", "garbage"]),
    command=st.sampled_from(["compress8", "validate", "run"]),
)
def test_mutated_data_files_never_crash(cli, tmp_path, tiny_artifact, data, kind, command):
    root = tmp_path / "case"
    shutil.rmtree(root, ignore_errors=True)
    inputs_dir = root / "in"
    inputs_dir.mkdir(parents=True)
    model = inputs_dir / "model.onnx"
    onnx.save(tiny_model(), model)
    arrays = inputs_dir / "data.npz"
    if kind == "pickle":
        np.save(inputs_dir / "data.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        arrays = inputs_dir / "data.npy"
    elif kind == "garbage":
        arrays.write_bytes(bytes(data.draw(st.binary(min_size=0, max_size=64))))
    else:
        np.savez(arrays, **_mutate_array(kind, data))
    out = root / "out.npy" if command == "run" else root / "out.onnx"
    args = {
        "compress8": ["compress", model, "--bits", "8", "--calib", arrays, "-o", out],
        "validate": ["validate", tiny_artifact, model, "--inputs", arrays],
        "run": ["run", tiny_artifact, "--input", arrays, "-o", out],
    }[command]
    check_command(cli, args, inputs_dir, out)


def test_corpus_replays(cli, tmp_path, tiny_artifact):
    """Regression files: every past failure, through every model command."""
    files = sorted(CORPUS.glob("*.onnx"))
    assert files, "the corpus is empty"
    for i, path in enumerate(files):
        for command in COMMANDS:
            _run_case(cli, tmp_path / f"c{i}{command}", path.read_bytes(), command, tiny_artifact)
