"""Every bad input: one clear line on stderr (plus an optional hint line), exit code 2, no traceback."""

from __future__ import annotations

import onnx
import pytest
from conftest import third_party_cnn
from onnx import TensorProto, helper


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    # progress lines ("✓ step (0.1s)") may precede the error; what follows them is the error and its hint
    lines = [l for l in result.stderr.strip().splitlines() if l.strip() and not l.startswith("✓")]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_missing_file(cli, tmp_path):
    assert_one_line_error(cli("compile", tmp_path / "nope.onnx", "-o", tmp_path / "a"), "no such file")


def test_non_onnx_file(cli, tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is a text file, not a protobuf\n" * 20)
    assert_one_line_error(cli("compile", bad, "-o", tmp_path / "a"), "notes.onnx", "not")


def test_truncated_onnx(cli, digits_onnx, tmp_path):
    data = digits_onnx.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli("compile", cut, "-o", tmp_path / "a"), "cut.onnx")


def test_corrupt_onnx(cli, digits_onnx, tmp_path):
    data = bytearray(digits_onnx.read_bytes())
    for i in range(0, 64):  # scramble the header: field tags become garbage
        data[i] ^= 0xFF
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(bytes(data))
    assert_one_line_error(cli("compile", bad, "-o", tmp_path / "a"), "corrupt.onnx")


def test_empty_file(cli, tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_one_line_error(cli("validate", tmp_path, empty), "not an edgekit artifact")
    assert_one_line_error(cli("compile", empty, "-o", tmp_path / "a"), "empty")


def test_unsupported_op_names_node(cli, tmp_path):
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu0"),
            helper.make_node("Det", ["r"], ["y"], name="my_determinant"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    assert_one_line_error(cli("compile", path, "-o", tmp_path / "a"), "my_determinant", "Det")


def test_dynamic_dims_need_input_shape(cli, tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(third_party_cnn(batch="N"), path)
    result = cli("compile", path, "-o", tmp_path / "a")
    assert_one_line_error(result, "image", "dynamic")
    assert "--input-shape image=1,3,32,32" in result.stderr


def test_existing_output_needs_force(cli, digits_onnx, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    assert_one_line_error(cli("compile", digits_onnx, "-o", out), "already exists")
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    assert_one_line_error(cli("export", "digits_cnn", "-o", existing), "already exists")
    assert existing.read_bytes() == b"keep me"


def test_output_may_not_be_the_input(cli, digits_onnx):
    before = digits_onnx.read_bytes()
    assert_one_line_error(cli("compile", digits_onnx, "-o", digits_onnx, "--force"), "is the input")
    assert digits_onnx.read_bytes() == before


def test_unknown_target(cli, digits_onnx, tmp_path):
    result = cli("compile", digits_onnx, "-o", tmp_path / "a", "--target", "pdp11")
    assert_one_line_error(result, "unknown target 'pdp11'")
    assert "x86_64" in result.stderr


def test_unknown_model_and_bad_shape(cli, tmp_path):
    assert_one_line_error(cli("export", "no_such_net", "-o", tmp_path / "m.onnx"), "unknown model")
    assert_one_line_error(cli("export", "digits_cnn", "-o", tmp_path / "m.onnx", "--input-shape", "1,x,8"), "bad shape")
    assert_one_line_error(cli("export", "digits_cnn", "-o", tmp_path / "m.onnx", "--opset", "11"), "opset 11")


def test_wrong_input_shape_for_model(cli, digits_onnx, tmp_path):
    assert_one_line_error(cli("compile", digits_onnx, "-o", tmp_path / "a", "--input-shape", "1,1,9,9"), "input")


def test_not_an_artifact(cli, tmp_path):
    assert_one_line_error(
        cli("run", tmp_path, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy"), "not an edgekit artifact"
    )


BAD_ARRAYS = {
    "pickled.npz": lambda p: __import__("numpy").savez(p, input=__import__("numpy").array([{"a": 1}], dtype=object)),
    "pickled.npy": lambda p: __import__("numpy").save(
        p, __import__("numpy").array([None], dtype=object), allow_pickle=True
    ),
    "strings.npz": lambda p: __import__("numpy").savez(p, input=__import__("numpy").array(["a", "b"])),
    "empty.npz": lambda p: __import__("numpy").savez(p),
    "mismatched.npz": lambda p: __import__("numpy").savez(p, input=__import__("numpy").zeros((2, 3), "float32")),
    "truncated.npz": lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 20),
}


def test_bad_array_files_are_refused_by_every_command_that_reads_them(cli, tmp_path, digits_onnx, digits_artifact):
    """Pickled (object), string, empty, mismatched and truncated .npz/.npy: exit 2 and one line, everywhere."""
    for name, write in BAD_ARRAYS.items():
        path = tmp_path / name
        write(path)
        commands = [
            ("run", digits_artifact, "-i", path, "-o", tmp_path / "y.npy"),
            ("validate", digits_artifact, digits_onnx, "--inputs", path),
            ("compile", digits_onnx, "-o", tmp_path / "art", "--inputs", path),
            ("compress", digits_onnx, "--bits", "8", "--calib", path, "-o", tmp_path / "q.onnx"),
        ]
        for args in commands:
            assert_one_line_error(cli(*args))
        assert (
            not (tmp_path / "y.npy").exists() and not (tmp_path / "art").exists() and not (tmp_path / "q.onnx").exists()
        )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prune-block", "8"], "--prune-block needs --prune"),
        (["--prune", "0.9", "--prune-block", "100"], "bad --prune-block 100"),
        (["--prune", "0.5", "--structured", "--prune-block", "8"], "--prune-block is for unstructured"),
    ],
)
def test_bad_finetune_prune_block(args, message, cli, tmp_path):
    assert_one_line_error(cli("finetune", "digits_cnn", *args, "--epochs", "1", "-o", tmp_path / "p.onnx"), message)
