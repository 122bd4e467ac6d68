"""Refusals' explanations are owed until done, whatever happens to the gateway: after a
``kill -9`` the restarted gateway finishes every pending one (SQLite and PostgreSQL),
and two gateways sharing one PostgreSQL split the jobs without explaining any twice."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from gateway.config import StoreSpec
from gateway.decisions import build_store
from tests.fakes import http_call
from tests.gateway.conftest import metric_value
from tests.gateway.processes import GatewayProcess, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REFUSALS = 30


def deployments(credit_models: dict[str, Path]) -> dict[str, Any]:
    """``credit``: lr answers; each refusal (label 0) is explained by Kernel SHAP through
    lr's pod, one decision at a time (``max_batch: 1``, one worker process: a gateway
    takes at most two jobs at once, so the others wait in the store)."""
    explain = {"method": "kernel_shap", "encoding": str(credit_models["encoding"]),
               "reference_data": str(credit_models["reference"]), "when": "refusals",
               "adverse": {"output": "label", "values": [0]}, "kernel_shap_nsamples": 128,
               "background_size": 20, "workers": 1, "max_batch": 1}
    return {"credit": {"router": {"kind": "weighted", "weights": {"lr": 1}},
                       "explain": explain}}


def refused_rows(credit_models: dict[str, Path], n: int) -> np.ndarray:
    """``n`` rows the logistic regression refuses (label 0), from the reference data."""
    rows = np.load(credit_models["reference"]).astype(np.float32)
    refused = rows[joblib.load(credit_models["lr"]).predict(rows) == 0]
    assert len(refused) >= n
    return refused[:n]


def store_of(kind: str, tmp_path: Path, request) -> tuple[dict, dict[str, str], StoreSpec]:
    """(config ``store:`` block, environment, the spec the test reads the store with)."""
    if kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        return {"kind": "postgres"}, {"ARBITER_STORE_DSN": dsn}, StoreSpec(kind="postgres",
                                                                           dsn=dsn)
    path = tmp_path / "arbiter.sqlite"
    return {"kind": "sqlite", "path": str(path)}, {}, StoreSpec(kind="sqlite", path=path)


def backlog(spec: StoreSpec) -> dict[str, tuple[int, float]]:
    """The jobs owed, read from the store by this test process."""
    async def read() -> dict[str, tuple[int, float]]:
        store = build_store(spec)
        await store.open(["credit"])
        try:
            return await store.explanation_backlog()
        finally:
            await store.close()

    return asyncio.run(read())


def decide(gateway: GatewayProcess, row: np.ndarray) -> str:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, row.size],
                        "data": row.tolist()}]}
    status, doc = gateway.post("/v2/models/credit/infer", body)
    assert status == 200, doc
    assert next(o["data"] for o in doc["outputs"] if o["name"] == "label") == [0]  # refused
    return doc["parameters"]["decision_id"]


def explanation(gateway: GatewayProcess, decision_id: str) -> tuple[int, dict]:
    status, _, body = http_call("GET", f"{gateway.url}/v2/decisions/{decision_id}/explanation")
    return status, json.loads(body)


def wait_all(gateways: list[GatewayProcess], ids: list[str], timeout_s: float) -> list[dict]:
    """Every decision's final explanation document, asking the gateways in turn."""
    deadline = time.monotonic() + timeout_s
    documents = []
    for i, decision_id in enumerate(ids):
        while True:
            status, doc = explanation(gateways[i % len(gateways)], decision_id)
            if status == 200:
                documents.append(doc)
                break
            assert status == 202, doc
            assert time.monotonic() < deadline, f"{decision_id} still owed: {doc}"
            time.sleep(0.2)
    return documents


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_then_restart_explains_every_refusal(kind, lr_pod, gbm_pod, mlp_pod,
                                                    credit_models, tmp_path, request) -> None:
    store, env, spec = store_of(kind, tmp_path, request)
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    config = write_config(tmp_path / "gateway.yaml", pods, deployments(credit_models), store)
    rows = refused_rows(credit_models, REFUSALS)

    first = GatewayProcess(config, env=env).start()
    ids = [decide(first, row) for row in rows]
    deadline = time.monotonic() + 60
    while explanation(first, ids[0])[0] != 200:  # explaining is under way
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.2)  # the last decisions' write-behind commits (flush_interval_ms 20)
    first.kill()
    owed, oldest = backlog(spec)["credit"]
    assert 0 < owed < REFUSALS and oldest >= 0

    with GatewayProcess(config, env=env) as again:
        documents = wait_all([again], ids, timeout_s=120)
        assert [d["status"] for d in documents] == ["done"] * REFUSALS
        assert {d["decision_id"] for d in documents} == set(ids)
        assert all(d["kind"] == "adverse" and d["explanation"]["shap_values"]
                   for d in documents)
        assert max(d["attempts"] for d in documents) == 2  # running at the kill: again
        assert backlog(spec) == {}
        time.sleep(2.5)  # the backlog gauges are read every 2 s
        text = again.get_text("/metrics")
        assert metric_value(text, "arbiter_explanation_backlog", deployment="credit") == 0
        assert metric_value(text, "arbiter_explanation_oldest_pending_age_seconds",
                            deployment="credit") == 0


def test_two_gateways_on_one_postgres_never_explain_a_job_twice(
        lr_pod, gbm_pod, mlp_pod, credit_models, tmp_path, postgres_dsn) -> None:
    env = {"ARBITER_STORE_DSN": postgres_dsn}
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    config = write_config(tmp_path / "gateway.yaml", pods, deployments(credit_models),
                          {"kind": "postgres"})
    rows = refused_rows(credit_models, REFUSALS)
    with GatewayProcess(config, env=env) as a, GatewayProcess(config, env=env) as b:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # all to a, faster than it
            ids = list(pool.map(lambda row: decide(a, row), rows))  # explains: b claims too
        documents = wait_all([a, b], ids, timeout_s=120)
        assert [d["status"] for d in documents] == ["done"] * REFUSALS
        assert {d["attempts"] for d in documents} == {1}
        done = [metric_value(g.get_text("/metrics"), "arbiter_explanations_total",
                             deployment="credit", status="done") for g in (a, b)]
        assert sum(done) == REFUSALS and min(done) > 0, done
