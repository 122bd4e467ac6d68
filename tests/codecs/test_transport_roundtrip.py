"""Every datatype through a real server and real clients: tritonclient HTTP (binary and
JSON) and gRPC, plus raw HTTP for the cases a client library will not send."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.codecs import binary
from protos.protocol import TensorMetadata
from protos.registry import ModelRegistry
from protos.server.app import Server
from tests.codecs.samples import JSON_SAMPLES, SAMPLES, assert_same
from tests.fakes import EchoTarget
from tests.servers import ServerThread, local_options


@pytest.fixture(scope="module")
def echo() -> Iterator[ServerThread]:
    """A server whose ``echo`` model answers its inputs back (declares x FP32 [-1, 3])."""
    target = EchoTarget("echo", [TensorMetadata("x", "FP32", [-1, 3])])
    with ServerThread(lambda: Server(ModelRegistry([target]), local_options())) as server:
        yield server


def _post(url: str, body: bytes, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _strict_json(body: bytes):
    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(body, parse_constant=reject)


@pytest.mark.parametrize("binary_data", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_tritonclient_http_round_trip(echo: ServerThread, datatype: str, binary_data: bool):
    array = (SAMPLES if binary_data else JSON_SAMPLES)[datatype]
    if not binary_data and array.dtype.kind == "f":
        array = np.nan_to_num(array, nan=0.5, posinf=2.0, neginf=-2.0)  # stdlib json writes NaN
    client = httpclient.InferenceServerClient(echo.http_hostport)
    try:
        tensor = httpclient.InferInput("x", list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary_data)
        out = httpclient.InferRequestedOutput("x", binary_data=binary_data)
        result = client.infer("echo", [tensor], outputs=[out], request_id="r-1",
                              parameters={"tag": "t"})
    finally:
        client.close()
    got = result.as_numpy("x")
    if datatype == "BYTES" and not binary_data:
        got = np.array([v.encode() if isinstance(v, str) else v for v in got.ravel()],
                       dtype=object).reshape(got.shape)
    assert_same(got, array)
    response = result.get_response()
    assert response["id"] == "r-1"
    assert response["parameters"] == {"tag": "t"}


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_tritonclient_grpc_round_trip(echo: ServerThread, datatype: str):
    array = SAMPLES[datatype]
    client = grpcclient.InferenceServerClient(echo.grpc_target)
    try:
        tensor = grpcclient.InferInput("x", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        result = client.infer("echo", [tensor], request_id="r-2", parameters={"tag": "t"})
    finally:
        client.close()
    assert_same(result.as_numpy("x"), array)
    response = result.get_response()
    assert response.id == "r-2"
    assert response.parameters["tag"].string_param == "t"


def test_non_finite_floats_travel_as_valid_json(echo: ServerThread):
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                       "data": [[1.5, "NaN", "Infinity", "-Infinity"]]}]}
    status, headers, body = _post(echo.http_url + "/v2/models/echo/infer",
                                  json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    out = _strict_json(body)["outputs"][0]
    assert out["data"] == [1.5, "NaN", "Infinity", "-Infinity"]
    assert out["shape"] == [1, 4]


def test_bare_nan_literal_is_malformed_json(echo: ServerThread):
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[NaN]}]}'
    status, _, reply = _post(echo.http_url + "/v2/models/echo/infer", body)
    assert status == 400
    assert "error" in _strict_json(reply)


def test_raw_binary_request(echo: ServerThread):
    rows = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    status, headers, body = _post(
        echo.http_url + "/v2/models/echo/infer", rows.tobytes(),
        {binary.HEADER: "0", "Content-Type": "application/octet-stream"},
    )
    assert status == 200
    length = int(headers[binary.HEADER])
    response = binary.response_from_binary(body, length)
    np.testing.assert_array_equal(response.output("x").data, rows)


def test_bf16_is_501_over_rest(echo: ServerThread):
    doc = {"inputs": [{"name": "x", "datatype": "BF16", "shape": [1], "data": [1.0]}]}
    status, _, body = _post(echo.http_url + "/v2/models/echo/infer", json.dumps(doc).encode())
    assert status == 501
    assert "BF16" in _strict_json(body)["error"]


def _grpc_infer(echo: ServerThread, message) -> grpc.RpcError:
    with grpc.insecure_channel(echo.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(message, timeout=10)
    return info.value


def test_bf16_is_unimplemented_over_grpc(echo: ServerThread):
    message = pb.ModelInferRequest(model_name="echo", raw_input_contents=[b"\x80\x3f"])
    message.inputs.add(name="x", datatype="BF16", shape=[1])
    assert _grpc_infer(echo, message).code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_raw_and_contents_mixed_is_invalid(echo: ServerThread):
    message = pb.ModelInferRequest(model_name="echo", raw_input_contents=[b"\x00" * 4])
    message.inputs.add(name="x", datatype="FP32", shape=[1])
    message.inputs.add(name="y", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    error = _grpc_infer(echo, message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "mixed" in error.details()


def test_grpc_fp16_in_typed_contents_is_invalid(echo: ServerThread):
    message = pb.ModelInferRequest(model_name="echo")
    message.inputs.add(name="x", datatype="FP16", shape=[1]).contents.fp32_contents.append(1)
    assert _grpc_infer(echo, message).code() == grpc.StatusCode.INVALID_ARGUMENT
