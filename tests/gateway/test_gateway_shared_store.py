"""Many gateway processes, one store: two gateways on different ports sharing one
PostgreSQL, and one gateway of two workers sharing one SQLite file. A decision made by
one process takes feedback on another, every process reports the same posteriors
within 1 s, and an automatic promotion happens exactly once."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import numpy as np
import pytest

from tests.gateway.processes import GatewayProcess, write_config

pytestmark = pytest.mark.slow

DEPLOYMENTS = {
    "ts": {"router": {"kind": "thompson", "arms": ["lr", "gbm", "mlp"]}},
    "cc": {"router": {"kind": "champion_challenger", "champion": "lr", "challengers": ["gbm"],
                      "promotion": {"auto": True, "min_samples": 40, "probability": 0.9}}},
}


def _rows(x: np.ndarray, i: int) -> dict:
    row = x[i % len(x): i % len(x) + 1]
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, row.shape[1]],
                        "data": row.ravel().tolist()}]}


def _decide(gateway: GatewayProcess, deployment: str, body: dict) -> dict:
    status, doc = gateway.post(f"/v2/models/{deployment}/infer", body)
    assert status == 200, doc
    return doc["parameters"]


def _exercise(first: GatewayProcess, second: GatewayProcess, x: np.ndarray) -> None:
    """Decisions on ``first``, feedback on ``second``; then both agree."""
    sent: dict[str, list[float]] = {"lr": [], "gbm": [], "mlp": []}
    for i in range(60):
        params = _decide(first, "ts", _rows(x, i))
        reward = float(i % 3 == 0)
        status, reply = second.post("/v2/deployments/ts/feedback",
                                    {"decision_id": params["decision_id"], "reward": reward})
        assert status == 200 and reply["status"] == "accepted", reply
        sent[params["routed_model"]].append(reward)

    # champion-challenger: the truth is gbm's own answer, so gbm is right every time
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: _decide(first, "cc", _rows(x, i))["decision_id"],
                            range(160)))

    def teach(pair: tuple[int, str]) -> str:
        i, decision_id = pair
        gateway = (first, second)[i % 2]
        record = gateway.get(f"/v2/decisions/{decision_id}")
        truth = record["outputs"]["gbm"]["label"]["data"]
        status, reply = gateway.post("/v2/deployments/cc/feedback",
                                     {"decision_id": decision_id, "truth": truth})
        assert status == 200, reply
        return reply["status"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(teach, enumerate(ids))) == {"accepted"}

    expected = {arm: (len(r), sum(r)) for arm, r in sent.items()}

    def views() -> tuple[list, list]:
        ts = [g.get("/v2/deployments/ts")["router"]["arms"] for g in (first, second)]
        return ts, [g.get("/v2/deployments/cc")["router"] for g in (first, second)]

    def agreed(ts: list, ccs: list) -> bool:
        return all({a: (v[a]["n"], v[a]["reward_sum"]) for a in v} == expected for v in ts) \
            and all(cc["arms"]["gbm"]["n"] == 160 for cc in ccs)

    deadline = time.monotonic() + 1.0  # every committed feedback seen everywhere within 1 s
    ts, ccs = views()
    while not agreed(ts, ccs) and time.monotonic() < deadline:
        time.sleep(0.05)
        ts, ccs = views()
    assert agreed(ts, ccs), (ts, expected, [cc["arms"] for cc in ccs])
    for cc in ccs:
        assert cc["champion"] == "gbm" and cc["arms"]["gbm"]["reward_sum"] == 160
        assert len(cc["promotions"]) == 1 and cc["promotions"][0]["reason"] == "auto"
    assert ccs[0]["promotions"] == ccs[1]["promotions"]


def test_two_gateways_share_one_postgres(lr_pod, gbm_pod, mlp_pod, holdout_x,
                                         postgres_dsn: str, tmp_path: Path) -> None:
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    config = write_config(tmp_path / "gateway.yaml", pods, DEPLOYMENTS, {"kind": "postgres"})
    env = {"ARBITER_STORE_DSN": postgres_dsn}
    with GatewayProcess(config, env=env) as first, GatewayProcess(config, env=env) as second:
        _exercise(first, second, holdout_x)


def test_two_workers_share_one_sqlite_file(lr_pod, gbm_pod, mlp_pod, holdout_x,
                                           tmp_path: Path) -> None:
    """One port, two worker processes: the same client talks to both at random (a new
    connection per call), so decisions and feedback cross processes."""
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    config = write_config(tmp_path / "gateway.yaml", pods, DEPLOYMENTS,
                          {"kind": "sqlite", "path": str(tmp_path / "arbiter.sqlite")})
    with GatewayProcess(config, workers=2) as gateway:
        assert len(gateway.worker_pids()) == 2
        _exercise(gateway, gateway, holdout_x)
        served = gateway.get_text("/metrics")
    requests = [line for line in served.splitlines()
                if line.startswith('arbiter_requests_total{') and 'model="ts"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in requests) == 60  # summed over workers
