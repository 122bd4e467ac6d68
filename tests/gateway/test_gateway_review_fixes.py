"""Decisions and feedback stay whole in the situations an acceptance review found:
partial outputs, a tiny memory, labels, two gateways on one log, a removed arm, empty
ids, durable writes."""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3

import pytest

from gateway.app import build_gateway
from tests.fakes import http_call
from tests.gateway.conftest import gateway_config, rest_infer
from tests.servers import ServerThread, local_options

CC = {"router": {"kind": "champion_challenger", "champion": "lr",
                 "challengers": ["gbm", "mlp"]}}


@pytest.fixture
def pods(lr_pod, gbm_pod, mlp_pod):
    return {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}


def _feedback(url: str, deployment: str, body) -> tuple[int, dict]:
    status, _, reply = http_call("POST", f"{url}/v2/deployments/{deployment}/feedback", body)
    return status, json.loads(reply)


def _gateway(config) -> ServerThread:
    return ServerThread(lambda: build_gateway(config, local_options(), 10)[1])


def test_truth_feedback_when_only_probabilities_were_asked(pods, holdout_x, tmp_path) -> None:
    config = gateway_config(pods, tmp_path / "d.sqlite", {"cc": CC})
    with _gateway(config) as gw:
        status, _, doc = rest_infer(gw.http_url, "cc", holdout_x[:1],
                                    outputs=[{"name": "probabilities"}])
        assert status == 200 and [o["name"] for o in doc["outputs"]] == ["probabilities"]
        status, reply = _feedback(gw.http_url, "cc", {
            "decision_id": doc["parameters"]["decision_id"], "truth": [1]})
        assert status == 200 and sorted(reply["rewards"]) == ["gbm", "lr", "mlp"]


def test_tiny_memory_keeps_every_challenger_output(pods, holdout_x, tmp_path) -> None:
    config = gateway_config(pods, tmp_path / "d.sqlite", {"cc": CC})
    config = config.model_copy(update={
        "store": config.store.model_copy(update={"memory_size": 2})})
    with _gateway(config) as gw, concurrent.futures.ThreadPoolExecutor(8) as pool:
        docs = list(pool.map(lambda i: rest_infer(gw.http_url, "cc", holdout_x[i:i + 1])[2],
                             range(40)))
        for doc in docs:
            status, reply = _feedback(gw.http_url, "cc", {
                "decision_id": doc["parameters"]["decision_id"], "truth": [1]})
            assert status == 200 and sorted(reply["rewards"]) == ["gbm", "lr", "mlp"]
            record = json.loads(http_call(
                "GET", f"{gw.http_url}/v2/decisions/{doc['parameters']['decision_id']}")[2])
            assert sorted(record["outputs"]) == ["gbm", "lr", "mlp"]


def test_truth_outside_the_labels_is_400(pods, holdout_x, tmp_path) -> None:
    config = gateway_config(pods, tmp_path / "d.sqlite", {
        "plain": {"router": {"kind": "weighted", "weights": {"lr": 1}},
                  "feedback": {"output": "label", "labels": [0, 1]}}})
    with _gateway(config) as gw:
        decision_id = rest_infer(gw.http_url, "plain", holdout_x[:1])[2]["parameters"][
            "decision_id"]
        status, reply = _feedback(gw.http_url, "plain", {"decision_id": decision_id,
                                                         "truth": [2]})
        assert status == 400 and "not one of the labels [0, 1]" in reply["error"]
        assert _feedback(gw.http_url, "plain", {"decision_id": decision_id,
                                                "truth": [1]})[0] == 200


def test_feedback_after_an_arm_was_removed(pods, holdout_x, tmp_path) -> None:
    log = tmp_path / "d.sqlite"
    before = gateway_config(pods, log, {"ab": {"router": {"kind": "weighted",
                                                          "weights": {"gbm": 1}}}})
    with _gateway(before) as gw:
        decision_id = rest_infer(gw.http_url, "ab", holdout_x[:1])[2]["parameters"][
            "decision_id"]
    after = gateway_config(pods, log, {"ab": {"router": {"kind": "weighted",
                                                         "weights": {"lr": 1}}}})
    with _gateway(after) as gw:
        status, reply = _feedback(gw.http_url, "ab", {"decision_id": decision_id,
                                                      "reward": 1})
        assert status == 200 and reply["not_learned"] == ["gbm"]
        record = json.loads(http_call("GET", f"{gw.http_url}/v2/decisions/{decision_id}")[2])
        assert record["feedback"]["learned"] == []


def test_empty_id_is_absent_and_durable_writes_before_answering(
        pods, holdout_x, tmp_path) -> None:
    log = tmp_path / "d.sqlite"
    config = gateway_config(pods, log, {"plain": {"router": {"kind": "weighted",
                                                             "weights": {"lr": 1}}}})
    config = config.model_copy(update={"store": config.store.model_copy(
        update={"decision_writes": "before_answer", "flush_interval_ms": 10_000})})
    with _gateway(config) as gw:
        status, _, doc = rest_infer(gw.http_url, "plain", holdout_x[:1], id="")
        decision_id = doc["parameters"]["decision_id"]
        assert status == 200 and len(decision_id) == 32 and doc["id"] == decision_id
        with sqlite3.connect(log) as db:  # committed before the answer, long before a flush
            rows = db.execute("SELECT id FROM decisions WHERE id = ?", (decision_id,))
            assert rows.fetchall() == [(decision_id,)]
        assert _feedback(gw.http_url, "plain", {"decision_id": decision_id,
                                                "reward": 1})[0] == 200
