"""Inference through a real gateway in front of real pods: every router kind over REST
and gRPC, deployment metadata, decision records, shadows that are slow, failing or
down, unreachable and late models, and the metrics."""

from __future__ import annotations

import statistics
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from tests.fakes import http_call
from tests.gateway.conftest import DEPLOYMENTS, metric_value, rest_infer
from tests.servers import ServerThread

MODEL_NAMES = {"lr": "credit-lr", "gbm": "credit-gbm", "mlp": "credit-mlp"}
ROUTER_KINDS = ["ts", "eg", "ab", "shadow", "cc"]


def _direct(pods: dict[str, ServerThread], key: str, x: np.ndarray) -> dict:
    """The pod's own answer for rows ``x`` (tensor name -> array)."""
    client = grpcclient.InferenceServerClient(pods[key].grpc_target)
    try:
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(x, np.float32))
        result = client.infer(MODEL_NAMES[key], [tensor])
    finally:
        client.close()
    return {n: result.as_numpy(n) for n in ("label", "probabilities")}


@pytest.fixture(scope="module")
def pods(lr_pod, gbm_pod, mlp_pod) -> dict[str, ServerThread]:
    return {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}


def _grpc_with_call(target: str, deployment: str, x: np.ndarray, request_id: str = ""):
    message = pb.ModelInferRequest(model_name=deployment, id=request_id,
                                   raw_input_contents=[np.asarray(x, "<f4").tobytes()])
    message.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply, call = stub.ModelInfer.with_call(message, timeout=10)
        return reply, dict(call.trailing_metadata())


def _params(message) -> dict:
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in message.parameters.items()}


@pytest.mark.parametrize("deployment", ROUTER_KINDS)
def test_rest_inference_through_each_router(gateway, pods, holdout_x, deployment: str):
    x = holdout_x[:3]
    status, headers, doc = rest_infer(gateway.http_url, deployment, x, id=f"rest-{deployment}")
    assert status == 200, doc
    params = doc["parameters"]
    routed = params["routed_model"]
    kind = DEPLOYMENTS[deployment]["router"]["kind"]
    assert doc["id"] == f"rest-{deployment}" != params["decision_id"]
    assert params["propensity"] == pytest.approx(float(headers["x-arbiter-propensity"]))
    assert params["router"] == kind and doc["model_name"] == deployment
    assert headers["x-arbiter-decision-id"] == params["decision_id"]
    assert headers["x-arbiter-routed-model"] == routed
    assert headers["x-arbiter-router"] == kind
    want = _direct(pods, routed, x)
    outputs = {o["name"]: o for o in doc["outputs"]}
    np.testing.assert_array_equal(outputs["label"]["data"], want["label"])
    np.testing.assert_array_equal(np.asarray(outputs["probabilities"]["data"], np.float32),
                                  want["probabilities"].ravel())


@pytest.mark.parametrize("deployment", ROUTER_KINDS)
def test_grpc_inference_through_each_router(gateway, pods, holdout_x, deployment: str):
    x = holdout_x[3:5]
    reply, trailing = _grpc_with_call(gateway.grpc_target, deployment, x)
    params = _params(reply)
    assert reply.id and params["decision_id"] == reply.id
    assert params["router"] == DEPLOYMENTS[deployment]["router"]["kind"]
    assert trailing["x-arbiter-decision-id"] == reply.id
    assert trailing["x-arbiter-routed-model"] == params["routed_model"]
    want = _direct(pods, params["routed_model"], x)
    names = [o.name for o in reply.outputs]
    got = np.frombuffer(reply.raw_output_contents[names.index("probabilities")], "<f4")
    np.testing.assert_array_equal(got, want["probabilities"].ravel())


def test_tritonclient_http_binary_through_the_gateway(gateway, pods, holdout_x):
    x = np.ascontiguousarray(holdout_x[:4])
    client = httpclient.InferenceServerClient(gateway.http_hostport)
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result = client.infer("shadow", [tensor], outputs=[
            httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("probabilities"),
                                  _direct(pods, "lr", x)["probabilities"])
    assert result.get_response()["parameters"]["routed_model"] == "lr"


def test_deployment_metadata_is_the_primarys(gateway, lr_pod):
    status, _, body = http_call("GET", gateway.http_url + "/v2/models/shadow")
    import json

    doc = json.loads(body)
    primary = json.loads(http_call("GET", lr_pod.http_url + "/v2/models/credit-lr")[2])
    assert status == 200 and doc["name"] == "shadow"
    assert (doc["inputs"], doc["outputs"], doc["platform"]) == (
        primary["inputs"], primary["outputs"], primary["platform"])
    client = grpcclient.InferenceServerClient(gateway.grpc_target)
    try:
        meta = client.get_model_metadata("shadow")
    finally:
        client.close()
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in primary["inputs"]]


def _decision(gateway: ServerThread, decision_id: str) -> dict:
    import json

    status, _, body = http_call("GET", f"{gateway.http_url}/v2/decisions/{decision_id}")
    assert status == 200, body
    return json.loads(body)


def _wait_for(fetch, ok, timeout_s: float = 10.0):
    """Call ``fetch()`` until ``ok(value)``; the last value, or None on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def test_decision_record_holds_routed_and_shadow_outputs(gateway, pods, holdout_x):
    x = holdout_x[5:8]
    status, _, doc = rest_infer(gateway.http_url, "shadow", x, parameters={"tag": "t1"})
    assert status == 200
    record = _wait_for(lambda: _decision(gateway, doc["id"]),
                       lambda r: {"gbm", "mlp"} <= set(r["outputs"]))
    assert record, "shadow outputs never recorded"
    assert record["routed"] == "lr" and record["router"] == "shadow"
    assert sorted(record["shadows"]) == ["gbm", "mlp"]
    assert record["parameters"] == {"tag": "t1"}
    assert record["inputs"]["input"]["shape"] == [3, 20]
    np.testing.assert_array_equal(np.asarray(record["inputs"]["input"]["data"], np.float32),
                                  x.ravel())
    client_outputs = {o["name"]: o["data"] for o in doc["outputs"]}
    assert record["outputs"]["lr"]["label"]["data"] == client_outputs["label"]
    np.testing.assert_array_equal(
        np.asarray(record["outputs"]["lr"]["probabilities"]["data"], np.float32),
        np.asarray(client_outputs["probabilities"], np.float32))
    for key in ("gbm", "mlp"):
        want = _direct(pods, key, x)
        assert record["outputs"][key]["label"]["data"] == want["label"].tolist()
        np.testing.assert_array_equal(
            np.asarray(record["outputs"][key]["probabilities"]["data"], np.float32),
            want["probabilities"].ravel())
        assert record["latency_ms"][key] > 0
    assert record["errors"] == {} and record["feedback"] is None


def test_unknown_decision_is_404(gateway):
    status, _, _ = http_call("GET", gateway.http_url + "/v2/decisions/nope")
    assert status == 404


def test_weighted_100_0_never_routes_to_the_zero_arm(gateway, holdout_x):
    client = grpcclient.InferenceServerClient(gateway.grpc_target)
    routed = []
    try:
        tensor = grpcclient.InferInput("input", [1, 20], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(holdout_x[:1]))
        for _ in range(200):
            response = client.infer("ab", [tensor]).get_response()
            routed.append(response.parameters["routed_model"].string_param)
    finally:
        client.close()
    assert routed == ["lr"] * 200
    text = http_call("GET", gateway.http_url + "/metrics")[2].decode()
    assert metric_value(text, "arbiter_route_decisions_total", deployment="ab", arm="gbm") == 0
    assert metric_value(text, "arbiter_route_decisions_total", deployment="ab",
                        router="weighted", arm="lr") >= 200


def _timed_grpc(gateway: ServerThread, deployment: str, x: np.ndarray, n: int):
    client = grpcclient.InferenceServerClient(gateway.grpc_target)
    latencies, answers = [], []
    try:
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(x))
        client.infer(deployment, [tensor])  # warm the path
        for _ in range(n):
            start = time.perf_counter()
            result = client.infer(deployment, [tensor])
            latencies.append(time.perf_counter() - start)
            answers.append((result.as_numpy("label"), result.as_numpy("probabilities")))
    finally:
        client.close()
    return statistics.median(latencies), answers


@pytest.mark.parametrize(("deployment", "shadow", "outcome"), [
    ("shadow-slow", "slow", "shed"),
    ("shadow-bad", "bad", "error"),
    ("shadow-down", "down_grpc", "error"),
])
def test_bad_shadow_leaves_the_primary_untouched(gateway, holdout_x, deployment, shadow,
                                                 outcome):
    x = holdout_x[10:12]
    base_median, base_answers = _timed_grpc(gateway, "plain", x, 15)
    median, answers = _timed_grpc(gateway, deployment, x, 15)
    for (label, probabilities), (base_label, base_probabilities) in zip(
            answers, base_answers, strict=True):
        np.testing.assert_array_equal(label, base_label)
        np.testing.assert_array_equal(probabilities, base_probabilities)
    assert median < 2 * base_median + 0.005, (median, base_median)
    text = _wait_for(lambda: http_call("GET", gateway.http_url + "/metrics")[2].decode(),
                     lambda t: metric_value(t, "arbiter_shadow_requests_total",
                                            deployment=deployment, model=shadow,
                                            outcome=outcome) > 0)
    assert text, f"no {outcome} count for {shadow}"


def test_failed_shadow_is_noted_on_the_decision(gateway, holdout_x):
    status, _, doc = rest_infer(gateway.http_url, "shadow-bad", holdout_x[:1])
    assert status == 200 and doc["parameters"]["routed_model"] == "lr"
    record = _wait_for(lambda: _decision(gateway, doc["id"]), lambda r: r["errors"])
    assert record and "bad" in record["errors"]
    assert "bad" not in record["outputs"]


@pytest.mark.parametrize(("deployment", "status", "code"), [
    ("down-grpc", 503, grpc.StatusCode.UNAVAILABLE),
    ("down-http", 503, grpc.StatusCode.UNAVAILABLE),
    ("late-grpc", 504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ("late-http", 504, grpc.StatusCode.DEADLINE_EXCEEDED),
])
def test_unreachable_or_late_routed_model(gateway, holdout_x, deployment, status, code):
    got, headers, doc = rest_infer(gateway.http_url, deployment, holdout_x[:1])
    assert got == status and isinstance(doc["error"], str)
    if status == 503:
        assert headers["Retry-After"] == "1"
    with pytest.raises(grpc.RpcError) as info:
        _grpc_with_call(gateway.grpc_target, deployment, holdout_x[:1])
    assert info.value.code() == code


def test_unknown_deployment_is_404(gateway, holdout_x):
    status, _, doc = rest_infer(gateway.http_url, "nope", holdout_x[:1])
    assert status == 404 and "error" in doc
    with pytest.raises(grpc.RpcError) as info:
        _grpc_with_call(gateway.grpc_target, "nope", holdout_x[:1])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_input_through_the_gateway_keeps_the_pods_status(gateway):
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 19],
                       "data": [0.0] * 19}]}
    status, _, body = http_call("POST", gateway.http_url + "/v2/models/plain/infer", doc)
    assert status == 400 and b"error" in body


def test_metrics_are_exported(gateway, holdout_x):
    rest_infer(gateway.http_url, "plain", holdout_x[:1])
    status, headers, body = http_call("GET", gateway.http_url + "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert metric_value(text, "arbiter_requests_total", model="plain", protocol="rest",
                        code="200") >= 1
    assert metric_value(text, "arbiter_route_decisions_total", deployment="plain",
                        router="weighted", arm="lr") >= 1
    assert "# TYPE arbiter_feedback_total counter" in text or "arbiter_feedback" in text
