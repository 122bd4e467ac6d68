"""Gateways as real OS processes (``python -m gateway.cli gateway``), for the tests
that kill, restart or run several of them against one store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.fakes import http_call
from tests.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, pods: dict[str, ServerThread], deployments: dict[str, Any],
                 store: dict[str, Any]) -> Path:
    """A gateway config file naming the pods (``lr`` and ``mlp`` over gRPC, ``gbm`` over
    REST) with ``deployments`` and ``store``."""
    models = {
        key: {"url": (f"http://{pod.http_hostport}" if key == "gbm"
                      else f"grpc://{pod.grpc_target}"), "name": f"credit-{key}"}
        for key, pod in pods.items()
    }
    path.write_text(yaml.safe_dump(
        {"models": models, "deployments": deployments, "store": store}, sort_keys=False))
    return path


class GatewayProcess:
    """``arbiter gateway`` in its own process group, on free ports.

    Args:
        config: gateway config file.
        workers: ``--workers``.
        env: extra environment variables (``ARBITER_STORE_DSN``).
    """

    def __init__(self, config: Path, workers: int = 1, env: dict[str, str] | None = None):
        self.config = config
        self.workers = workers
        self.env = {**os.environ, **(env or {})}
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = config.with_suffix(f".{self.http_port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 60.0) -> GatewayProcess:
        """Start and wait until ``/v2/health/ready`` answers 200.

        Raises:
            AssertionError: the gateway exited or was not ready in time (with its log).
        """
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(self.config),
                 "--host", "127.0.0.1", "--http-port", str(self.http_port),
                 "--grpc-port", str(self.grpc_port), "--workers", str(self.workers),
                 "--drain-timeout-s", "2", "--log-level", "WARNING"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited:\n{self.log.read_text()[-3000:]}"
            try:
                if http_call("GET", self.url + "/v2/health/ready", timeout=2)[0] == 200 \
                        and len(self.worker_pids()) == self.workers:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self) -> set[str]:
        """The processes that report metrics (each worker, once its store is open)."""
        if self.workers == 1:
            return {"main"}
        text = http_call("GET", self.url + "/metrics", timeout=2)[2].decode()
        return {line.split('pid="')[1].split('"')[0] for line in text.splitlines()
                if line.startswith("arbiter_decision_write_queue{")}

    def kill(self) -> None:
        """``kill -9`` of every process of the gateway (its workers included)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (then SIGKILL if it hangs)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> dict:
        status, _, body = http_call("GET", self.url + path)
        assert status == 200, body
        return json.loads(body)

    def post(self, path: str, doc: object, timeout: float = 30.0) -> tuple[int, Any]:
        status, _, body = http_call("POST", self.url + path, doc, timeout=timeout)
        return status, json.loads(body)

    def get_text(self, path: str) -> str:
        status, _, body = http_call("GET", self.url + path)
        assert status == 200, body
        return body.decode()
