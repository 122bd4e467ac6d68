"""Feedback, promotion, restarts and contract checks of a real gateway."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from gateway.app import build_gateway
from gateway.config import ConfigError
from protos import arbiter_pb2, arbiter_pb2_grpc
from protos.protocol import TensorMetadata
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.gateway.conftest import gateway_config, metric_value, rest_infer
from tests.servers import ServerThread, local_options


def _feedback(gateway: ServerThread, deployment: str, body) -> tuple[int, object]:
    status, _, reply = http_call(
        "POST", f"{gateway.http_url}/v2/deployments/{deployment}/feedback", body)
    return status, json.loads(reply)


def _arm_n(gateway: ServerThread, deployment: str, arm: str) -> int:
    doc = json.loads(http_call("GET", f"{gateway.http_url}/v2/deployments/{deployment}")[2])
    return doc["router"]["arms"][arm]["n"]


def _decide(gateway: ServerThread, deployment: str, x: np.ndarray) -> dict:
    status, _, doc = rest_infer(gateway.http_url, deployment, x)
    assert status == 200, doc
    return doc


def test_unknown_decision_is_404(gateway) -> None:
    status, doc = _feedback(gateway, "eg", {"decision_id": "nope", "reward": 1})
    assert status == 404 and "error" in doc


def test_unknown_deployment_is_404(gateway, holdout_x) -> None:
    decision = _decide(gateway, "eg", holdout_x[:1])
    status, _ = _feedback(gateway, "nope", {"decision_id": decision["id"], "reward": 1})
    assert status == 404
    status, _ = _feedback(gateway, "ab", {"decision_id": decision["id"], "reward": 1})
    assert status == 404  # a decision of another deployment


@pytest.mark.parametrize("item", [
    {"reward": 1.5}, {"reward": -0.1}, {"reward": "x"}, {"reward": True}, {"reward": None},
    {}, {"reward": 1, "truth": [1]}, {"truth": [1, 0]}, {"truth": [[1], [0], [1]]},
])
def test_bad_feedback_is_400_and_changes_nothing(gateway, holdout_x, item) -> None:
    decision = _decide(gateway, "eg", holdout_x[:1])
    routed = decision["parameters"]["routed_model"]
    before = _arm_n(gateway, "eg", routed)
    status, doc = _feedback(gateway, "eg", {"decision_id": decision["id"], **item})
    assert status == 400 and isinstance(doc["error"], str)
    assert _arm_n(gateway, "eg", routed) == before
    record = json.loads(http_call("GET", f"{gateway.http_url}/v2/decisions/{decision['id']}")[2])
    assert record["feedback"] is None


@pytest.mark.parametrize("body", [b"{", b"[]", b'"x"', b"[1]"])
def test_malformed_feedback_body_is_400(gateway, body: bytes) -> None:
    status, _, reply = http_call("POST", f"{gateway.http_url}/v2/deployments/eg/feedback", body)
    assert status == 400 and "error" in json.loads(reply)


def test_duplicate_feedback_is_not_counted_twice(gateway, holdout_x) -> None:
    decision = _decide(gateway, "eg", holdout_x[:1])
    routed = decision["parameters"]["routed_model"]
    before = _arm_n(gateway, "eg", routed)
    body = {"decision_id": decision["id"], "reward": 1}
    assert _feedback(gateway, "eg", body) == (
        200, {"decision_id": decision["id"], "status": "accepted", "rewards": {routed: 1.0}})
    status, doc = _feedback(gateway, "eg", {**body, "reward": 0})
    assert (status, doc["status"], doc["rewards"]) == (200, "duplicate", {routed: 1.0})
    assert _arm_n(gateway, "eg", routed) == before + 1
    record = json.loads(http_call("GET", f"{gateway.http_url}/v2/decisions/{decision['id']}")[2])
    assert record["feedback"]["reward"] == 1.0 and record["rewards"] == {routed: 1.0}


def test_truth_scores_every_recorded_model(gateway, holdout_x) -> None:
    decision = _decide(gateway, "eg", holdout_x[:2])
    labels = next(o["data"] for o in decision["outputs"] if o["name"] == "label")
    status, doc = _feedback(gateway, "eg", {"decision_id": decision["id"], "truth": labels})
    assert status == 200 and doc["status"] == "accepted"
    assert doc["rewards"][decision["parameters"]["routed_model"]] == 1.0


def test_feedback_list_with_one_bad_item_changes_nothing(gateway, holdout_x) -> None:
    good = _decide(gateway, "eg", holdout_x[:1])
    other = _decide(gateway, "eg", holdout_x[1:2])
    arms = {good["parameters"]["routed_model"], other["parameters"]["routed_model"]}
    before = {arm: _arm_n(gateway, "eg", arm) for arm in arms}
    text = http_call("GET", gateway.http_url + "/metrics")[2].decode()
    accepted = metric_value(text, "arbiter_feedback_total", deployment="eg", status="accepted")
    status, _ = _feedback(gateway, "eg", [{"decision_id": good["id"], "reward": 1},
                                          {"decision_id": other["id"], "reward": 2}])
    assert status == 400
    assert {arm: _arm_n(gateway, "eg", arm) for arm in arms} == before
    for decision in (good, other):
        record = json.loads(http_call(
            "GET", f"{gateway.http_url}/v2/decisions/{decision['id']}")[2])
        assert record["feedback"] is None
    status, docs = _feedback(gateway, "eg", [{"decision_id": good["id"], "reward": 1},
                                             {"decision_id": other["id"], "reward": 0}])
    assert status == 200 and [d["status"] for d in docs] == ["accepted", "accepted"]
    text = http_call("GET", gateway.http_url + "/metrics")[2].decode()
    assert metric_value(text, "arbiter_feedback_total", deployment="eg",
                        status="accepted") == accepted + 2


def test_feedback_and_decisions_over_grpc(gateway, holdout_x) -> None:
    decision = _decide(gateway, "eg", holdout_x[:1])
    routed = decision["parameters"]["routed_model"]
    before = _arm_n(gateway, "eg", routed)
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = arbiter_pb2_grpc.DecisionServiceStub(channel)
        reply = stub.Feedback(arbiter_pb2.FeedbackRequest(deployment="eg", feedback=[
            arbiter_pb2.Feedback(decision_id=decision["id"], reward=0.25)]), timeout=10)
        assert [(r.decision_id, r.status, dict(r.rewards)) for r in reply.results] == [
            (decision["id"], "accepted", {routed: 0.25})]
        again = stub.Feedback(arbiter_pb2.FeedbackRequest(deployment="eg", feedback=[
            arbiter_pb2.Feedback(decision_id=decision["id"], reward=1)]), timeout=10)
        assert again.results[0].status == "duplicate"
        record = json.loads(stub.GetDecision(
            arbiter_pb2.GetDecisionRequest(decision_id=decision["id"]), timeout=10).json)
        assert record["id"] == decision["id"] and record["feedback"]["reward"] == 0.25
        for request, code in [
            (arbiter_pb2.FeedbackRequest(deployment="eg", feedback=[
                arbiter_pb2.Feedback(decision_id="nope", reward=1)]), "NOT_FOUND"),
            (arbiter_pb2.FeedbackRequest(deployment="eg", feedback=[
                arbiter_pb2.Feedback(decision_id=decision["id"], reward=1.5)]),
             "INVALID_ARGUMENT"),
            (arbiter_pb2.FeedbackRequest(deployment="eg", feedback=[
                arbiter_pb2.Feedback(decision_id=decision["id"], truth_json="[1,")]),
             "INVALID_ARGUMENT"),
            (arbiter_pb2.FeedbackRequest(deployment="nope", feedback=[
                arbiter_pb2.Feedback(decision_id=decision["id"], reward=1)]), "NOT_FOUND"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                stub.Feedback(request, timeout=10)
            assert info.value.code() == grpc.StatusCode[code]
        with pytest.raises(grpc.RpcError) as info:
            stub.GetDecision(arbiter_pb2.GetDecisionRequest(decision_id="nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert _arm_n(gateway, "eg", routed) == before + 1


def test_manual_promotion_changes_the_routed_model(gateway, holdout_x) -> None:
    url = gateway.http_url + "/v2/deployments/cc-promote/promote"
    assert _decide(gateway, "cc-promote", holdout_x[:1])["parameters"]["routed_model"] == "lr"
    for body in ({"model": "mlp"}, {"model": "lr"}, {}, {"model": 3}):
        assert http_call("POST", url, body)[0] == 400
    status, _, reply = http_call("POST", url, {"model": "gbm"})
    record = json.loads(reply)
    assert status == 200 and (record["champion"], record["previous"]) == ("gbm", "lr")
    assert record["reason"] == "manual"
    for _ in range(5):
        assert _decide(gateway, "cc-promote", holdout_x[:1])["parameters"]["routed_model"] == "gbm"
    snapshot = json.loads(http_call("GET", gateway.http_url + "/v2/deployments/cc-promote")[2])
    assert snapshot["router"]["champion"] == "gbm"
    assert http_call("POST", gateway.http_url + "/v2/deployments/eg/promote",
                     {"model": "gbm"})[0] == 400
    assert http_call("POST", gateway.http_url + "/v2/deployments/nope/promote",
                     {"model": "gbm"})[0] == 404


def test_restart_keeps_the_decision_log(lr_pod, gbm_pod, mlp_pod, holdout_x, tmp_path) -> None:
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    config = gateway_config(pods, tmp_path / "decisions.sqlite", {
        "ts": {"router": {"kind": "thompson", "arms": ["lr", "gbm"]}, "seed": 5}})
    with ServerThread(lambda: build_gateway(config, local_options(), 10)[1]) as first:
        decision = _decide(first, "ts", holdout_x[:2])
        before = json.loads(http_call("GET", f"{first.http_url}/v2/decisions/{decision['id']}")[2])
    with ServerThread(lambda: build_gateway(config, local_options(), 10)[1]) as second:
        status, _, body = http_call("GET", f"{second.http_url}/v2/decisions/{decision['id']}")
        assert status == 200 and json.loads(body) == before
        status, doc = _feedback(second, "ts", {"decision_id": decision["id"], "reward": 1})
        assert status == 200 and doc["status"] == "accepted"
        routed = decision["parameters"]["routed_model"]
        assert _arm_n(second, "ts", routed) == 1
        assert _feedback(second, "ts", {"decision_id": decision["id"], "reward": 1})[1][
            "status"] == "duplicate"
    with ServerThread(lambda: build_gateway(config, local_options(), 10)[1]) as third:
        record = json.loads(http_call("GET", f"{third.http_url}/v2/decisions/{decision['id']}")[2])
        assert record["feedback"]["reward"] == 1.0
        assert _feedback(third, "ts", {"decision_id": decision["id"], "reward": 0})[1][
            "status"] == "duplicate"


async def test_contract_mismatch_fails_startup_naming_the_model(lr_pod, gbm_pod, mlp_pod):
    odd_inputs = [TensorMetadata("input", "FP32", [-1, 10])]
    with ServerThread(model_pod(CreditLikeWrapper(inputs=odd_inputs),
                                credit_like_settings("odd"))) as odd:
        config = gateway_config(
            {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}, None,
            {"mixed": {"router": {"kind": "shadow", "primary": "lr",
                                  "shadows": [{"model": "odd_model"}]}}},
            {"odd_model": {"url": f"grpc://{odd.grpc_target}", "name": "odd"}},
        )
        _, server = build_gateway(config, local_options(), 5)
        try:
            with pytest.raises(ConfigError, match="'odd_model'"):
                await server.start()
        finally:
            await server.stop()


async def test_unreachable_pod_fails_startup_naming_the_model(lr_pod, gbm_pod, mlp_pod):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = gateway_config(
        {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}, None,
        {"d": {"router": {"kind": "weighted", "weights": {"lr": 1, "gone": 1}}}},
        {"gone": {"url": f"http://127.0.0.1:{port}", "name": "gone"}},
    )
    _, server = build_gateway(config, local_options(), 0.5)
    try:
        from protos.errors import UpstreamUnavailableError

        with pytest.raises(UpstreamUnavailableError, match="'gone'"):
            await server.start()
    finally:
        await server.stop()
