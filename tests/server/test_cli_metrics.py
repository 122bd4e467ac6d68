"""A real `arbiter serve-model` process exports request and batch metrics."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from tests.fakes import http_call
from tests.gateway.conftest import metric_value

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        return http_call("GET", url + "/v2/health/ready", timeout=1)[0] == 200
    except OSError:
        return False


def test_serve_model_exports_batch_rows(credit_models, holdout_x) -> None:
    http, grpc = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve-model", "--settings",
         str(credit_models["gbm_settings"]), "--host", "127.0.0.1",
         "--http-port", str(http), "--grpc-port", str(grpc)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        for rows in (1, 3, 5):
            tensor = httpclient.InferInput("input", [rows, 20], "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(holdout_x[:rows]))
            client.infer("credit-gbm", [tensor])
        text = http_call("GET", url + "/metrics")[2].decode()
        assert metric_value(text, "arbiter_batch_rows_count", model="credit-gbm") == 3
        assert metric_value(text, "arbiter_batch_rows_sum", model="credit-gbm") == 9
        assert metric_value(text, "arbiter_requests_total", model="credit-gbm",
                            protocol="rest", code="200") == 3
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
