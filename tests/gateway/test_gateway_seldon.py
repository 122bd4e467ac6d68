"""Seldon Core v1 clients against a real gateway over real pods: predictions in the
documented SeldonMessage forms, feedback that a Thompson router learns from, Seldon's
error shape for bad input, and the gRPC ``seldon.protos.Seldon`` service."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient

from gateway.app import build_gateway
from protos import seldon_pb2, seldon_pb2_grpc
from tests.fakes import http_call
from tests.gateway.conftest import gateway_config
from tests.servers import ServerThread, local_options

NAMES = [f"f{i}" for i in range(20)]


@pytest.fixture(scope="module")
def single(lr_pod, gbm_pod, mlp_pod) -> Iterator[ServerThread]:
    """A gateway with one deployment, ``credit``: Thompson sampling over lr, gbm, mlp."""
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    deployments = {"credit": {"router": {"kind": "thompson", "arms": ["lr", "gbm", "mlp"]},
                              "seed": 11}}
    config = gateway_config(pods, None, deployments)
    with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as server:
        yield server


def _post(server: ServerThread, path: str, body) -> tuple[int, dict, dict]:
    status, headers, raw = http_call("POST", server.http_url + path, body)
    return status, headers, json.loads(raw)


def _lr_labels(lr_pod: ServerThread, x: np.ndarray) -> list[int]:
    client = httpclient.InferenceServerClient(lr_pod.http_hostport)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(np.asarray(x, np.float32))
    return client.infer("credit-lr", [tensor]).as_numpy("label").tolist()


def test_ndarray_prediction_answers_as_seldon_did(gateway, lr_pod, holdout_x) -> None:
    rows = holdout_x[:2].tolist()
    status, headers, doc = _post(gateway, "/seldon/default/plain/api/v1.0/predictions",
                                 {"data": {"names": NAMES, "ndarray": rows}})
    assert status == 200
    assert doc["data"] == {"names": ["label"], "ndarray": _lr_labels(lr_pod, holdout_x[:2])}
    meta = doc["meta"]
    assert meta["routing"] == {"plain": 0}
    assert meta["requestPath"] == {"lr": "credit-lr"}
    assert meta["tags"]["routed_model"] == "lr" and meta["tags"]["router"] == "weighted"
    decision_id = meta["tags"]["decision_id"]
    assert headers["Seldon-Puid"] == meta["puid"]
    record = json.loads(http_call("GET", f"{gateway.http_url}/v2/decisions/{decision_id}")[2])
    assert record["deployment"] == "plain" and record["routed"] == "lr"


def test_tensor_prediction_answers_a_tensor(gateway, lr_pod, holdout_x) -> None:
    x = holdout_x[:3]
    status, _, doc = _post(gateway, "/seldon/default/plain/api/v1.0/predictions", {
        "data": {"names": NAMES, "tensor": {"shape": [3, 20], "values": x.ravel().tolist()}}})
    assert status == 200
    assert doc["data"] == {"names": ["label"],
                           "tensor": {"shape": [3], "values": _lr_labels(lr_pod, x)}}


def test_json_data_rows_answer_json_data(gateway, lr_pod, holdout_x) -> None:
    status, _, doc = _post(gateway, "/seldon/ns/plain/api/v1.0/predictions",
                           {"jsonData": holdout_x[:2].tolist()})
    assert status == 200
    assert doc["jsonData"] == _lr_labels(lr_pod, holdout_x[:2]) and "data" not in doc


def test_routing_index_names_the_routed_arm(gateway, holdout_x) -> None:
    seen = set()
    for _ in range(12):
        _, _, doc = _post(gateway, "/seldon/ns/eg/api/v1.0/predictions",
                          {"data": {"ndarray": holdout_x[:1].tolist()}})
        routed = doc["meta"]["tags"]["routed_model"]
        assert doc["meta"]["routing"] == {"eg": ["lr", "gbm"].index(routed)}
        seen.add(routed)
    assert seen == {"lr", "gbm"}  # epsilon 0.5 explores both arms


def test_puid_and_tags_are_carried(gateway, holdout_x) -> None:
    _, headers, doc = _post(gateway, "/seldon/ns/plain/api/v1.0/predictions", {
        "meta": {"puid": "seldon-puid-1", "tags": {"team": "risk"}},
        "data": {"ndarray": holdout_x[:1].tolist()}})
    assert doc["meta"]["puid"] == headers["Seldon-Puid"] == "seldon-puid-1"
    assert doc["meta"]["tags"]["team"] == "risk"


def test_the_only_deployment_answers_the_plain_path(single, holdout_x) -> None:
    status, _, doc = _post(single, "/api/v1.0/predictions",
                           {"data": {"ndarray": holdout_x[:1].tolist()}})
    assert status == 200 and len(doc["data"]["ndarray"]) == 1
    assert set(doc["meta"]["routing"]) == {"credit"}


def test_several_deployments_need_the_namespaced_path(gateway, holdout_x) -> None:
    status, _, doc = _post(gateway, "/api/v1.0/predictions",
                           {"data": {"ndarray": holdout_x[:1].tolist()}})
    assert status == 400
    info = doc["status"]["info"]
    assert "/seldon/{namespace}/{deployment}/api/v1.0/predictions" in info and "plain" in info


def test_feedback_with_reward_reaches_the_decision(gateway, holdout_x) -> None:
    request = {"data": {"ndarray": holdout_x[:1].tolist()}}
    _, _, response = _post(gateway, "/seldon/ns/eg/api/v1.0/predictions", request)
    routed = response["meta"]["tags"]["routed_model"]
    status, _, doc = _post(gateway, "/seldon/ns/eg/api/v1.0/feedback",
                           {"request": request, "response": response, "reward": 1.0})
    assert status == 200
    assert doc["status"]["status"] == "SUCCESS"
    tags = doc["meta"]["tags"]
    assert (tags["feedback"], tags["used"], tags["rewards"]) == ("accepted", "reward",
                                                               {routed: 1.0})
    _, _, again = _post(gateway, "/seldon/ns/eg/api/v1.0/feedback",
                        {"request": request, "response": response, "reward": 1.0})
    assert again["meta"]["tags"]["feedback"] == "duplicate"


def test_feedback_with_truth_scores_the_label(gateway, lr_pod, holdout_x) -> None:
    request = {"data": {"ndarray": holdout_x[:1].tolist()}}
    _, _, response = _post(gateway, "/seldon/ns/plain/api/v1.0/predictions", request)
    label = _lr_labels(lr_pod, holdout_x[:1])[0]
    status, _, doc = _post(gateway, "/seldon/ns/plain/api/v1.0/feedback", {
        "request": request, "response": response, "reward": 0.0,
        "truth": {"data": {"ndarray": [[1 - label]]}}})
    assert status == 200
    assert doc["meta"]["tags"]["used"] == "truth"
    assert doc["meta"]["tags"]["rewards"] == {"lr": 0.0}


def test_thompson_learns_from_seldon_feedback(single, holdout_x) -> None:
    def arms() -> dict:
        return json.loads(http_call("GET", f"{single.http_url}/v2/deployments/credit")[2])[
            "router"]["arms"]

    before = arms()
    sent = {arm: [0, 0.0] for arm in ("lr", "gbm", "mlp")}
    routed_late = []
    for i in range(80):
        request = {"data": {"names": NAMES, "ndarray": holdout_x[i % 50: i % 50 + 1].tolist()}}
        status, _, response = _post(single, "/api/v1.0/predictions", request)
        assert status == 200
        routed = response["meta"]["tags"]["routed_model"]
        reward = 1.0 if routed == "gbm" else 0.0
        status, _, _ = _post(single, "/api/v1.0/feedback",
                             {"request": request, "response": response, "reward": reward})
        assert status == 200
        sent[routed][0] += 1
        sent[routed][1] += reward
        if i >= 60:
            routed_late.append(routed)
    after = arms()
    for arm, (n, total) in sent.items():
        assert after[arm]["n"] - before[arm]["n"] == n, arm
        assert after[arm]["reward_sum"] - before[arm]["reward_sum"] == pytest.approx(total), arm
    assert routed_late.count("gbm") >= 15  # of the last 20, with seed 11


@pytest.mark.parametrize(("body", "words"), [
    ({"data": {"ndarray": [[0.5] * 19 + ["a"]]}}, ["data.ndarray[0][19]", "'a'"]),
    ({"data": {"ndarray": [[0.5] * 20, [0.5] * 19]}}, ["ragged", "data.ndarray[1]", "19"]),
    ({"data": {"ndarray": [[0.5] * 20, 0.5]}}, ["mixes rows and values", "data.ndarray[1]"]),
    ({"data": {"ndarray": [[True] + [0.5] * 19]}}, ["data.ndarray[0][0]", "boolean"]),
    ({"data": {"tensor": {"shape": [1, 20], "values": [0.5] * 19}}}, ["needs 20 values"]),
    ({"data": {"tensor": {"shape": [1, 20], "values": [0.5] * 19 + ["x"]}}},
     ["data.tensor.values[19]", "'x'"]),
    ({"data": {"names": ["a", "b"], "ndarray": [[0.5] * 20]}}, ["2 names for 20 columns"]),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": [0] * 20}]},
     ["expects", "SeldonMessage", "/v2/models/{deployment}/infer"]),
    ({"strData": "hello"}, ["strData", "FP32"]),
    ({}, ["exactly one of 'data'"]),
    ([1, 2], ["SeldonMessage JSON object"]),
])
def test_bad_input_is_a_seldon_400(gateway, body, words) -> None:
    status, _, doc = _post(gateway, "/seldon/ns/plain/api/v1.0/predictions", body)
    assert status == 400, doc
    failure = doc["status"]
    assert (failure["code"], failure["reason"], failure["status"]) == (
        400, "INVALID_ARGUMENT", "FAILURE")
    for word in words:
        assert word in failure["info"], (word, failure["info"])


def test_malformed_json_and_unknown_deployment(gateway) -> None:
    status, _, raw = http_call("POST", gateway.http_url + "/seldon/ns/plain/api/v1.0/predictions",
                               b"{not json")
    assert status == 400 and json.loads(raw)["status"]["status"] == "FAILURE"
    status, _, doc = _post(gateway, "/seldon/ns/nope/api/v1.0/predictions",
                           {"data": {"ndarray": [[0.0] * 20]}})
    assert status == 404 and doc["status"]["reason"] == "NOT_FOUND" and "nope" in doc[
        "status"]["info"]


def test_model_failure_keeps_the_seldon_shape(gateway) -> None:
    status, _, doc = _post(gateway, "/seldon/ns/down-http/api/v1.0/predictions",
                           {"data": {"ndarray": [[0.0] * 20]}})
    assert status == 503 and doc["status"]["reason"] == "UNAVAILABLE"


def test_bad_feedback_is_a_seldon_400(gateway, holdout_x) -> None:
    status, _, doc = _post(gateway, "/seldon/ns/eg/api/v1.0/feedback",
                           {"response": {"meta": {}}, "reward": 1})
    assert status == 400 and "response.meta.tags.decision_id" in doc["status"]["info"]
    status, _, doc = _post(gateway, "/seldon/ns/eg/api/v1.0/feedback",
                           {"response": {"meta": {"tags": {"decision_id": "nope"}}},
                            "reward": 1})
    assert status == 404 and doc["status"]["reason"] == "NOT_FOUND"
    _, _, response = _post(gateway, "/seldon/ns/eg/api/v1.0/predictions",
                           {"data": {"ndarray": holdout_x[:1].tolist()}})
    status, _, doc = _post(gateway, "/seldon/ns/eg/api/v1.0/feedback",
                           {"response": response, "reward": 3})
    assert status == 400 and "[0, 1]" in doc["status"]["info"]
    status, _, doc = _post(gateway, "/seldon/ns/eg/api/v1.0/feedback",
                           {"decision_id": "x", "reward": 1})
    assert status == 400 and "/v2/deployments/{deployment}/feedback" in doc["status"]["info"]


def test_seldon_body_on_the_oip_path_is_refused_with_a_pointer(gateway) -> None:
    status, _, raw = http_call("POST", gateway.http_url + "/v2/models/plain/infer",
                               {"data": {"ndarray": [[0.0] * 20]}})
    assert status == 400
    message = json.loads(raw)["error"]
    assert "Open Inference Protocol" in message and "/api/v1.0/predictions" in message


def test_grpc_predict_and_feedback(gateway, lr_pod, holdout_x) -> None:
    x = holdout_x[:2]
    message = seldon_pb2.SeldonMessage()
    message.data.names.extend(NAMES)
    message.data.tensor.shape.extend([2, 20])
    message.data.tensor.values.extend(x.ravel().tolist())
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = seldon_pb2_grpc.SeldonStub(channel)
        reply = stub.Predict(message, metadata=[("seldon", "plain"), ("namespace", "ns")])
        assert list(reply.data.names) == ["label"]
        assert list(reply.data.tensor.shape) == [2]
        assert list(reply.data.tensor.values) == _lr_labels(lr_pod, x)
        assert dict(reply.meta.routing) == {"plain": 0}
        assert dict(reply.meta.requestPath) == {"lr": "credit-lr"}
        decision_id = reply.meta.tags["decision_id"].string_value
        assert decision_id

        feedback = seldon_pb2.Feedback(response=reply, reward=1.0)
        feedback.request.CopyFrom(message)
        answer = stub.SendFeedback(feedback, metadata=[("seldon", "plain")])
        assert answer.status.status == seldon_pb2.Status.SUCCESS
        assert answer.meta.tags["feedback"].string_value == "accepted"

        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(message)  # several deployments: which one?
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = seldon_pb2.SeldonMessage(strData="text")
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(bad, metadata=[("seldon", "plain")])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(message, metadata=[("seldon", "nope")])
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_server_metadata_advertises_seldon(gateway) -> None:
    doc = json.loads(http_call("GET", gateway.http_url + "/v2")[2])
    assert "seldon_v1" in doc["extensions"]
