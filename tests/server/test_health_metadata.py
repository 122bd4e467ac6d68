"""Health, server and model metadata, versioned paths, ids and parameters, over REST
(raw HTTP and tritonclient) and gRPC."""

from __future__ import annotations

import json
import re
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from tests.fakes import GatedLoadWrapper, credit_like_settings, http_call, model_pod
from tests.servers import ServerThread


def _json(body: bytes):
    return json.loads(body)


def test_health_endpoints_answer_200_with_json(lr_pod: ServerThread) -> None:
    base = lr_pod.http_url
    assert http_call("GET", base + "/v2/health/live")[::2] == (200, b'{"live":true}')
    status, headers, body = http_call("GET", base + "/v2/health/ready")
    assert status == 200 and _json(body) == {"ready": True}
    assert headers["Content-Type"].startswith("application/json")
    for path in ("/v2/models/credit-lr/ready", "/v2/models/credit-lr/versions/1/ready"):
        status, _, body = http_call("GET", base + path)
        assert status == 200 and _json(body) == {"name": "credit-lr", "ready": True}


def test_health_over_tritonclient(lr_pod: ServerThread) -> None:
    http = httpclient.InferenceServerClient(lr_pod.http_hostport)
    rpc = grpcclient.InferenceServerClient(lr_pod.grpc_target)
    try:
        for client in (http, rpc):
            assert client.is_server_live()
            assert client.is_server_ready()
            assert client.is_model_ready("credit-lr")
            assert client.is_model_ready("credit-lr", "1")
    finally:
        http.close()
        rpc.close()


def test_server_metadata(lr_pod: ServerThread) -> None:
    status, _, body = http_call("GET", lr_pod.http_url + "/v2")
    doc = _json(body)
    assert status == 200
    assert doc["name"] == "arbiter" and isinstance(doc["version"], str)
    assert "binary_tensor_data" in doc["extensions"]
    rpc = grpcclient.InferenceServerClient(lr_pod.grpc_target)
    try:
        meta = rpc.get_server_metadata()
    finally:
        rpc.close()
    assert (meta.name, meta.version, list(meta.extensions)) == (
        doc["name"], doc["version"], doc["extensions"])


@pytest.mark.parametrize("path", ["/v2/models/credit-gbm", "/v2/models/credit-gbm/versions/1"])
def test_model_metadata_rest(gbm_pod: ServerThread, path: str) -> None:
    status, _, body = http_call("GET", gbm_pod.http_url + path)
    doc = _json(body)
    assert status == 200
    assert doc["name"] == "credit-gbm" and doc["versions"] == ["1"]
    assert doc["platform"] == "onnx_onnxv1"
    assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 20]}]
    assert doc["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]


def test_model_metadata_grpc_never_sets_field_6(gbm_pod: ServerThread) -> None:
    with grpc.insecure_channel(gbm_pod.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelMetadata(pb.ModelMetadataRequest(name="credit-gbm", version="1"))
    assert reply.name == "credit-gbm" and list(reply.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.inputs] == [
        ("input", "FP32", [-1, 20])]
    assert 6 not in {field.number for field, _ in reply.ListFields()}


@pytest.mark.parametrize("path", [
    "/v2/models/nope", "/v2/models/credit-lr/versions/2", "/v2/models/nope/ready",
    "/v2/models/credit-lr/versions/2/ready",
])
def test_unknown_model_or_version_is_404_over_rest(lr_pod: ServerThread, path: str) -> None:
    status, _, body = http_call("GET", lr_pod.http_url + path)
    assert status == 404
    assert isinstance(_json(body)["error"], str)


@pytest.mark.parametrize(("name", "version"), [("nope", ""), ("credit-lr", "2")])
def test_unknown_model_or_version_is_not_found_over_grpc(
    lr_pod: ServerThread, name: str, version: str
) -> None:
    with grpc.insecure_channel(lr_pod.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call, message in (
            (stub.ModelMetadata, pb.ModelMetadataRequest(name=name, version=version)),
            (stub.ModelReady, pb.ModelReadyRequest(name=name, version=version)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(message, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _doc(x: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}], **extra}


@pytest.mark.parametrize("path", ["/v2/models/credit-lr/infer",
                                  "/v2/models/credit-lr/versions/1/infer"])
def test_request_id_is_echoed_and_parameters_pass_through(
    lr_pod: ServerThread, holdout_x, path: str
) -> None:
    params = {"s": "x", "i": 3, "f": 0.5, "b": False}
    status, _, body = http_call(
        "POST", lr_pod.http_url + path, _doc(holdout_x[:2], id="my-id", parameters=params)
    )
    doc = _json(body)
    assert status == 200, doc
    assert doc["id"] == "my-id"
    assert doc["parameters"] == params
    assert doc["model_name"] == "credit-lr" and doc["model_version"] == "1"


def test_request_id_is_generated_when_absent(lr_pod: ServerThread, holdout_x) -> None:
    ids = set()
    for _ in range(2):
        status, _, body = http_call("POST", lr_pod.http_url + "/v2/models/credit-lr/infer",
                                    _doc(holdout_x[:1]))
        assert status == 200
        ids.add(_json(body)["id"])
    assert len(ids) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_request_id_and_parameters_over_grpc(lr_pod: ServerThread, holdout_x) -> None:
    client = grpcclient.InferenceServerClient(lr_pod.grpc_target)
    try:
        tensor = grpcclient.InferInput("input", [1, 20], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(holdout_x[:1]))
        echoed = client.infer("credit-lr", [tensor], request_id="g-1",
                              parameters={"s": "x", "i": 3, "b": True}).get_response()
        generated = client.infer("credit-lr", [tensor]).get_response()
    finally:
        client.close()
    assert echoed.id == "g-1"
    params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in
              echoed.parameters.items()}
    assert params == {"s": "x", "i": 3, "b": True}
    assert re.fullmatch(r"[0-9a-f]{32}", generated.id)


def test_ready_is_503_while_the_model_loads() -> None:
    """Startup runs the load hook before readiness: until the load finishes, the
    server is live but not ready, and inference is 503 with Retry-After."""
    wrapper = GatedLoadWrapper()
    factory = model_pod(wrapper, credit_like_settings("gated"))
    created = []
    holder = ServerThread(lambda: created.append(factory()) or created[-1])
    entered = threading.Thread(target=holder.__enter__, daemon=True)
    entered.start()
    try:
        deadline = time.monotonic() + 20
        while not (created and created[0].http_port > 0):
            assert time.monotonic() < deadline, "server never bound its port"
            time.sleep(0.02)
        base = created[0].http_url
        assert http_call("GET", base + "/v2/health/live")[0] == 200
        status, _, body = http_call("GET", base + "/v2/health/ready")
        assert (status, _json(body)) == (503, {"ready": False})
        status, _, body = http_call("GET", base + "/v2/models/gated/ready")
        assert (status, _json(body)) == (503, {"name": "gated", "ready": False})
        status, headers, body = http_call(
            "POST", base + "/v2/models/gated/infer", _doc(np.zeros((1, 20), np.float32)))
        assert status == 503 and headers["Retry-After"] == "1" and "error" in _json(body)
        wrapper.gate.set()
        entered.join(20)
        assert http_call("GET", base + "/v2/health/ready")[0] == 200
        status, _, _ = http_call("POST", base + "/v2/models/gated/infer",
                                 _doc(np.zeros((1, 20), np.float32)))
        assert status == 200
    finally:
        wrapper.gate.set()
        entered.join(20)
        holder.__exit__(None, None, None)


def test_tritonclient_reports_not_found(lr_pod: ServerThread) -> None:
    client = httpclient.InferenceServerClient(lr_pod.http_hostport)
    try:
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("nope")
    finally:
        client.close()
    assert "404" in str(info.value.status())
