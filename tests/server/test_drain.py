"""SIGTERM drains: ``arbiter serve-model`` finishes in-flight requests, then exits 0."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes import http_call

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            if http_call("GET", url + "/v2/health/ready", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve-model never became ready")


def test_sigterm_completes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    artifact = tmp_path / "delay.txt"
    artifact.write_text("0.4")
    http_port, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve-model",
         "--framework", "tests.fakes:SlowCreditWrapper", "--model", str(artifact),
         "--name", "slow", "--host", "127.0.0.1", "--http-port", str(http_port),
         "--grpc-port", str(grpc_port), "--drain-timeout-s", "10", "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(url, process)
        doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                           "data": [0.1] * 20}]}
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(http_call, "POST", url + "/v2/models/slow/infer", doc)
                       for _ in range(6)]
            time.sleep(0.2)  # the first batch is in predict, the rest are queued
            process.send_signal(signal.SIGTERM)
            results = [f.result(30) for f in futures]
        assert [r[0] for r in results] == [200] * 6
        for _, _, body in results:
            assert json.loads(body)["outputs"][0]["name"] == "label"
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("argv", [["--framework", "sklearn"], []])
def test_serve_model_without_an_artifact_exits_nonzero(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve-model", *argv, "--name", "x"],
        cwd=REPO, capture_output=True, timeout=60,
    )
    assert result.returncode != 0
