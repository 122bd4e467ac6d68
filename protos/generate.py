"""Regenerate the protobuf and gRPC modules of ``protos/``.

Usage: ``python -m protos.generate [OUT_DIR]`` (default: this folder). Needs
``grpcio-tools<1.85`` so that the generated code runs with ``protobuf<7``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTOS = ("open_inference.proto", "arbiter.proto", "seldon.proto")
ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    """Write ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` for each proto under
    ``out_dir/protos``.

    Raises:
        RuntimeError: protoc reported an error.
    """
    from grpc_tools import protoc

    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    (out_dir / "protos").mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"protos/{proto}",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        _use_private_pool(out_dir / "protos" / proto.replace(".proto", "_pb2.py"))


_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "POOL.AddSerializedFile("


def _use_private_pool(module: Path) -> None:
    """Register the descriptors in ``protos.POOL`` instead of protobuf's default pool.

    Clients such as tritonclient register the same ``inference.*`` messages in the
    default pool; a second registration there fails with "duplicate symbol", so both
    could not live in one process.
    """
    text = module.read_text()
    if _DEFAULT_POOL not in text:
        raise RuntimeError(f"unexpected generated code in {module.name}")
    text = text.replace(_DEFAULT_POOL, _PRIVATE_POOL, 1)
    text = text.replace(
        "from google.protobuf.internal import builder as _builder\n",
        "from google.protobuf.internal import builder as _builder\nfrom protos import POOL\n",
        1,
    )
    text = _WELL_KNOWN_IMPORT.sub(_register_well_known, text)
    module.write_text(text)


_WELL_KNOWN_IMPORT = re.compile(
    r"^from google\.protobuf import (\w+_pb2) as (\w+)\n", re.MULTILINE
)


def _register_well_known(match: re.Match[str]) -> str:
    """After each import of a well-known type (``google/protobuf/struct.proto``), add
    its file to ``protos.POOL`` too, so descriptors that use it resolve there."""
    module, alias = match.group(1), match.group(2)
    return (
        f"from google.protobuf import {module} as {alias}\n"
        f"POOL.AddSerializedFile({alias}.DESCRIPTOR.serialized_pb)\n"
    )


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
