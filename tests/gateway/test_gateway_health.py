"""Routing around failure through a real gateway over real pods: a stopped pod's breaker
opens and readiness follows it, both back when it returns; a connection failure is
retried on another healthy model; a champion that is down is stood in for; a failing
model leaves failed decisions scored as reward 0; backpressure refuses at once with 429
and Retry-After; out-of-domain input is refused before any model sees it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from protos.server.app import ServerOptions
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.gateway.conftest import metric_value, rest_infer
from tests.gateway.processes import free_port
from tests.servers import ServerThread, local_options

ROW = np.full((1, 20), 0.5, np.float32)
NEVER = {"failures": 1000, "probe_interval_s": 0}
FAST = {"failures": 2, "reset_s": 0.2, "probe_interval_s": 0.2}


class MortalPod:
    """A credit-like pod on fixed ports that can be stopped and started again."""

    def __init__(self, name: str) -> None:
        self.wrapper = CreditLikeWrapper()
        self.settings = credit_like_settings(name)
        self.options = ServerOptions(host="127.0.0.1", http_port=free_port(), grpc_port=-1,
                                     drain_timeout_s=0.2)
        self.thread: ServerThread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.options.http_port}"

    def start(self) -> MortalPod:
        self.thread = ServerThread(model_pod(self.wrapper, self.settings, self.options))
        self.thread.__enter__()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.__exit__(None, None, None)
            self.thread = None


@pytest.fixture(scope="module")
def mortal() -> Iterator[MortalPod]:
    pod = MortalPod("mortal").start()
    yield pod
    pod.stop()


@pytest.fixture(scope="module")
def counted() -> Iterator[tuple[ServerThread, CreditLikeWrapper]]:
    wrapper = CreditLikeWrapper()
    with ServerThread(model_pod(wrapper, credit_like_settings("counted"))) as pod:
        yield pod, wrapper


SCHEMA = {"features": [
    {"name": "status_of_existing_checking_account", "column": 0, "categories": [0, 1, 2, 3]},
    {"name": "duration_in_month", "column": 1, "min": 1, "max": 120},
]}


@pytest.fixture(scope="module")
def gateway(lr_pod, mortal, failing_pod, slow_pod, counted) -> Iterator[ServerThread]:
    down_port = free_port()
    models = {
        "lr": {"url": f"grpc://{lr_pod.grpc_target}", "name": "credit-lr"},
        "mortal": {"url": mortal.url, "name": "mortal", "breaker": FAST},
        "down": {"url": f"http://127.0.0.1:{down_port}", "name": "nobody",
                 "breaker": NEVER},
        "bad": {"url": f"http://{failing_pod.http_hostport}", "name": "bad",
                "breaker": {"failures": 3, "reset_s": 30, "probe_interval_s": 0}},
        "bad_always": {"url": f"http://{failing_pod.http_hostport}", "name": "bad",
                       "breaker": NEVER},
        "slow": {"url": f"grpc://{slow_pod.grpc_target}", "name": "slow"},
        "counted": {"url": f"http://{counted[0].http_hostport}", "name": "counted"},
    }
    deployments = {
        "solo": {"router": {"kind": "weighted", "weights": {"mortal": 1}}},
        "pair": {"router": {"kind": "thompson", "arms": ["mortal", "lr"]}, "seed": 3},
        "cc": {"router": {"kind": "champion_challenger", "champion": "mortal",
                          "challengers": ["lr"], "fallback": "lr"}},
        "retry": {"router": {"kind": "weighted", "weights": {"down": 1, "lr": 1}}, "seed": 1},
        "ts-bad": {"router": {"kind": "thompson", "arms": ["bad", "lr"]}, "seed": 5},
        "failing": {"router": {"kind": "thompson", "arms": ["bad_always"]},
                    "feedback": {"penalise_failures": True}},
        "bounded": {"router": {"kind": "weighted", "weights": {"slow": 1}},
                    "max_in_flight": 1, "max_queue": 1},
        "schema": {"router": {"kind": "weighted", "weights": {"counted": 1}},
                   "input_schema": SCHEMA},
        "lr-only": {"router": {"kind": "weighted", "weights": {"lr": 1}}},
    }
    config = GatewayConfig.model_validate({
        "models": models, "deployments": deployments, "store": {"kind": "memory"}})
    down = ServerOptions(host="127.0.0.1", http_port=down_port, grpc_port=-1,
                         drain_timeout_s=0.2)
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("nobody"), down)):
        server = ServerThread(lambda: build_gateway(config, local_options(), 20)[1])
        server.__enter__()  # "down" answered at startup; it is gone from here on
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


def _get(gateway: ServerThread, path: str) -> tuple[int, dict]:
    status, _, body = http_call("GET", gateway.http_url + path)
    return status, json.loads(body)


def _until(check, timeout_s: float) -> float | None:
    """Seconds until ``check()`` is true, or None after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def test_a_stopped_pod_opens_its_breaker_and_readiness_follows(gateway, mortal) -> None:
    assert _get(gateway, "/v2/health/ready")[0] == 200
    mortal.stop()
    try:
        waited = _until(lambda: _get(gateway, "/v2/health/ready")[0] == 503, 2.0)
        assert waited is not None, "readiness still 200 two seconds after the pod stopped"
        assert _get(gateway, "/v2/models/solo/ready")[0] == 503
        assert _get(gateway, "/v2/models/pair/ready")[0] == 200  # lr still answers
        status, headers, doc = rest_infer(gateway.http_url, "solo", ROW)
        assert status == 503 and headers["Retry-After"] == "1"
        assert "not ready" in doc["error"] or "no healthy model" in doc["error"]
        routed = {rest_infer(gateway.http_url, "pair", ROW)[2]["parameters"]["routed_model"]
                  for _ in range(20)}
        assert routed == {"lr"}
        status, _, doc = rest_infer(gateway.http_url, "cc", ROW)
        assert status == 200 and doc["parameters"]["routed_model"] == "lr"
        record = _get(gateway, f"/v2/decisions/{doc['parameters']['decision_id']}")[1]
        assert record["fallback"] == {"from": "mortal",
                                      "reason": "champion 'mortal' is unhealthy"}
        snapshot = _get(gateway, "/v2/deployments/solo")[1]
        assert snapshot["health"]["ready"] is False
        assert snapshot["health"]["models"]["mortal"]["state"] in ("open", "half_open")
        metrics = http_call("GET", gateway.http_url + "/metrics")[2].decode()
        assert metric_value(metrics, "arbiter_upstream_breaker_state", model="mortal") >= 1
    finally:
        mortal.start()
    waited = _until(lambda: _get(gateway, "/v2/health/ready")[0] == 200, 3.0)
    assert waited is not None, "readiness not back three seconds after the pod returned"
    assert rest_infer(gateway.http_url, "solo", ROW)[0] == 200
    metrics = http_call("GET", gateway.http_url + "/metrics")[2].decode()
    assert metric_value(metrics, "arbiter_upstream_breaker_state", model="mortal") == 0


def test_a_connection_failure_is_retried_on_another_healthy_model(gateway) -> None:
    answers = [rest_infer(gateway.http_url, "retry", ROW) for _ in range(12)]
    assert all(status == 200 for status, _, _ in answers)
    assert {doc["parameters"]["routed_model"] for _, _, doc in answers} == {"lr"}
    retried = [doc for _, _, doc in answers if doc["parameters"]["propensity"] == 1.0]
    assert retried, "no request was routed to the unreachable model first"
    record = _get(gateway, f"/v2/decisions/{retried[0]['parameters']['decision_id']}")[1]
    assert record["fallback"]["from"] == "down"
    assert record["fallback"]["reason"].startswith("call to 'down' failed: model 'down'")
    assert record["status"] == "ok" and record["routed"] == "lr"
    metrics = http_call("GET", gateway.http_url + "/metrics")[2].decode()
    assert metric_value(metrics, "arbiter_fallback_decisions_total", deployment="retry",
                        model="down", reason="unreachable") == len(retried)


def test_a_failing_model_leaves_failed_decisions_scored_zero(gateway) -> None:
    status, _, doc = rest_infer(gateway.http_url, "failing", ROW)
    assert status == 500 and "model broke" in doc["error"]
    decision_id = doc["error"].rsplit("(decision ", 1)[1].rstrip(")")
    record = _get(gateway, f"/v2/decisions/{decision_id}")[1]
    assert (record["status"], record["routed"], record["outputs"]) == (
        "failed", "bad_always", {"bad_always": {}})
    assert "model broke" in record["errors"]["bad_always"]
    assert record["rewards"] == {"bad_always": 0.0}
    assert record["feedback"]["source"] == "failure"
    arms = _get(gateway, "/v2/deployments/failing")[1]["router"]["arms"]
    assert (arms["bad_always"]["n"], arms["bad_always"]["reward_sum"]) == (1, 0.0)
    status, _, body = http_call("POST", gateway.http_url + "/v2/deployments/failing/feedback",
                                {"decision_id": decision_id, "reward": 1})
    assert status == 400 and "takes no feedback" in json.loads(body)["error"]
    arms = _get(gateway, "/v2/deployments/failing")[1]["router"]["arms"]
    assert arms["bad_always"]["n"] == 1  # counted once
    metrics = http_call("GET", gateway.http_url + "/metrics")[2].decode()
    assert metric_value(metrics, "arbiter_failed_decisions_total", deployment="failing",
                        model="bad_always") == 1


def test_three_model_errors_open_the_breaker_and_traffic_moves(gateway) -> None:
    statuses = []
    for _ in range(40):
        status, _, doc = rest_infer(gateway.http_url, "ts-bad", ROW)
        statuses.append((status, doc.get("parameters", {}).get("routed_model")))
    failures = [s for s in statuses if s[0] == 500]
    assert len(failures) == 3, statuses  # then the breaker is open
    assert statuses[-10:] == [(200, "lr")] * 10


def test_backpressure_refuses_at_once_with_retry_after(gateway) -> None:
    with ThreadPoolExecutor(6) as pool:
        started = time.monotonic()
        calls = [pool.submit(lambda: (rest_infer(gateway.http_url, "bounded", ROW),
                                      time.monotonic() - started)) for _ in range(6)]
        results = [c.result() for c in calls]
    ok = [t for (status, _, _), t in results if status == 200]
    shed = [(headers, doc, t) for (status, headers, doc), t in results if status == 429]
    assert len(ok) == 2 and len(shed) == 4, results  # 1 in flight + 1 queued (0.5 s each)
    assert all(h["Retry-After"] == "1" and "max_in_flight" in d["error"] for h, d, _ in shed)
    assert max(t for _, _, t in shed) < 0.3 < min(ok)
    metrics = http_call("GET", gateway.http_url + "/metrics")[2].decode()
    assert metric_value(metrics, "arbiter_shed_requests_total", deployment="bounded",
                        reason="queue_full") == 4
    assert metric_value(metrics, "arbiter_requests_total", model="bounded", code="429") == 4


def test_out_of_domain_input_is_refused_before_any_model(gateway, counted) -> None:
    _, wrapper = counted
    good = np.zeros((2, 20), np.float32)
    good[:, 1] = 12
    assert rest_infer(gateway.http_url, "schema", good)[0] == 200
    calls = wrapper.calls
    bad = good.copy()
    bad[1, 1] = 240
    status, _, doc = rest_infer(gateway.http_url, "schema", bad)
    assert status == 400
    assert doc["error"] == ("input 'input' row 1: feature 'duration_in_month' (column 1) is "
                            "240, above its maximum 120")
    bad = good.copy()
    bad[0, 0] = 7
    status, _, doc = rest_infer(gateway.http_url, "schema", bad)
    assert status == 400 and "'status_of_existing_checking_account' (column 0) is 7" in doc[
        "error"]
    status, _, doc = rest_infer(gateway.http_url, "schema", np.zeros((0, 20), np.float32))
    assert (status, doc) == (400, {"error": "input 'input' is empty (shape [0, 20])"})
    assert wrapper.calls == calls


def test_a_request_with_no_rows_is_refused_with_or_without_a_schema(gateway) -> None:
    for deployment in ("schema", "lr-only"):
        status, _, doc = rest_infer(gateway.http_url, deployment, np.zeros((0, 20), np.float32))
        assert status == 400 and doc["error"].endswith(
            "input 'input' is empty (shape [0, 20])"), (deployment, status, doc)


@pytest.mark.parametrize(("readiness", "expected"), [("all", False), ("any", True)])
def test_readiness_all_or_any_deployment(readiness: str, expected: bool) -> None:
    from protos.registry import ModelRegistry
    from tests.fakes import EchoTarget

    class Down(EchoTarget):
        def ready(self) -> bool:
            return False

    registry = ModelRegistry([EchoTarget("up"), Down("down")])
    registry.readiness = readiness
    assert registry.ready() is expected
    assert registry.model_ready("up") and not registry.model_ready("down")
    assert GatewayConfig.model_validate({
        "models": {"m": {"url": "http://127.0.0.1:1", "name": "m"}},
        "deployments": {"d": {"router": {"kind": "weighted", "weights": {"m": 1}}}},
        "readiness": readiness, "store": {"kind": "memory"}}).readiness == readiness
