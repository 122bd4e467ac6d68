"""Acknowledged means durable: ``kill -9`` of the gateway during 1,000 decisions with
feedback at concurrency 8. After a restart every feedback the client saw acknowledged
is there, the arm counts equal the acknowledged rewards exactly, and feedback sent
again is a duplicate that counts nothing."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.gateway.processes import GatewayProcess, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DECISIONS = 1000
KILL_AT = 450
DEPLOYMENTS = {"ts": {"router": {"kind": "thompson", "arms": ["lr", "gbm", "mlp"]}}}


class Client:
    """Eight threads deciding and sending feedback; what the gateway acknowledged,
    what is in doubt (no answer), in order."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.next = 0
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[str, float]] = {}  # decision id -> (arm, reward)
        self.in_doubt: dict[str, tuple[str, float]] = {}
        self.started = threading.Event()

    def take(self, limit: int) -> int | None:
        with self.lock:
            if self.next >= limit:
                return None
            self.next += 1
            if self.next >= KILL_AT:
                self.started.set()
            return self.next - 1

    def run(self, gateway: GatewayProcess, limit: int) -> None:
        while (i := self.take(limit)) is not None:
            row = self.x[i % len(self.x)]
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, row.size],
                                "data": row.tolist()}]}
            try:
                status, doc = gateway.post("/v2/models/ts/infer", body, timeout=10)
            except OSError:
                return  # the gateway is gone: this decision was never answered
            assert status == 200, doc
            decision_id, arm = doc["parameters"]["decision_id"], doc["parameters"]["routed_model"]
            self.send(gateway, decision_id, arm, (i % 4) / 4)

    def send(self, gateway: GatewayProcess, decision_id: str, arm: str, reward: float) -> str:
        try:
            status, reply = gateway.post("/v2/deployments/ts/feedback",
                                         {"decision_id": decision_id, "reward": reward},
                                         timeout=10)
        except OSError:
            with self.lock:
                self.in_doubt[decision_id] = (arm, reward)
            return "in doubt"
        if status == 200:
            with self.lock:
                self.acked[decision_id] = (arm, reward)
            return reply["status"]
        return str(status)


def _run(gateway: GatewayProcess, client: Client, limit: int, kill: bool) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        runs = [pool.submit(client.run, gateway, limit) for _ in range(8)]
        if kill:
            client.started.wait(120)
            gateway.kill()
        for run in runs:
            run.result()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_loses_no_acknowledged_feedback(kind, lr_pod, gbm_pod, mlp_pod, holdout_x,
                                               tmp_path: Path, request) -> None:
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    env = {}
    if kind == "postgres":
        env["ARBITER_STORE_DSN"] = request.getfixturevalue("postgres_dsn")
        store = {"kind": "postgres"}
    else:
        store = {"kind": "sqlite", "path": str(tmp_path / "arbiter.sqlite")}
    config = write_config(tmp_path / "gateway.yaml", pods, DEPLOYMENTS, store)
    client = Client(holdout_x)

    _run(GatewayProcess(config, env=env).start(), client, DECISIONS, kill=True)
    assert KILL_AT - 8 <= len(client.acked) + len(client.in_doubt) < DECISIONS  # 8 in flight
    with GatewayProcess(config, env=env) as gateway:
        lost = []  # in doubt, and the decision itself was still queued at the kill
        for decision_id, (arm, reward) in list(client.in_doubt.items()):
            answer = client.send(gateway, decision_id, arm, reward)
            assert answer in ("accepted", "duplicate", "404"), answer
            if answer == "404":
                lost.append(decision_id)
        assert len(lost) <= len(client.in_doubt)
        _run(gateway, client, DECISIONS, kill=False)  # the rest of the 1,000

        arms = gateway.get("/v2/deployments/ts")["router"]["arms"]
        for arm in ("lr", "gbm", "mlp"):
            rewards = [r for a, r in client.acked.values() if a == arm]
            assert arms[arm]["n"] == len(rewards), (arm, arms[arm], len(rewards))
            assert arms[arm]["reward_sum"] == sum(rewards)
        for decision_id, (arm, reward) in client.acked.items():
            record = gateway.get(f"/v2/decisions/{decision_id}")
            assert record["routed"] == arm and record["feedback"]["reward"] == reward
        again = [client.send(gateway, d, a, r) for d, (a, r) in list(client.acked.items())]
        assert set(again) == {"duplicate"}
        assert gateway.get("/v2/deployments/ts")["router"]["arms"] == arms
