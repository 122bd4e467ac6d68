"""Bearer tokens with scopes over both transports: every REST route and every RPC of a
model pod and of a gateway (OIP, Triton extensions, repository, V1, Seldon, decisions)
sent with no token, an unknown token, a token of the wrong scope and the right one.

The gateway calls its pod, which has auth too, with a token of its own (``token_env``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.app import GRPC_SCOPES as GATEWAY_GRPC
from gateway.app import REST_SCOPES as GATEWAY_REST
from gateway.app import build_gateway
from gateway.config import GatewayConfig
from protos import arbiter_pb2, seldon_pb2
from protos import open_inference_pb2 as pb
from protos.errors import UpstreamUnavailableError
from protos.server.auth import (
    ADMIN,
    ANY,
    DECISIONS_READ,
    FEEDBACK,
    GRPC_SCOPES,
    INFER,
    REST_SCOPES,
)
from tests.fakes import (
    CreditLikeWrapper,
    credit_like_settings,
    expected_credit_like,
    http_call,
    model_pod,
)
from tests.security import Tokens, bearer, write_tokens
from tests.servers import ServerThread, local_options

POD_TOKEN_ENV = "ARBITER_TEST_POD_TOKEN"
ROW = [0.5] * 20
INFER_DOC = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": ROW}]}
SELDON_DOC = {"data": {"ndarray": [ROW]}}
WRONG_SCOPE = {INFER: FEEDBACK, FEEDBACK: INFER, DECISIONS_READ: INFER, ADMIN: DECISIONS_READ}
"""For each scope, a token of another scope that must be refused."""


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return write_tokens(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def pod(tokens: Tokens) -> Iterator[ServerThread]:
    """A model pod ``m`` (version 1) whose every route needs a token."""
    options = dataclasses.replace(local_options(), auth=tokens.policy())
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("m"), options)) as s:
        yield s


@pytest.fixture(scope="module")
def repo_pod(tokens: Tokens) -> Iterator[ServerThread]:
    """Another pod ``m`` with auth, for the repository's unload and load."""
    options = dataclasses.replace(local_options(), auth=tokens.policy())
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("m"), options)) as s:
        yield s


@pytest.fixture(scope="module")
def open_pod() -> Iterator[ServerThread]:
    """A model pod ``n`` without auth."""
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("n"))) as s:
        yield s


@pytest.fixture(scope="module")
def gateway(tokens: Tokens, pod: ServerThread, open_pod: ServerThread) -> Iterator[ServerThread]:
    """A gateway with auth: ``credit`` (weighted, all to the authenticated pod) and
    ``cc`` (champion a, challenger b)."""
    os.environ[POD_TOKEN_ENV] = tokens.by_scope[INFER]
    config = GatewayConfig.model_validate({
        "models": {
            "a": {"url": f"grpc://{pod.grpc_target}", "name": "m", "token_env": POD_TOKEN_ENV},
            "h": {"url": f"http://{pod.http_hostport}", "name": "m",
                  "token_env": POD_TOKEN_ENV},
            "b": {"url": f"grpc://{open_pod.grpc_target}", "name": "n"},
        },
        "deployments": {
            "credit": {"router": {"kind": "weighted", "weights": {"a": 1}}},
            "rest": {"router": {"kind": "weighted", "weights": {"h": 1}}},
            "cc": {"router": {"kind": "champion_challenger", "champion": "a",
                              "challengers": ["b"]}},
        },
        "store": {"kind": "memory"},
        "auth": {"tokens_file": str(tokens.path)},
        "feedback": {"secret": "0123456789abcdef-secret"},
    })
    try:
        with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as server:
            yield server
    finally:
        os.environ.pop(POD_TOKEN_ENV, None)


def decide(gateway: ServerThread, tokens: Tokens, deployment: str = "credit") -> dict:
    """A fresh decision's response parameters (made with an admin token)."""
    status, _, body = http_call("POST", f"{gateway.http_url}/v2/models/{deployment}/infer",
                                INFER_DOC, bearer(tokens.by_scope[ADMIN]))
    assert status == 200, body
    return json.loads(body)["parameters"]


# -- REST ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rest:
    """One REST route: where to send what, the scope it needs, the status it answers
    the right token with."""

    server: str
    method: str
    pattern: str
    path: str
    scope: str
    body: Any = None
    ok: int = 200

    def __str__(self) -> str:
        return f"{self.server} {self.method} {self.path}"


def _feedback_body(gw, tokens):
    return {"decision_id": decide(gw, tokens)["decision_id"], "reward": 1}


def _seldon_feedback_body(gw, tokens):
    tags = {"decision_id": decide(gw, tokens)["decision_id"]}
    return {"response": {"meta": {"tags": tags}}, "reward": 1}


V = "/versions/{version}"
M = "/v2/models/{model}"
S = "/seldon/{namespace}/{deployment}"
REST_CASES = [
    Rest("pod", "GET", "/v2", "/v2", INFER),
    Rest("pod", "GET", M, "/v2/models/m", INFER),
    Rest("pod", "GET", M + V, "/v2/models/m/versions/1", INFER),
    Rest("pod", "GET", M + "/ready", "/v2/models/m/ready", INFER),
    Rest("pod", "GET", M + V + "/ready", "/v2/models/m/versions/1/ready", INFER),
    Rest("pod", "POST", M + "/infer", "/v2/models/m/infer", INFER, INFER_DOC),
    Rest("pod", "POST", M + V + "/infer", "/v2/models/m/versions/1/infer", INFER, INFER_DOC),
    Rest("pod", "GET", M + "/config", "/v2/models/m/config", INFER),
    Rest("pod", "GET", M + V + "/config", "/v2/models/m/versions/1/config", INFER),
    Rest("pod", "GET", "/v2/models/stats", "/v2/models/stats", INFER),
    Rest("pod", "GET", M + "/stats", "/v2/models/m/stats", INFER),
    Rest("pod", "GET", M + V + "/stats", "/v2/models/m/versions/1/stats", INFER),
    Rest("pod", "POST", "/v2/repository/index", "/v2/repository/index", INFER, {}),
    Rest("pod", "GET", "/v1/models", "/v1/models", INFER),
    Rest("pod", "GET", "/v1/models/{model}", "/v1/models/m", INFER),
    Rest("pod", "POST", "/v1/models/{model}:predict", "/v1/models/m:predict", INFER,
         {"instances": [ROW]}),
    Rest("pod", "POST", "/v1/models/{model}:explain", "/v1/models/m:explain", INFER,
         {"instances": [ROW]}, ok=501),
    Rest("repo", "POST", "/v2/repository/models/{model}/unload",
         "/v2/repository/models/m/unload", ADMIN, {}),
    Rest("repo", "POST", "/v2/repository/models/{model}/load",
         "/v2/repository/models/m/load", ADMIN, {}),
    Rest("gateway", "POST", M + "/infer", "/v2/models/credit/infer", INFER, INFER_DOC),
    Rest("gateway", "POST", M + "/infer", "/v2/models/rest/infer", INFER, INFER_DOC),
    Rest("gateway", "POST", "/v2/deployments/{deployment}/feedback",
         "/v2/deployments/credit/feedback", FEEDBACK, _feedback_body),
    Rest("gateway", "GET", "/v2/decisions/{decision_id}", "/v2/decisions/{id}",
         DECISIONS_READ),
    Rest("gateway", "GET", "/v2/decisions/{decision_id}/explanation",
         "/v2/decisions/{id}/explanation", DECISIONS_READ, ok=404),  # credit explains nothing
    Rest("gateway", "GET", "/v2/deployments", "/v2/deployments", DECISIONS_READ),
    Rest("gateway", "GET", "/v2/deployments/{deployment}", "/v2/deployments/cc",
         DECISIONS_READ),
    Rest("gateway", "GET", "/v2/deployments/{deployment}/fairness",
         "/v2/deployments/cc/fairness", DECISIONS_READ, ok=404),  # cc has no monitoring
    Rest("gateway", "POST", "/v2/deployments/{deployment}/promote",
         "/v2/deployments/cc/promote", ADMIN, {"model": "b"}),
    *[Rest("gateway", "POST", f"{prefix}/api/{version}/predictions",
           f"{prefix.format(namespace='ns', deployment='credit')}/api/{version}/predictions",
           INFER, SELDON_DOC, ok=200 if prefix else 400)  # unprefixed: 3 deployments
      for prefix in ("", S) for version in ("v1.0", "v0.1")],
    *[Rest("gateway", "POST", f"{prefix}/api/{version}/feedback",
           f"{prefix.format(namespace='ns', deployment='credit')}/api/{version}/feedback",
           FEEDBACK, _seldon_feedback_body, ok=200 if prefix else 400)
      for prefix in ("", S) for version in ("v1.0", "v0.1")],
]


def _send(server: ServerThread, case: Rest, token: str | None, body: Any, path: str):
    return http_call(case.method, server.http_url + path, body, bearer(token))


@pytest.mark.parametrize("case", REST_CASES, ids=str)
def test_rest_route_needs_its_scope(case: Rest, tokens: Tokens, pod, repo_pod,
                                    gateway) -> None:
    server = {"pod": pod, "repo": repo_pod, "gateway": gateway}[case.server]
    path = case.path.replace("{id}", decide(gateway, tokens)["decision_id"])
    body = case.body(gateway, tokens) if callable(case.body) else case.body
    attempts = [(None, 401), ("not-a-known-token", 401),
                (tokens.by_scope[WRONG_SCOPE[case.scope]], 403)]
    for token, expected in attempts:
        status, _, raw = _send(server, case, token, body, path)
        assert status == expected, (token, raw)
        assert "error" in json.loads(raw)
    status, _, raw = _send(server, case, tokens.by_scope[case.scope], body, path)
    assert status == case.ok, raw
    if case.scope != ADMIN:  # admin holds every scope
        status, _, raw = _send(server, case, tokens.by_scope[ADMIN],
                               _fresh(case, gateway, tokens), path)
        assert status not in (401, 403), raw


def _fresh(case: Rest, gateway, tokens):
    return case.body(gateway, tokens) if callable(case.body) else case.body


def test_every_rest_route_has_a_scope_and_a_case(pod, gateway) -> None:
    scopes = {**REST_SCOPES, **GATEWAY_REST}
    for server in (pod, gateway):
        for route in server.server.app.router.routes():
            if route.method == "HEAD":
                continue
            assert (route.method, route.resource.canonical) in scopes, route
    covered = {(c.method, c.pattern) for c in REST_CASES}
    assert {key for key, scope in scopes.items() if scope != ANY} == covered


def test_health_and_metrics_are_open_by_default(tokens, pod) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert http_call("GET", pod.http_url + path)[0] == 200
    assert http_call("GET", pod.http_url + "/nowhere")[0] == 401
    assert http_call("GET", pod.http_url + "/nowhere", None, bearer(tokens.by_scope[INFER]))[0] \
        == 404


def test_protected_metrics_need_a_token_of_any_scope(tokens) -> None:
    policy = tokens.policy(protect_metrics=True)
    options = dataclasses.replace(local_options(), auth=policy)
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("q"), options)) as s:
        assert http_call("GET", s.http_url + "/metrics")[0] == 401
        assert http_call("GET", s.http_url + "/v2/health/ready")[0] == 200
        for token in tokens.by_scope.values():
            assert http_call("GET", s.http_url + "/metrics", None, bearer(token))[0] == 200


def test_only_admin_sees_upstream_urls(tokens, gateway, pod) -> None:
    def state(scope: str) -> dict:
        status, _, raw = http_call("GET", gateway.http_url + "/v2/deployments", None,
                                   bearer(tokens.by_scope[scope]))
        assert status == 200
        return json.loads(raw)

    assert state(DECISIONS_READ)["credit"]["models"] == {"a": {"name": "m"}}
    assert state(ADMIN)["credit"]["models"] == {
        "a": {"name": "m", "url": f"grpc://{pod.grpc_target}"}}
    reader = json.loads(http_call("GET", gateway.http_url + "/v2/deployments/credit", None,
                                  bearer(tokens.by_scope[DECISIONS_READ]))[2])
    assert "url" not in reader["models"]["a"] and pod.grpc_target not in json.dumps(reader)


def test_server_without_auth_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="arbiter.server"), \
            ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("w"))) as s:
        assert http_call("POST", s.http_url + "/v2/models/w/infer", INFER_DOC)[0] == 200
    warnings = [r for r in caplog.records if "auth is off" in r.getMessage()]
    assert len(warnings) == 1


# -- gRPC ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rpc:
    """One RPC: its request (or a function making one), response type, scope, and the
    code it answers the right token with."""

    server: str
    method: str
    request: Any
    response: Any
    scope: str
    ok: grpc.StatusCode = grpc.StatusCode.OK

    def __str__(self) -> str:
        return f"{self.server} {self.method.rsplit('/', 1)[1]}"


def _infer_pb(model: str) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32",
                                                   shape=[1, 20])
    tensor.contents.fp32_contents.extend(ROW)
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


def _decision_feedback(gw, tokens):
    item = arbiter_pb2.Feedback(decision_id=decide(gw, tokens)["decision_id"], reward=1.0)
    return arbiter_pb2.FeedbackRequest(deployment="credit", feedback=[item])


def _get_decision(gw, tokens):
    return arbiter_pb2.GetDecisionRequest(decision_id=decide(gw, tokens)["decision_id"])


def _seldon_predict(gw, tokens):
    message = seldon_pb2.SeldonMessage()
    message.data.ndarray.append(ROW)
    return message


def _seldon_feedback(gw, tokens):
    message = seldon_pb2.Feedback(reward=1.0)
    message.response.meta.tags["decision_id"].string_value = decide(gw, tokens)["decision_id"]
    return message


OIP = "/inference.GRPCInferenceService/"
RPC_CASES = [
    Rpc("pod", OIP + "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse,
        INFER),
    Rpc("pod", OIP + "ModelMetadata", pb.ModelMetadataRequest(name="m"),
        pb.ModelMetadataResponse, INFER),
    Rpc("pod", OIP + "ModelReady", pb.ModelReadyRequest(name="m"), pb.ModelReadyResponse,
        INFER),
    Rpc("pod", OIP + "ModelInfer", _infer_pb("m"), pb.ModelInferResponse, INFER),
    Rpc("pod", OIP + "ModelConfig", pb.ModelConfigRequest(name="m"), pb.ModelConfigResponse,
        INFER),
    Rpc("pod", OIP + "ModelStatistics", pb.ModelStatisticsRequest(name="m"),
        pb.ModelStatisticsResponse, INFER),
    Rpc("pod", OIP + "RepositoryIndex", pb.RepositoryIndexRequest(),
        pb.RepositoryIndexResponse, INFER),
    Rpc("repo", OIP + "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="m"),
        pb.RepositoryModelUnloadResponse, ADMIN),
    Rpc("repo", OIP + "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="m"),
        pb.RepositoryModelLoadResponse, ADMIN),
    Rpc("gateway", OIP + "ModelInfer", _infer_pb("credit"), pb.ModelInferResponse, INFER),
    Rpc("gateway", "/arbiter.DecisionService/Feedback", _decision_feedback,
        arbiter_pb2.FeedbackResponse, FEEDBACK),
    Rpc("gateway", "/arbiter.DecisionService/GetDecision", _get_decision,
        arbiter_pb2.DecisionRecord, DECISIONS_READ),
    Rpc("gateway", "/arbiter.DecisionService/GetExplanation", _get_decision,
        arbiter_pb2.ExplanationRecord, DECISIONS_READ,
        ok=grpc.StatusCode.NOT_FOUND),  # credit explains nothing
    Rpc("gateway", "/seldon.protos.Seldon/Predict", _seldon_predict, seldon_pb2.SeldonMessage,
        INFER),
    Rpc("gateway", "/seldon.protos.Seldon/SendFeedback", _seldon_feedback,
        seldon_pb2.SeldonMessage, FEEDBACK),
]


def _call(target: str, case: Rpc, request: Any, token: str | None) -> grpc.StatusCode:
    metadata = [("seldon", "credit")] + ([("authorization", f"Bearer {token}")] if token else [])
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(case.method, request_serializer=type(request).SerializeToString,
                                   response_deserializer=case.response.FromString)
        try:
            call(request, metadata=metadata, timeout=20)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("case", RPC_CASES, ids=str)
def test_rpc_needs_its_scope(case: Rpc, tokens: Tokens, pod, repo_pod, gateway) -> None:
    target = {"pod": pod, "repo": repo_pod, "gateway": gateway}[case.server].grpc_target
    request = case.request(gateway, tokens) if callable(case.request) else case.request
    attempts = [(None, grpc.StatusCode.UNAUTHENTICATED),
                ("not-a-known-token", grpc.StatusCode.UNAUTHENTICATED),
                (tokens.by_scope[WRONG_SCOPE[case.scope]], grpc.StatusCode.PERMISSION_DENIED)]
    for token, expected in attempts:
        assert _call(target, case, request, token) == expected, token
    assert _call(target, case, request, tokens.by_scope[case.scope]) == case.ok


def test_every_rpc_has_a_scope_and_a_case() -> None:
    from protos import arbiter_pb2 as a
    from protos import open_inference_pb2 as o
    from protos import seldon_pb2 as s

    scopes = {**GRPC_SCOPES, **GATEWAY_GRPC}
    methods = {f"/{service.full_name}/{m.name}"
               for module in (a, o, s) for service in module.DESCRIPTOR.services_by_name.values()
               for m in service.methods}
    assert methods == set(scopes)
    assert {c.method for c in RPC_CASES} == {m for m, scope in scopes.items() if scope != ANY}


def test_grpc_health_is_open(pod) -> None:
    for method, request, reply in (("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse),
                                   ("ServerReady", pb.ServerReadyRequest(),
                                    pb.ServerReadyResponse)):
        assert _call(pod.grpc_target, Rpc("pod", OIP + method, request, reply, ANY),
                     request, None) == grpc.StatusCode.OK


# -- real clients ----------------------------------------------------------------------

def test_tritonclient_with_tokens(tokens: Tokens, pod, gateway) -> None:
    x = np.full((1, 20), 0.5, np.float32)
    expected = expected_credit_like(x)["probabilities"]
    for server, model in ((pod, "m"), (gateway, "credit")):
        http = httpclient.InferenceServerClient(server.http_hostport)
        tensor = httpclient.InferInput("input", [1, 20], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="authentication required"):
            http.infer(model, [tensor])
        result = http.infer(model, [tensor], headers=bearer(tokens.by_scope[INFER]))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-6)
        rpc = grpcclient.InferenceServerClient(server.grpc_target)
        gtensor = grpcclient.InferInput("input", [1, 20], "FP32")
        gtensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="lacks the scope 'infer'"):
            rpc.infer(model, [gtensor], headers={"authorization":
                                                 f"Bearer {tokens.by_scope[FEEDBACK]}"})
        result = rpc.infer(model, [gtensor], headers={"authorization":
                                                      f"Bearer {tokens.by_scope[INFER]}"})
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-6)


def test_gateway_without_the_pod_token_is_refused_by_the_pod(tokens, pod) -> None:
    config = GatewayConfig.model_validate({
        "models": {"a": {"url": f"http://{pod.http_hostport}", "name": "m"}},
        "deployments": {"credit": {"router": {"kind": "weighted", "weights": {"a": 1}}}},
        "store": {"kind": "memory"},
    })
    _, server = build_gateway(config, local_options(), 0.5)

    async def start() -> None:
        try:
            await server.start()
        finally:
            await server.stop()

    with pytest.raises(UpstreamUnavailableError, match="refused the gateway's credentials"):
        asyncio.run(start())


