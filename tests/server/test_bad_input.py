"""Bad input over both transports gets the status of docs/protocol.md ("Our decisions")
and, over REST, an ``{"error": str}`` body; the server keeps serving afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.server.app import ServerOptions
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.servers import ServerThread

MODEL = "credit-gbm"
ROW = [0.5] * 20


def _tensor(name="input", datatype="FP32", shape=(1, 20), data=None) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape),
            "data": ROW if data is None else data}


def _pb(name="input", datatype="FP32", shape=(1, 20), raw: bytes | None = None,
        model=MODEL, version="", outputs=()) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    message.inputs.add(name=name, datatype=datatype, shape=list(shape))
    message.raw_input_contents.append(
        np.asarray(ROW, np.float32).tobytes() if raw is None else raw)
    for out in outputs:
        message.outputs.add(name=out)
    return message


class Case:
    """One bad input: a REST body (bytes or doc) and path, a gRPC request (or None
    when the transport cannot express it), and the expected statuses."""

    def __init__(self, rest, grpc_message, status: int, code: grpc.StatusCode,
                 path: str = f"/v2/models/{MODEL}/infer") -> None:
        self.rest, self.grpc_message, self.status, self.code, self.path = (
            rest, grpc_message, status, code, path)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES: dict[str, Case] = {
    "malformed-json": Case(b'{"inputs": [', None, 400, INVALID),
    "body-not-object": Case(b"[1, 2]", None, 400, INVALID),
    "inputs-missing": Case({"id": "1"}, None, 400, INVALID),
    "data-missing": Case({"inputs": [{k: v for k, v in _tensor().items() if k != "data"}]},
                         _pb(raw=b""), 400, INVALID),
    "data-not-a-list": Case({"inputs": [_tensor(data="0.5")]}, None, 400, INVALID),
    "shape-product-mismatch": Case({"inputs": [_tensor(data=ROW[:19])]},
                                   _pb(raw=np.zeros(19, np.float32).tobytes()), 400, INVALID),
    "wrong-rank": Case({"inputs": [_tensor(shape=[20])]}, _pb(shape=[20]), 400, INVALID),
    "wrong-dimension": Case({"inputs": [_tensor(shape=[2, 10])]}, _pb(shape=[2, 10]),
                            400, INVALID),
    "negative-dimension": Case({"inputs": [_tensor(shape=[-1, 20])]}, None, 400, INVALID),
    "lossy-fp64": Case({"inputs": [_tensor(datatype="FP64", data=[0.1] * 20)]},
                       _pb(datatype="FP64", raw=np.full(20, 0.1).tobytes()), 400, INVALID),
    "lossy-int64": Case({"inputs": [_tensor(datatype="INT64", data=[2**30 + 1] * 20)]},
                        _pb(datatype="INT64", raw=np.full(20, 2**30 + 1).tobytes()),
                        400, INVALID),
    "bool-for-fp32": Case({"inputs": [_tensor(datatype="BOOL", data=[True] * 20)]},
                          _pb(datatype="BOOL", raw=b"\x01" * 20), 400, INVALID),
    "unknown-datatype": Case({"inputs": [_tensor(datatype="FLOAT")]},
                             _pb(datatype="FLOAT"), 400, INVALID),
    "unknown-input": Case({"inputs": [_tensor(name="features")]}, _pb(name="features"),
                          400, INVALID),
    "unknown-output": Case({"inputs": [_tensor()], "outputs": [{"name": "score"}]},
                           _pb(outputs=["score"]), 400, INVALID),
    "zero-size-batch": Case({"inputs": [_tensor(shape=[0, 20], data=[])]},
                            _pb(shape=[0, 20], raw=b""), 400, INVALID),
    "unknown-model": Case({"inputs": [_tensor()]}, _pb(model="nope"), 404,
                          grpc.StatusCode.NOT_FOUND, "/v2/models/nope/infer"),
    "unknown-version": Case({"inputs": [_tensor()]}, _pb(version="9"), 404,
                            grpc.StatusCode.NOT_FOUND, f"/v2/models/{MODEL}/versions/9/infer"),
}


def _grpc_call(target: str, message) -> grpc.RpcError | object:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ModelInfer(message, timeout=10)
        except grpc.RpcError as exc:
            return exc


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_over_rest(gbm_pod: ServerThread, case: str) -> None:
    c = CASES[case]
    status, headers, body = http_call("POST", gbm_pod.http_url + c.path, c.rest)
    assert status == c.status, body
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert list(doc) == ["error"] and isinstance(doc["error"], str) and doc["error"]


@pytest.mark.parametrize("case", sorted(k for k, c in CASES.items() if c.grpc_message))
def test_bad_input_over_grpc(gbm_pod: ServerThread, case: str) -> None:
    c = CASES[case]
    reply = _grpc_call(gbm_pod.grpc_target, c.grpc_message)
    assert isinstance(reply, grpc.RpcError), reply
    assert reply.code() == c.code, reply.details()
    assert reply.details()


@pytest.mark.parametrize("datatype", ["INT32", "INT16", "FP64", "FP16"])
def test_lossless_datatypes_are_converted(gbm_pod: ServerThread, datatype: str) -> None:
    values = np.arange(20) % 4 - 1.0  # small integers, exact in every datatype
    fp32 = {"inputs": [_tensor(data=values.tolist())]}
    other = {"inputs": [_tensor(datatype=datatype, data=values.astype(int).tolist()
                                if datatype.startswith("INT") else values.tolist())]}
    replies = [json.loads(http_call("POST", gbm_pod.http_url + f"/v2/models/{MODEL}/infer",
                                    doc)[2]) for doc in (fp32, other)]
    assert replies[1]["outputs"] == replies[0]["outputs"]
    raw = np.asarray(values, dtype=datatype.lower().replace("fp", "float")).tobytes()
    grpc_reply = _grpc_call(gbm_pod.grpc_target, _pb(datatype=datatype, raw=raw))
    assert not isinstance(grpc_reply, grpc.RpcError), grpc_reply
    np.testing.assert_array_equal(
        np.frombuffer(grpc_reply.raw_output_contents[1], "<f4"),
        np.asarray(replies[0]["outputs"][1]["data"], np.float32))


def test_server_still_serves_after_bad_input(gbm_pod: ServerThread) -> None:
    for c in CASES.values():
        http_call("POST", gbm_pod.http_url + c.path, c.rest)
        if c.grpc_message is not None:
            _grpc_call(gbm_pod.grpc_target, c.grpc_message)
    status, _, body = http_call("POST", gbm_pod.http_url + f"/v2/models/{MODEL}/infer",
                                {"inputs": [_tensor()]})
    assert status == 200
    assert [o["name"] for o in json.loads(body)["outputs"]] == ["label", "probabilities"]
    reply = _grpc_call(gbm_pod.grpc_target, _pb())
    assert not isinstance(reply, grpc.RpcError)
    assert http_call("GET", gbm_pod.http_url + "/v2/health/ready")[0] == 200


@pytest.fixture(scope="module")
def small_pod() -> Iterator[ServerThread]:
    """A credit-like pod accepting bodies of at most 16 KiB."""
    options = ServerOptions(host="127.0.0.1", http_port=0, grpc_port=0,
                            max_body_bytes=16 * 1024, drain_timeout_s=1.0)
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("small"),
                                options)) as pod:
        yield pod


def _rows(n: int) -> np.ndarray:
    return np.linspace(-1, 1, n * 20, dtype=np.float32).reshape(n, 20)


@pytest.mark.parametrize("send", [
    lambda url, x: http_call("POST", url, {"inputs": [_tensor(shape=x.shape,
                                                              data=x.ravel().tolist())]}),
    lambda url, x: http_call("POST", url, _binary_body(x)[0], _binary_body(x)[1]),
], ids=["json", "binary"])
def test_oversized_payload_is_413_over_rest(small_pod: ServerThread, send: Callable) -> None:
    url = small_pod.http_url + "/v2/models/small/infer"
    status, _, body = send(url, _rows(400))
    assert status == 413
    assert isinstance(json.loads(body)["error"], str)
    assert send(url, _rows(10))[0] == 200


def _binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    from protos.codecs import binary
    from protos.protocol import InferenceRequest, Tensor

    body, length = binary.request_to_binary(
        InferenceRequest("small", [Tensor.from_array("input", x)]))
    return body, {binary.HEADER: str(length), "Content-Type": "application/octet-stream"}


def test_oversized_payload_is_resource_exhausted_over_grpc(small_pod: ServerThread) -> None:
    big = _pb(model="small", shape=[400, 20], raw=_rows(400).tobytes())
    reply = _grpc_call(small_pod.grpc_target, big)
    assert isinstance(reply, grpc.RpcError)
    assert reply.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = _grpc_call(small_pod.grpc_target,
                    _pb(model="small", shape=[10, 20], raw=_rows(10).tobytes()))
    assert not isinstance(ok, grpc.RpcError)
