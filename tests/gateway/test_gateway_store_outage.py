"""A PostgreSQL outage under load, through a real gateway process and real clients:
PostgreSQL is shut down and started again while four REST clients decide. Every
decision answered 200 has its row once the store is back; during the outage inference
answers 503 with Retry-After (gRPC UNAVAILABLE), feedback and keyed requests are
refused at once, readiness is off and ``arbiter_decision_store_up`` is 0; all of it
recovers by itself."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psycopg
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from protos import arbiter_pb2, arbiter_pb2_grpc
from tests.fakes import http_call
from tests.gateway.conftest import metric_value
from tests.gateway.outages import own_postgres  # noqa: F401 - fixture
from tests.gateway.processes import GatewayProcess, write_config
from tests.postgres import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DEPLOYMENTS = {"plain": {"router": {"kind": "weighted", "weights": {"lr": 1}}}}


class Load:
    """Four threads deciding until stopped: (time, status, decision id, Retry-After)."""

    def __init__(self, gateway: GatewayProcess, x: np.ndarray) -> None:
        self.gateway, self.x = gateway, x
        self.replies: list[tuple[float, int, str | None, str | None]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(4)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, seed: int) -> None:
        i = seed
        while not self.stopping.is_set():
            row = self.x[i % len(self.x)]
            i += 4
            status, headers, body = http_call(
                "POST", f"{self.gateway.url}/v2/models/plain/infer",
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, row.size],
                             "data": row.tolist()}]}, timeout=10)
            doc = json.loads(body)
            decision_id = doc["parameters"]["decision_id"] if status == 200 else None
            if status != 200:
                assert status == 503 and doc["error"], (status, doc)
            with self.lock:
                self.replies.append((time.monotonic(), status, decision_id,
                                     headers.get("Retry-After")))
            if status != 200:
                time.sleep(0.02)

    def count(self, status: int) -> int:
        with self.lock:
            return sum(1 for r in self.replies if r[1] == status)


def _ready(gateway: GatewayProcess) -> int:
    return http_call("GET", gateway.url + "/v2/health/ready", timeout=5)[0]


def _wait_for(probe, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.05)
    return False


def _store_up(gateway: GatewayProcess) -> float:
    return metric_value(gateway.get_text("/metrics"), "arbiter_decision_store_up")


def _grpc_feedback_code(gateway: GatewayProcess, decision_id: str) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = arbiter_pb2_grpc.DecisionServiceStub(channel)
        try:
            stub.Feedback(arbiter_pb2.FeedbackRequest(deployment="plain", feedback=[
                arbiter_pb2.Feedback(decision_id=decision_id, reward=1.0)]), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _grpc_status(gateway: GatewayProcess, x: np.ndarray) -> str:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
    try:
        tensor = grpcclient.InferInput("input", [1, x.shape[1]], "FP32")
        tensor.set_data_from_numpy(x[:1].astype(np.float32))
        client.infer("plain", [tensor], client_timeout=10)
        return "OK"
    except InferenceServerException as exc:
        return exc.status()
    finally:
        client.close()


@pytest.fixture
def gateway(own_postgres: PostgresServer, lr_pod,  # noqa: F811 - fixture
            tmp_path: Path) -> Iterator[tuple[GatewayProcess, str]]:
    dsn = own_postgres.create_database("gateway_outage")
    store = {"kind": "postgres", "dsn": dsn, "flush_interval_ms": 5}
    config = write_config(tmp_path / "gateway.yaml", {"lr": lr_pod}, DEPLOYMENTS, store)
    with GatewayProcess(config) as process:
        yield process, dsn


def test_every_decision_answered_during_an_outage_is_recorded(
        gateway, own_postgres: PostgresServer,  # noqa: F811 - fixture
        holdout_x: np.ndarray) -> None:
    process, dsn = gateway
    first = process.post("/v2/models/plain/infer", {"inputs": [{
        "name": "input", "datatype": "FP32", "shape": [1, 20],
        "data": holdout_x[0].tolist()}]})[1]["parameters"]["decision_id"]
    with Load(process, holdout_x) as load:
        time.sleep(1.0)
        stopped = time.monotonic()  # pg_ctl stop -m fast: connections are cut at once
        own_postgres.pause()
        assert _wait_for(lambda: _ready(process) == 503, 10), "readiness stayed green"
        unready = time.monotonic()
        assert _store_up(process) == 0
        assert _wait_for(lambda: load.count(503) >= 20, 10)

        start = time.monotonic()
        status, headers, body = http_call(
            "POST", process.url + "/v2/deployments/plain/feedback",
            {"decision_id": first, "reward": 1.0}, timeout=10)
        assert status == 503 and headers["Retry-After"] and json.loads(body)["error"]
        status, headers, body = http_call(
            "POST", process.url + "/v2/models/plain/infer",
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                         "data": holdout_x[1].tolist()}]},
            headers={"Idempotency-Key": f"k-{uuid.uuid4()}"}, timeout=10)
        assert status == 503 and headers["Retry-After"] and json.loads(body)["error"]
        status, headers, body = http_call(
            "POST", process.url + "/v2/models/plain/infer",
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                         "data": holdout_x[2].tolist()}]}, timeout=10)
        assert status == 503 and headers["Retry-After"]
        assert json.loads(body)["error"] == (
            "deployment 'plain' cannot record decisions now: the decision store cannot be "
            "written; retry later")
        assert time.monotonic() - start < 1.0  # both refused at once, no 30 s wait
        assert _grpc_status(process, holdout_x) == "StatusCode.UNAVAILABLE"
        assert _grpc_feedback_code(process, first) == grpc.StatusCode.UNAVAILABLE

        time.sleep(1.0)
        own_postgres.resume()
        resumed = time.monotonic()
        assert _wait_for(lambda: _ready(process) == 200, 15), "readiness did not come back"
        back = time.monotonic()
        assert _store_up(process) == 1
        time.sleep(1.0)

    answered = [r[2] for r in load.replies if r[1] == 200]
    refused = [r for r in load.replies if r[1] == 503]
    during = [r for r in load.replies if stopped <= r[0] <= back]
    after = [r for r in load.replies if r[0] > back + 0.5]
    assert refused and all(r[3] is not None and int(r[3]) >= 1 for r in refused)
    assert any(r[1] == 503 for r in during) and after and all(r[1] == 200 for r in after)
    assert _wait_for(lambda: metric_value(process.get_text("/metrics"),
                                          "arbiter_decision_write_queue") == 0, 10)
    with psycopg.connect(dsn) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM decisions")}
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} of {len(answered)} answered decisions not recorded"
    first_refused = min(r[0] for r in refused)
    print("store outage test:", json.dumps({
        "answered": len(answered), "refused": len(refused),
        "answered_after_stop": sum(1 for r in load.replies if r[1] == 200
                                   and stopped <= r[0] < first_refused),
        "first_503_after_stop_s": round(first_refused - stopped, 3),
        "unready_after_stop_s": round(unready - stopped, 3),
        "ready_after_restart_s": round(back - resumed, 3)}))

    status, reply = process.post("/v2/deployments/plain/feedback",
                                 {"decision_id": first, "reward": 1.0})
    assert status == 200 and reply["status"] == "accepted"  # nothing was acknowledged before
    assert _grpc_status(process, holdout_x) == "OK"
