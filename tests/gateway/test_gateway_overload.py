"""Overload: 1,024 concurrent clients for 15 s against a gateway (its own process) in
front of a slow model (a pod process whose every framework call takes 100 ms, batching
up to 64 rows: about 640 rows per second at most).

The deployment admits what the model answers in time (``max_in_flight`` 32 and
``max_queue`` 32: at the 150-300 rows/s this machine gets from the pod, under 0.5 s of
work) and refuses the rest at once. Clients arrive over the first second and behave as
HTTP asks them to: after a 429 or 503 each waits the ``Retry-After`` seconds (with
jitter, 0.5 to 1.5 times, so refusals do not return as one herd). Admitted requests'
p99 is at most 1 s, refusals come within 50 ms (p99), every refusal is a 429 or 503 with
``Retry-After``, none waited out ``queue_timeout_ms``, and the gateway's RSS grows by at
most 50 MB. The clients run in their own process (tests/gateway/overload_client.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from tests.fakes import http_call
from tests.gateway.overload_client import BODY, QUEUE_TIMEOUT
from tests.gateway.processes import ROOT, GatewayProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLIENTS = 1024
SECONDS = 15.0
MODEL_DELAY_S = 0.1


class Pod:
    """``arbiter serve-model`` of the slow fake model, in its own process."""

    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "delay.txt").write_text(str(MODEL_DELAY_S))
        self.port = free_port()
        self.log = (tmp_path / "pod.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve-model", "--framework",
             "tests.fakes:SlowCreditWrapper", "--model", str(tmp_path / "delay.txt"),
             "--name", "slow", "--host", "127.0.0.1", "--http-port", str(self.port),
             "--grpc-port", str(free_port()), "--log-level", "WARNING"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http_call("GET", f"http://127.0.0.1:{self.port}/v2/health/ready",
                             timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("slow pod not ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def _load(url: str) -> list[tuple[float, int, str | None]]:
    """The clients' results, from the load generator in its own fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.gateway.overload_client", url, str(CLIENTS),
         str(SECONDS)], cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [(t, status, retry) for t, status, retry in json.loads(done.stdout)]


def test_overload_is_shed_at_once_and_admitted_requests_keep_their_latency(
        tmp_path: Path, capsys) -> None:
    pod = Pod(tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "models": {"slow": {"url": f"http://127.0.0.1:{pod.port}", "name": "slow",
                            "timeout_s": 10}},
        "deployments": {"slow": {"router": {"kind": "weighted", "weights": {"slow": 1}},
                                 "max_in_flight": 32, "max_queue": 32,
                                 "queue_timeout_ms": 1000}},
        "store": {"kind": "sqlite", "path": str(tmp_path / "arbiter.sqlite")},
    }))
    gateway = GatewayProcess(config).start()
    try:
        url = gateway.url + "/v2/models/slow/infer"
        for _ in range(50):  # warm up: imports, pools, first decisions
            assert http_call("POST", url, BODY)[0] == 200
        process = psutil.Process(gateway.proc.pid)
        rss_before = process.memory_info().rss
        results = _load(url)
        rss_after = process.memory_info().rss
        metrics = gateway.get_text("/metrics")
    finally:
        gateway.stop()
        pod.stop()
    admitted = np.array([t for t, status, _ in results if status == 200])
    shed = [(t, status, retry) for t, status, retry in results if status in (429, 503)]
    timed_out = [t for t, status, _ in results if status == QUEUE_TIMEOUT]
    other = sorted({status for _, status, _ in results} - {200, 429, 503, QUEUE_TIMEOUT})
    shed_times = np.array([t for t, _, _ in shed])
    report = {
        "requests": len(results), "admitted": len(admitted), "shed": len(shed),
        "queue_timeouts": len(timed_out),
        "other_statuses": other,
        "admitted_per_s": round(len(admitted) / SECONDS, 1),
        "admitted_p50_ms": round(1000 * float(np.percentile(admitted, 50)), 1),
        "admitted_p99_ms": round(1000 * float(np.percentile(admitted, 99)), 1),
        "shed_p50_ms": round(1000 * float(np.percentile(shed_times, 50)), 1),
        "shed_p95_ms": round(1000 * float(np.percentile(shed_times, 95)), 1),
        "shed_p99_ms": round(1000 * float(np.percentile(shed_times, 99)), 1),
        "shed_max_ms": round(1000 * float(shed_times.max()), 1),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
    }
    with capsys.disabled():
        print("\noverload test:", json.dumps(report))
    assert not other and not timed_out, report
    assert len(admitted) > 1500 and len(shed) > 5000, report  # overloaded throughout
    assert report["admitted_p99_ms"] <= 1000, report
    assert report["shed_p99_ms"] <= 50, report
    assert all(retry == "1" for _, _, retry in shed), "a refusal without Retry-After"
    assert report["rss_growth_mb"] <= 50, report
    assert "arbiter_shed_requests_total" in metrics
