"""Idempotency-Key through a real gateway over real pods, over REST and gRPC: a
repeated key with the same request gets the original decision back (same id, same
outputs, whichever transport and request id), the same key with a different request
is refused (422, gRPC ALREADY_EXISTS) and records nothing, concurrent repeats make one
decision, and requests without a key are never deduplicated."""

from __future__ import annotations

import concurrent.futures
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway, build_gateway
from tests.fakes import http_call
from tests.gateway.conftest import gateway_config
from tests.servers import ServerThread, local_options

DEPLOYMENTS = {
    "plain": {"router": {"kind": "weighted", "weights": {"lr": 1}}},
    "cc": {"router": {"kind": "champion_challenger", "champion": "lr",
                      "challengers": ["gbm", "mlp"]}},
}
HEX32 = re.compile(r"[0-9a-f]{32}")


class KeyedGateway:
    """A running gateway, its :class:`Gateway` (for its store and metrics) and its
    SQLite file."""

    def __init__(self, server: ServerThread, gateway: Gateway, path) -> None:
        self.server, self.gateway, self.path = server, gateway, path

    def rest(self, deployment: str, x: np.ndarray, key: str | None = None,
             **extra: Any) -> tuple[dict[str, str], dict]:
        """POST rows ``x`` with an Idempotency-Key header when ``key`` is given:
        (response headers, body document); fails on a status other than 200."""
        doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                           "data": np.asarray(x, np.float32).ravel().tolist()}], **extra}
        headers = {"Idempotency-Key": key} if key is not None else None
        status, reply_headers, body = http_call(
            "POST", f"{self.server.http_url}/v2/models/{deployment}/infer", doc, headers)
        assert status == 200, body
        return reply_headers, json.loads(body)

    def rows_with_key(self, deployment: str, key: str) -> list[tuple]:
        """Decision ids committed in the store file holding ``key``."""
        self.server.call(self.gateway.store.list(deployment))  # commits queued writes
        with sqlite3.connect(self.path) as db:
            return db.execute("SELECT id FROM decisions WHERE deployment = ? AND "
                              "idempotency_key = ?", (deployment, key)).fetchall()

    def decisions(self, deployment: str) -> int:
        return len(self.server.call(self.gateway.store.list(deployment)))

    def upstream_calls(self, deployment: str, model: str = "lr") -> float:
        return self.gateway.metrics_registry.get_sample_value(
            "arbiter_upstream_requests_total",
            {"deployment": deployment, "model": model, "code": "OK"}) or 0.0


@pytest.fixture(scope="module")
def keyed(lr_pod, gbm_pod, mlp_pod, tmp_path_factory) -> Iterator[KeyedGateway]:
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    path = tmp_path_factory.mktemp("idempotency") / "decisions.sqlite"
    config = gateway_config(pods, path, DEPLOYMENTS)
    built: dict[str, Gateway] = {}

    def factory():
        built["gateway"], server = build_gateway(config, local_options(), 20)
        return server

    with ServerThread(factory) as server:
        yield KeyedGateway(server, built["gateway"], path)


def _key() -> str:
    return f"key-{uuid.uuid4()}"


def test_rest_repeated_key_replays_the_first_decision(keyed, holdout_x) -> None:
    key = _key()
    before = keyed.decisions("plain")
    headers, first = keyed.rest("plain", holdout_x[0:1], key, id="first")
    replay_headers, again = keyed.rest("plain", holdout_x[0:1], key, id="second")
    decision_id = first["parameters"]["decision_id"]
    assert HEX32.fullmatch(decision_id)
    assert again["parameters"]["decision_id"] == decision_id
    assert replay_headers["x-arbiter-decision-id"] == headers["x-arbiter-decision-id"] \
        == decision_id
    assert again["outputs"] == first["outputs"]
    assert again["parameters"]["idempotent_replay"] is True
    assert "idempotent_replay" not in first["parameters"]
    assert (first["id"], again["id"]) == ("first", "second")  # each request's id is echoed
    fresh = keyed.rest("plain", holdout_x[5:6])[1]  # the second body's own answer differs
    assert fresh["outputs"] != first["outputs"]

    assert keyed.rows_with_key("plain", key) == [(decision_id,)]
    assert keyed.decisions("plain") == before + 2  # the keyed decision and the fresh one
    record = keyed.server.call(keyed.gateway.store.get(decision_id))
    assert record.request_id == "first"
    assert record.inputs["input"]["data"] == pytest.approx(holdout_x[0].tolist())

    other = keyed.rest("plain", holdout_x[0:1], _key())[1]
    assert other["parameters"]["decision_id"] not in (decision_id, fresh["parameters"][
        "decision_id"])
    assert "idempotent_replay" not in other["parameters"]


def _grpc_infer(keyed: KeyedGateway, deployment: str, x: np.ndarray, key: str | None,
                request_id: str = ""):
    client = grpcclient.InferenceServerClient(keyed.server.grpc_target)
    try:
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(np.asarray(x, np.float32))
        headers = {"idempotency-key": key} if key is not None else None
        return client.infer(deployment, [tensor], request_id=request_id, headers=headers)
    finally:
        client.close()


def _grpc_parameters(result) -> dict[str, Any]:
    params = result.get_response().parameters
    return {name: getattr(p, p.WhichOneof("parameter_choice")) for name, p in params.items()}


def test_grpc_repeated_key_replays_the_first_decision(keyed, holdout_x) -> None:
    key = _key()
    before = keyed.decisions("cc")
    first = _grpc_infer(keyed, "cc", holdout_x[1:2], key, "g-first")
    again = _grpc_infer(keyed, "cc", holdout_x[1:2], key, "g-second")
    decision_id = _grpc_parameters(first)["decision_id"]
    assert HEX32.fullmatch(decision_id) and decision_id != "g-first"
    assert _grpc_parameters(again)["decision_id"] == decision_id
    assert _grpc_parameters(again)["idempotent_replay"] is True
    assert "idempotent_replay" not in _grpc_parameters(first)
    for name in ("label", "probabilities"):
        np.testing.assert_array_equal(again.as_numpy(name), first.as_numpy(name))
    assert again.get_response().id == "g-second"
    fresh = _grpc_infer(keyed, "cc", holdout_x[7:8], None)
    assert not np.array_equal(fresh.as_numpy("probabilities"), first.as_numpy("probabilities"))

    assert keyed.rows_with_key("cc", key) == [(decision_id,)]
    assert keyed.decisions("cc") == before + 2
    over_rest = keyed.rest("cc", holdout_x[1:2], key)[1]  # one key, either transport
    assert over_rest["parameters"]["decision_id"] == decision_id
    other = _grpc_infer(keyed, "cc", holdout_x[1:2], _key())
    assert _grpc_parameters(other)["decision_id"] not in (
        decision_id, _grpc_parameters(fresh)["decision_id"])


def test_concurrent_repeats_make_one_decision_and_one_model_call(keyed, holdout_x) -> None:
    key = _key()
    before, calls_before = keyed.decisions("plain"), keyed.upstream_calls("plain")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: keyed.rest("plain", holdout_x[2:3], key)[1],
                                range(8)))
    ids = {r["parameters"]["decision_id"] for r in replies}
    assert len(ids) == 1
    assert sum("idempotent_replay" not in r["parameters"] for r in replies) == 1
    assert all(r["outputs"] == replies[0]["outputs"] for r in replies)
    assert keyed.rows_with_key("plain", key) == [(ids.pop(),)]
    assert keyed.decisions("plain") == before + 1
    assert keyed.upstream_calls("plain") - calls_before == 1


def test_requests_without_a_key_are_never_deduplicated(keyed, holdout_x) -> None:
    before = keyed.decisions("plain")
    replies = [keyed.rest("plain", holdout_x[3:4], id="same")[1] for _ in range(3)]
    grpc_replies = [_grpc_parameters(_grpc_infer(keyed, "plain", holdout_x[3:4], None, "same"))
                    for _ in range(2)]
    ids = [r["parameters"]["decision_id"] for r in replies] + [
        p["decision_id"] for p in grpc_replies]
    assert len(set(ids)) == 5
    assert not any("idempotent_replay" in r["parameters"] for r in replies)
    assert not any("idempotent_replay" in p for p in grpc_replies)
    assert keyed.decisions("plain") == before + 5


@pytest.mark.parametrize("request_id", ["client-request-1", uuid.UUID(int=7).hex, ""])
def test_decision_id_is_32_hex_and_never_the_clients(keyed, holdout_x, request_id) -> None:
    for key in (None, _key()):
        doc = keyed.rest("plain", holdout_x[4:5], key, id=request_id)[1]
        decision_id = doc["parameters"]["decision_id"]
        assert HEX32.fullmatch(decision_id) and decision_id != request_id
        assert doc["id"] == (request_id or decision_id)
        params = _grpc_parameters(_grpc_infer(keyed, "plain", holdout_x[4:5], key, request_id))
        assert HEX32.fullmatch(params["decision_id"]) and params["decision_id"] != request_id


def _rest_status(keyed: KeyedGateway, deployment: str, x: np.ndarray, key: str,
                 **extra: Any) -> tuple[int, dict]:
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                       "data": np.asarray(x, np.float32).ravel().tolist()}], **extra}
    status, _, body = http_call("POST", f"{keyed.server.http_url}/v2/models/{deployment}/infer",
                                doc, {"Idempotency-Key": key})
    return status, json.loads(body)


def test_a_key_reused_with_a_different_request_is_refused(keyed, holdout_x) -> None:
    key = _key()
    before = keyed.decisions("plain")
    first = keyed.rest("plain", holdout_x[0:1], key)[1]
    for changed in ({"x": holdout_x[5:6]}, {"x": holdout_x[0:1], "parameters": {"tier": 2}},
                    {"x": holdout_x[0:1], "outputs": [{"name": "label"}]}):
        x = changed.pop("x")
        status, doc = _rest_status(keyed, "plain", x, key, **changed)
        assert status == 422, doc
        assert doc["error"].startswith(f"Idempotency-Key {key!r} was used with a different "
                                       "request")
    with pytest.raises(InferenceServerException) as refused:
        _grpc_infer(keyed, "plain", holdout_x[5:6], key)
    assert refused.value.status() == "StatusCode.ALREADY_EXISTS"
    assert "was used with a different request" in refused.value.message()

    again = keyed.rest("plain", holdout_x[0:1], key, id="retry")[1]  # the same request
    assert again["parameters"]["decision_id"] == first["parameters"]["decision_id"]
    assert again["parameters"]["idempotent_replay"] is True
    assert keyed.rows_with_key("plain", key) == [(first["parameters"]["decision_id"],)]
    assert keyed.decisions("plain") == before + 1


def test_concurrent_requests_with_one_key_and_two_bodies(keyed, holdout_x) -> None:
    key = _key()
    before = keyed.decisions("plain")
    rows = [holdout_x[2:3] if i % 2 == 0 else holdout_x[9:10] for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda x: _rest_status(keyed, "plain", x, key), rows))
    answered = [(x, doc) for x, (status, doc) in zip(rows, replies, strict=True)
                if status == 200]
    refused = [x for x, (status, _) in zip(rows, replies, strict=True) if status == 422]
    assert len(answered) + len(refused) == 8
    ids = {doc["parameters"]["decision_id"] for _, doc in answered}
    assert len(ids) == 1  # one decision, and only the requests with its body got it
    winner = answered[0][0]
    assert all(np.array_equal(x, winner) for x, _ in answered)
    assert refused and all(not np.array_equal(x, winner) for x in refused)
    assert keyed.decisions("plain") == before + 1
