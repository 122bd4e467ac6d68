"""`arbiter serve-model` refuses bad arguments and bad artifacts with one clear line and
a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve-model", "--host", "127.0.0.1", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


@pytest.mark.parametrize(("args", "message"), [
    (["--http-port", "99999"], "99999 is not a port"),
    (["--max-body-mb", "-1"], "-1 must be greater than 0"),
    (["--drain-timeout-s", "-5"], "-5 must be 0 or more"),
])
def test_bad_server_arguments(args: list[str], message: str) -> None:
    result = _serve("--framework", "sklearn", "--model", "x", "--name", "m", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_name(credit_models) -> None:
    result = _serve("--framework", "sklearn", "--model", str(credit_models["lr"]))
    assert result.returncode == 1
    assert "--name is required" in result.stderr and "Traceback" not in result.stderr


def test_artifact_of_another_framework(credit_models) -> None:
    result = _serve("--framework", "onnx", "--model", str(credit_models["lr"]),
                    "--name", "m", "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 1
    assert "cannot load" in result.stderr.lower() or "onnx" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_grpc_port_taken(credit_models) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = _serve("--framework", "sklearn", "--model", str(credit_models["lr"]),
                        "--name", "m", "--http-port", "0", "--grpc-port", str(port))
    assert result.returncode == 1
    assert f"cannot bind gRPC port {port}" in result.stderr
    assert "Traceback" not in result.stderr
