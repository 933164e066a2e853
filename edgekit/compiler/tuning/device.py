"""Where `edgekit tune` builds and times a candidate: here, or on the board over TVM RPC."""

from __future__ import annotations

import tempfile
from pathlib import Path


def build_one(func, target, keep_executable: bool = False):
    import tvm

    exe = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    return exe if keep_executable else exe.mod


class RemoteDevice:
    """Candidates built for the board, uploaded over TVM RPC and timed there (`edgekit tune --rpc/--tracker`)."""

    def __init__(self, session, spec) -> None:
        self.session, self.spec, self.dev = session, spec, session.cpu()
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekit-tune-rpc-")

    def build(self, func, target):
        import uuid

        exe = build_one(func, target, keep_executable=True)
        name = f"tune-{uuid.uuid4().hex[:12]}.so"  # unique: re-uploading a name can crash the server child
        path = Path(self._tmp.name) / name
        exe.export_library(str(path), cc=self.spec.compiler(), options=list(self.spec.link_options))
        self.session.upload(str(path), name)
        return self.session.load_module(name)
