"""Output safety: --force replaces only an earlier edgekit output of the same kind; nothing that contains an
input, no directory holding other files, never ., $HOME or /. Inputs stay byte-identical."""

from __future__ import annotations

import os
import shutil

import pytest
from test_errors import assert_one_line_error

from edgekit.core.errors import EdgekitError
from edgekit.core.fileio import atomic_dir, check_output_path


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_compile_force_into_the_inputs_directory_deletes_nothing(cli, digits_onnx, tmp_path):
    """The reported data loss: `compile nest/model.onnx -o nest --force` deleted the model and notes.txt."""
    nest = tmp_path / "nest"
    nest.mkdir()
    shutil.copy(digits_onnx, nest / "model.onnx")
    (nest / "notes.txt").write_text("mine")
    before = _snapshot(nest)
    assert_one_line_error(cli("compile", nest / "model.onnx", "-o", nest, "--force"), "contains the input")
    assert _snapshot(nest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nest"]  # no temp dir left beside it


def test_force_refuses_a_directory_that_is_not_an_artifact(cli, digits_onnx, tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "cat.jpg").write_bytes(b"\xff\xd8")
    assert_one_line_error(cli("compile", digits_onnx, "-o", target, "--force"), "without meta.json")
    assert (target / "cat.jpg").read_bytes() == b"\xff\xd8"


def test_force_refuses_an_artifact_holding_foreign_files(cli, digits_artifact, digits_onnx, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(digits_artifact, art)
    (art / "notes.txt").write_text("mine")
    assert_one_line_error(cli("compile", digits_onnx, "-o", art, "--force"), "did not write", "notes.txt")
    assert (art / "notes.txt").read_text() == "mine"


def test_force_replaces_an_earlier_artifact(cli, digits_artifact, digits_onnx, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(digits_artifact, art)
    (art / "meta.json").write_text('{"stale": true}')
    result = cli("compile", digits_onnx, "-o", art, "--force", "--no-validate", "--json")
    assert result.exit_code == 0, result.stderr
    assert "stale" not in (art / "meta.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # the old copy and the temp dir are gone


@pytest.mark.parametrize("where", ["cwd", "home", "root"])
def test_protected_directories_are_never_outputs(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    path = {"cwd": tmp_path / ".", "home": tmp_path / "home", "root": tmp_path.anchor}[where]
    with pytest.raises(EdgekitError, match="directory"):
        check_output_path(type(tmp_path)(path), force=True, kind="artifact")


def test_force_refuses_a_non_onnx_file_as_onnx_output(cli, digits_onnx, tmp_path):
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a model")
    assert_one_line_error(cli("compress", digits_onnx, "--bits", "4", "-o", notes, "--force"), "not an ONNX file")
    assert notes.read_text() == "not a model"


def test_force_replaces_an_earlier_onnx_output(cli, digits_onnx, tmp_path):
    out = tmp_path / "d4.onnx"
    shutil.copy(digits_onnx, out)
    result = cli("compress", digits_onnx, "--bits", "4", "-o", out, "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() != digits_onnx.read_bytes()


def test_compress_output_may_not_be_the_calibration_file(cli, digits_onnx, tmp_path):
    import numpy as np

    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.zeros((4, 1, 1, 8, 8), np.float32))
    before = calib.read_bytes()
    assert_one_line_error(
        cli("compress", digits_onnx, "--bits", "8", "--calib", calib, "-o", calib, "--force"), "is the input"
    )
    assert calib.read_bytes() == before


def test_atomic_dir_leaves_a_users_dot_old_alone(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "meta.json").write_text("{}")
    users = tmp_path / ".art.old"  # the name the swap used to rmtree
    users.mkdir()
    (users / "keep").write_text("mine")
    with atomic_dir(out) as tmp:
        (tmp / "meta.json").write_text('{"new": 1}')
    assert (users / "keep").read_text() == "mine"
    assert (out / "meta.json").read_text() == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [".art.old", "art"]
    assert not os.path.exists(out / "keep")


def test_a_cache_directory_published_first_by_another_process_stays(tmp_path):
    out = tmp_path / "bundle"
    with atomic_dir(out, keep_existing=True) as tmp:
        (tmp / "lib.so").write_text("ours")
        out.mkdir()  # another process publishes the same cache entry while ours is being built
        (out / "lib.so").write_text("theirs, maybe running")
    assert (out / "lib.so").read_text() == "theirs, maybe running"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # ours is gone, no temp left
    with atomic_dir(tmp_path / "fresh", keep_existing=True) as tmp:
        (tmp / "lib.so").write_text("ours")
    assert (tmp_path / "fresh" / "lib.so").read_text() == "ours"


def test_loading_an_artifact_recompiled_in_place_runs_the_new_code(tmp_path):
    """The dynamic loader returns the library it already mapped for a path: after `compile --force` into the
    same directory, edgekit.load in the same process ran the old weights (2x instead of 3x) until
    runtime/lite.py loaded changed libraries through a copy."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import edgekit
    from edgekit.compiler.build import compile_onnx

    x = np.ones((1, 4), np.float32)
    for factor in (2.0, 3.0):
        weight = numpy_helper.from_array(np.full((1, 4), factor, np.float32), "w")
        graph = helper.make_graph(
            [helper.make_node("Mul", ["x", "w"], ["y"])],
            "scale",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
            [weight],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "scale.onnx")
        compile_onnx(tmp_path / "scale.onnx", tmp_path / "art", "host", validate=False, quiet=True, force=True)
        for _ in range(2):  # and again: a path loaded through a copy stays right on the next load
            np.testing.assert_array_equal(edgekit.load(tmp_path / "art")(x)[0], x * factor)
