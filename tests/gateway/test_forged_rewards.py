"""The forged-reward attack, replayed: a caller floods a bandit with rewards for the arm
it wants to win. With auth and ``feedback.require_decision_token`` nothing it sends
moves the arm counts or the traffic split; the decisions' own clients still teach it.

Attackers: 300 rewards with an infer-only token (403: wrong scope), and 300 rewards
with a feedback token for decisions made by someone else, without (or with a guessed)
decision token (403: not whoever got the decision), over REST, gRPC and Seldon.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import grpc
import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from protos import arbiter_pb2, arbiter_pb2_grpc
from protos.server.auth import ADMIN, DECISIONS_READ, FEEDBACK, INFER
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.security import Tokens, bearer, write_tokens
from tests.servers import ServerThread, local_options

ROW = [0.5] * 20
INFER_DOC = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": ROW}]}
ATTACKS = 300


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return write_tokens(tmp_path_factory.mktemp("forged"))


@pytest.fixture(scope="module")
def gateway(tokens: Tokens, monkeypatch_module) -> Iterator[ServerThread]:
    """Thompson sampling over two identical pods, feedback tokens required (the secret
    from ``ARBITER_FEEDBACK_SECRET``)."""
    monkeypatch_module.setenv("ARBITER_FEEDBACK_SECRET", secrets.token_hex(32))
    pods = [ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings(n)))
            for n in ("good", "evil")]
    for pod in pods:
        pod.__enter__()
    config = GatewayConfig.model_validate({
        "models": {"good": {"url": f"grpc://{pods[0].grpc_target}", "name": "good"},
                   "evil": {"url": f"http://{pods[1].http_hostport}", "name": "evil"}},
        "deployments": {"bandit": {"router": {"kind": "thompson", "arms": ["good", "evil"]},
                                   "seed": 5}},
        "store": {"kind": "memory"},
        "auth": {"tokens_file": str(tokens.path)},
        "feedback": {"require_decision_token": True},
    })
    try:
        with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as server:
            yield server
    finally:
        for pod in pods:
            pod.__exit__(None, None, None)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _decide(gateway: ServerThread, tokens: Tokens) -> dict:
    status, headers, raw = http_call("POST", gateway.http_url + "/v2/models/bandit/infer",
                                     INFER_DOC, bearer(tokens.by_scope[INFER]))
    assert status == 200, raw
    params = json.loads(raw)["parameters"]
    assert headers["x-arbiter-feedback-token"] == params["feedback_token"]
    return params


def _arms(gateway: ServerThread, tokens: Tokens) -> dict:
    status, _, raw = http_call("GET", gateway.http_url + "/v2/deployments/bandit", None,
                               bearer(tokens.by_scope[DECISIONS_READ]))
    assert status == 200
    return json.loads(raw)["router"]["arms"]


def _feedback(gateway: ServerThread, token: str, items) -> tuple[int, dict]:
    status, _, raw = http_call("POST", gateway.http_url + "/v2/deployments/bandit/feedback",
                               items, bearer(token))
    return status, json.loads(raw)


def test_forged_rewards_move_nothing(gateway: ServerThread, tokens: Tokens) -> None:
    decisions = [_decide(gateway, tokens) for _ in range(40)]
    evil = [d for d in decisions if d["routed_model"] == "evil"]
    assert evil, "the bandit never tried the arm under attack"
    before = _arms(gateway, tokens)

    refused = {"scope": 0, "token": 0}
    for i in range(ATTACKS):
        target = evil[i % len(evil)]["decision_id"]
        status, body = _feedback(gateway, tokens.by_scope[INFER],
                                 {"decision_id": target, "reward": 1})
        refused["scope"] += status == 403 and "lacks the scope 'feedback'" in body["error"]
        forged = {"decision_id": target, "reward": 1}
        if i % 2:
            forged["feedback_token"] = secrets.token_hex(32)  # a guess
        status, body = _feedback(gateway, tokens.by_scope[FEEDBACK], forged)
        refused["token"] += status == 403 and "feedback_token" in body["error"]
    assert refused == {"scope": ATTACKS, "token": ATTACKS}
    assert _arms(gateway, tokens) == before

    after = [_decide(gateway, tokens) for _ in range(40)]
    share = sum(d["routed_model"] == "evil" for d in after) / len(after)
    assert share < 0.9, "the split moved towards the attacked arm"


def test_forged_rewards_over_grpc_and_seldon_are_refused(gateway, tokens) -> None:
    target = _decide(gateway, tokens)["decision_id"]
    before = _arms(gateway, tokens)
    metadata = [("authorization", f"Bearer {tokens.by_scope[FEEDBACK]}")]
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = arbiter_pb2_grpc.DecisionServiceStub(channel)
        for forged in ("", secrets.token_hex(32)):
            request = arbiter_pb2.FeedbackRequest(deployment="bandit", feedback=[
                arbiter_pb2.Feedback(decision_id=target, reward=1.0, feedback_token=forged)])
            with pytest.raises(grpc.RpcError) as refused:
                stub.Feedback(request, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    seldon = {"response": {"meta": {"tags": {"decision_id": target}}}, "reward": 1}
    status, _, raw = http_call("POST", gateway.http_url + "/api/v1.0/feedback", seldon,
                               bearer(tokens.by_scope[FEEDBACK]))
    assert status == 403 and b"feedback_token" in raw
    assert _arms(gateway, tokens) == before


def test_the_decisions_own_client_still_teaches(gateway, tokens) -> None:
    mine = _decide(gateway, tokens)
    before = _arms(gateway, tokens)[mine["routed_model"]]
    status, body = _feedback(gateway, tokens.by_scope[FEEDBACK], [
        {"decision_id": mine["decision_id"], "reward": 1,
         "feedback_token": mine["feedback_token"]}])
    assert status == 200 and body[0]["status"] == "accepted"
    after = _arms(gateway, tokens)[mine["routed_model"]]
    assert after != before
    over_grpc = _decide(gateway, tokens)
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        reply = arbiter_pb2_grpc.DecisionServiceStub(channel).Feedback(
            arbiter_pb2.FeedbackRequest(deployment="bandit", feedback=[arbiter_pb2.Feedback(
                decision_id=over_grpc["decision_id"], reward=0.0,
                feedback_token=over_grpc["feedback_token"])]),
            metadata=[("authorization", f"Bearer {tokens.by_scope[ADMIN]}")], timeout=10)
    assert reply.results[0].status == "accepted"
    seldon_answer = _seldon_predict(gateway, tokens)
    status, _, raw = http_call(
        "POST", gateway.http_url + "/api/v1.0/feedback",
        {"response": seldon_answer, "reward": 1}, bearer(tokens.by_scope[FEEDBACK]))
    assert status == 200 and json.loads(raw)["meta"]["tags"]["feedback"] == "accepted"


def _seldon_predict(gateway: ServerThread, tokens: Tokens) -> dict:
    status, _, raw = http_call("POST", gateway.http_url + "/api/v1.0/predictions",
                               {"data": {"ndarray": [ROW]}}, bearer(tokens.by_scope[INFER]))
    assert status == 200, raw
    answer = json.loads(raw)
    assert len(answer["meta"]["tags"]["feedback_token"]) == 64
    return answer
