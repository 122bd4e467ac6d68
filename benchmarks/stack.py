"""Gateways with a decision store, for the store and worker benchmarks: the config
file, the process, and the endpoint to load.

Every gateway built here serves two deployments over one model ``gbm`` reached over
REST: ``single`` (weighted router, all traffic to ``gbm``: the single-arm case that
is loaded) and ``learn`` (Thompson sampling over the one arm ``gbm``, so that its
feedback updates arm counts in the same transaction, as a learning router's does).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import REPO, Endpoint, Payload, ServerProcess, expect_probs, free_port

__all__ = ["GatewayProc", "fake_pod", "store_block"]

ARBITER = [sys.executable, "-m", "gateway.cli"]


def store_block(kind: str, decision_writes: str, work: Path, dsn: str | None = None
                ) -> dict[str, Any]:
    """The ``store:`` block for ``kind`` (its SQLite file under ``work``)."""
    block: dict[str, Any] = {"kind": kind, "decision_writes": decision_writes}
    if kind == "sqlite":
        block["path"] = str(work / "arbiter.sqlite")
    elif kind == "postgres":
        block["dsn"] = dsn
    return block


class GatewayProc:
    """One ``arbiter gateway`` process (``--workers N``) with its config and endpoint.

    Attributes:
        name: label (also the log file name).
        proc: the process (the supervisor when ``workers`` > 1).
        http_port: REST port.
        grpc_port: gRPC port.
        endpoint: the ``single`` deployment's REST infer endpoint, checked against
            ``expected`` probabilities.
        grpc_endpoint: the same over gRPC.
    """

    def __init__(self, name: str, pod_url: str, store: dict[str, Any], work: Path,
                 payload: Payload, expected, *, workers: int = 1, cpus=None) -> None:
        work.mkdir(parents=True, exist_ok=True)
        config = {
            "models": {"gbm": {"url": pod_url, "name": "credit-gbm"}},
            "deployments": {"single": {"router": {"kind": "weighted", "weights": {"gbm": 1}}},
                            "learn": {"router": {"kind": "thompson", "arms": ["gbm"]}}},
            "store": store,
        }
        path = work / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        self.name = name
        self.http_port = free_port()
        self.grpc_port = free_port()
        argv = [*ARBITER, "gateway", "--config", str(path), "--host", "127.0.0.1",
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--log-level", "WARNING", "--workers", str(workers)]
        self.proc = ServerProcess(name, argv, f"{self.base}/v2/health/ready", cpus=cpus,
                                  cwd=work)
        self.endpoint = Endpoint(name, "rest", f"{self.base}/v2/models/single/infer",
                                 payload.json_body(),
                                 expect_probs("probabilities", expected, ["label"]),
                                 lambda: [self.proc.pid])
        self.grpc_endpoint = Endpoint(name, "grpc", f"127.0.0.1:{self.grpc_port}",
                                      payload.grpc_body("single"),
                                      expect_probs("probabilities", expected, ["label"]),
                                      lambda: [self.proc.pid])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def fake_pod(cpus=None) -> tuple[ServerProcess, str]:
    """:mod:`benchmarks.fake_pod` as ``credit-gbm``; the process and its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.fake_pod", "--name", "credit-gbm",
            "--port", str(port)]
    proc = ServerProcess("fake-pod", argv, f"http://127.0.0.1:{port}/v2/health/ready",
                         cpus=cpus, cwd=REPO)
    return proc, f"http://127.0.0.1:{port}"
