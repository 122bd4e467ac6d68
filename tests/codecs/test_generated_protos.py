"""The committed generated protobuf code is what ``protos.generate`` produces now."""

from __future__ import annotations

from pathlib import Path

import pytest

import protos
from protos.generate import PROTOS, generate

pytest.importorskip("grpc_tools")


def test_generated_code_matches_a_fresh_regeneration(tmp_path: Path) -> None:
    generate(tmp_path)
    committed = Path(protos.__file__).parent
    names = [
        proto.replace(".proto", suffix)
        for proto in PROTOS
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    ]
    stale = [
        name for name in names
        if (tmp_path / "protos" / name).read_bytes() != (committed / name).read_bytes()
    ]
    assert not stale, f"regenerate with `python -m protos.generate`: {stale} differ"
