"""``arbiter up`` restarts a pod that dies (1 s, then 2 s, ...) while the gateway keeps
serving, and refuses a gateway config whose models would not reach the run file's pods,
naming the model and both URLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.fakes import http_call
from tests.gateway.processes import ROOT, free_port

pytestmark = pytest.mark.timeout(120)


def _files(tmp_path: Path, gateway_port: int | None = None) -> tuple[Path, dict[str, int]]:
    """A run file with one fake pod (model ``fake``) and a gateway over it."""
    (tmp_path / "delay.txt").write_text("0")
    (tmp_path / "fake.yaml").write_text(yaml.safe_dump({
        "name": "fake", "framework": "tests.fakes:SlowCreditWrapper", "uri": "delay.txt",
        "max_batch_wait_ms": 0}))
    ports = {"pod_http": free_port(), "pod_grpc": free_port(), "http": free_port(),
             "grpc": free_port()}
    model_port = ports["pod_http"] if gateway_port is None else gateway_port
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({
        "models": {"fake": {"url": f"http://127.0.0.1:{model_port}", "name": "fake",
                            "breaker": {"failures": 2, "reset_s": 0.2}}},
        "deployments": {"d": {"router": {"kind": "weighted", "weights": {"fake": 1}}}},
        "store": {"kind": "sqlite", "path": str(tmp_path / "arbiter.sqlite")}}))
    (tmp_path / "arbiter.yaml").write_text(yaml.safe_dump({
        "pods": {"fake": {"settings": "fake.yaml", "http_port": ports["pod_http"],
                          "grpc_port": ports["pod_grpc"]}},
        "gateway": {"config": "gateway.yaml", "http_port": ports["http"],
                    "grpc_port": ports["grpc"]}}))
    return tmp_path / "arbiter.yaml", ports


def _up(run_file: Path, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", "--config", str(run_file)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _status(url: str) -> int:
    try:
        return http_call("GET", url, timeout=1)[0]
    except OSError:
        return 0


def _pod_pid(up: subprocess.Popen) -> int | None:
    for child in psutil.Process(up.pid).children(recursive=True):
        if "serve-model" in child.cmdline():
            return child.pid
    return None


def test_a_crashed_pod_is_restarted_with_backoff(tmp_path: Path) -> None:
    run_file, ports = _files(tmp_path)
    log = tmp_path / "up.log"
    up = _up(run_file, log)
    ready = f"http://127.0.0.1:{ports['http']}/v2/health/ready"
    pod = f"http://127.0.0.1:{ports['pod_http']}/v2/health/ready"
    try:
        assert _wait(lambda: _status(ready) == 200, 60), log.read_text()[-3000:]
        for attempt, delay in ((1, 1), (2, 2)):
            pid = _pod_pid(up)
            assert pid is not None
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            assert _wait(lambda: _status(ready) == 503, 3), "readiness ignored the dead pod"
            assert _wait(lambda: _status(pod) == 200, 30), log.read_text()[-3000:]
            back = time.monotonic() - killed
            assert back >= delay, back
            assert _wait(lambda: _status(ready) == 200, 5), log.read_text()[-3000:]
            assert up.poll() is None
            text = log.read_text()
            assert f"fake exited (code -9); restarting in {delay} s" in text
            assert text.count("fake restarted") == attempt
        assert http_call("POST", f"http://127.0.0.1:{ports['http']}/v2/models/d/infer",
                         {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                                      "data": [0.5] * 20}]})[0] == 200
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        code = up.wait(30)
    assert code == 0


def test_a_gateway_config_that_misses_the_pods_is_refused(tmp_path: Path) -> None:
    elsewhere = free_port()
    run_file, ports = _files(tmp_path, gateway_port=elsewhere)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "up", "--config", str(run_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert (f"gateway: model 'fake' (fake) is at http://127.0.0.1:{elsewhere} in the gateway "
            f"config, but pod 'fake' of the run file serves it at "
            f"http://127.0.0.1:{ports['pod_http']}") in result.stdout + result.stderr
    assert "[fake]" not in result.stdout  # refused before any process started


def test_a_model_on_another_pods_port_is_refused(tmp_path: Path) -> None:
    run_file, ports = _files(tmp_path)
    config = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
    config["models"]["other"] = {"url": f"grpc://127.0.0.1:{ports['pod_grpc']}",
                                 "name": "credit-lr"}
    config["deployments"]["d"]["router"]["weights"]["other"] = 0
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "up", "--config", str(run_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert (f"model 'other' (credit-lr) is at grpc://127.0.0.1:{ports['pod_grpc']} in the "
            "gateway config, but that port is pod 'fake''s, which serves 'fake'"
            ) in result.stdout + result.stderr
