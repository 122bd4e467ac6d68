"""A real gateway in front of real pods: lr over gRPC, gbm over REST, mlp over gRPC,
plus fake pods (a slow one, an erroring one, and one stopped after the gateway starts;
their circuit breakers never open, so each failure reaches the tests as it is:
``test_gateway_health.py`` tests the breakers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.servers import ServerThread, local_options

SLOW_S = 0.5


@pytest.fixture(scope="session")
def slow_pod() -> Iterator[ServerThread]:
    """A credit-like pod whose model sleeps 0.5 s per call."""
    with ServerThread(model_pod(CreditLikeWrapper(delay_s=SLOW_S),
                                credit_like_settings("slow"))) as pod:
        yield pod


@pytest.fixture(scope="session")
def failing_pod() -> Iterator[ServerThread]:
    """A credit-like pod whose model raises on every call (500 / INTERNAL)."""
    settings = credit_like_settings("bad", probe_on_load=False)
    with ServerThread(model_pod(CreditLikeWrapper(fail=RuntimeError("model broke")),
                                settings)) as pod:
        yield pod


def gateway_config(pods: dict[str, ServerThread], sqlite_path: Path | None,
                   deployments: dict[str, Any], extra_models: dict | None = None) -> GatewayConfig:
    """A config naming the real pods (``lr``, ``gbm``, ``mlp``) and ``extra_models``."""
    models = {
        "lr": {"url": f"grpc://{pods['lr'].grpc_target}", "name": "credit-lr"},
        "gbm": {"url": f"http://{pods['gbm'].http_hostport}", "name": "credit-gbm"},
        "mlp": {"url": f"grpc://{pods['mlp'].grpc_target}", "name": "credit-mlp"},
        **(extra_models or {}),
    }
    return GatewayConfig.model_validate({
        "models": models,
        "deployments": deployments,
        "store": ({"kind": "sqlite", "path": str(sqlite_path), "flush_interval_ms": 5}
                  if sqlite_path else {"kind": "memory"}),
    })


DEPLOYMENTS: dict[str, Any] = {
    "ts": {"router": {"kind": "thompson", "arms": ["lr", "gbm", "mlp"]}, "seed": 1},
    "eg": {"router": {"kind": "epsilon_greedy", "arms": ["lr", "gbm"], "epsilon": 0.5},
           "seed": 2},
    "ab": {"router": {"kind": "weighted", "weights": {"lr": 100, "gbm": 0}}, "seed": 3},
    "shadow": {"router": {"kind": "shadow", "primary": "lr",
                          "shadows": [{"model": "gbm"}, {"model": "mlp"}]}},
    "cc": {"router": {"kind": "champion_challenger", "champion": "lr",
                      "challengers": ["gbm", "mlp"]}},
    "cc-promote": {"router": {"kind": "champion_challenger", "champion": "lr",
                              "challengers": ["gbm"]}},
    "plain": {"router": {"kind": "weighted", "weights": {"lr": 1}}},
    "trees": {"router": {"kind": "weighted", "weights": {"gbm": 1}}},
    "shadow-slow": {"router": {"kind": "shadow", "primary": "lr",
                               "shadows": [{"model": "slow"}]}, "max_shadow_in_flight": 2},
    "shadow-bad": {"router": {"kind": "shadow", "primary": "lr",
                              "shadows": [{"model": "bad"}]}},
    "shadow-down": {"router": {"kind": "shadow", "primary": "lr",
                               "shadows": [{"model": "down_grpc"}]}},
    "down-grpc": {"router": {"kind": "weighted", "weights": {"down_grpc": 1}}},
    "down-http": {"router": {"kind": "weighted", "weights": {"down_http": 1}}},
    "late-grpc": {"router": {"kind": "weighted", "weights": {"slow_deadline_grpc": 1}}},
    "late-http": {"router": {"kind": "weighted", "weights": {"slow_deadline_http": 1}}},
}
"""Deployment name -> spec of the module gateway."""


@pytest.fixture(scope="session")
def gateway(lr_pod, gbm_pod, mlp_pod, slow_pod, failing_pod,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The gateway serving :data:`DEPLOYMENTS`; ``down_*`` models' pod is stopped once
    the gateway has started."""
    doomed = ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("doomed")))
    doomed.__enter__()
    try:
        never = {"failures": 1000, "probe_interval_s": 0}  # these test each failure itself
        extra = {
            "slow": {"url": f"grpc://{slow_pod.grpc_target}", "name": "slow"},
            "bad": {"url": f"http://{failing_pod.http_hostport}", "name": "bad",
                    "breaker": never},
            "down_grpc": {"url": f"grpc://{doomed.grpc_target}", "name": "doomed",
                          "breaker": never},
            "down_http": {"url": f"http://{doomed.http_hostport}", "name": "doomed",
                          "breaker": never},
            "slow_deadline_grpc": {"url": f"grpc://{slow_pod.grpc_target}", "name": "slow",
                                   "timeout_s": 0.2, "breaker": never},
            "slow_deadline_http": {"url": f"http://{slow_pod.http_hostport}", "name": "slow",
                                   "timeout_s": 0.2, "breaker": never},
        }
        pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
        sqlite = tmp_path_factory.mktemp("gateway") / "arbiter.sqlite"
        config = gateway_config(pods, sqlite, DEPLOYMENTS, extra)
        server = ServerThread(lambda: build_gateway(config, local_options(), 20)[1])
        server.__enter__()
    finally:
        doomed.__exit__(None, None, None)
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


def rest_infer(url: str, deployment: str, x: np.ndarray, **extra) -> tuple[int, dict, dict]:
    """POST rows ``x`` as JSON to a deployment: (status, headers, body document)."""
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                       "data": np.asarray(x, np.float32).ravel().tolist()}], **extra}
    status, headers, body = http_call("POST", f"{url}/v2/models/{deployment}/infer", doc)
    return status, headers, json.loads(body)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += sample.value
    return total
