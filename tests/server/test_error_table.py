"""Every ArbiterError subclass, raised by a target, reaches the client with its own
status over REST and its own code over gRPC; anything else is a generic 500/INTERNAL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

import protos.errors as errors
from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.registry import ModelRegistry
from protos.server.app import Server
from tests.fakes import RaisingTarget, http_call
from tests.servers import ServerThread, local_options

ERRORS = sorted(
    (cls for cls in vars(errors).values()
     if isinstance(cls, type) and issubclass(cls, errors.ArbiterError)),
    key=lambda cls: cls.__name__,
)
EXPECTED = {  # docs/protocol.md, "Our decisions"
    "ArbiterError": (500, "INTERNAL"),
    "InvalidRequestError": (400, "INVALID_ARGUMENT"),
    "UnauthenticatedError": (401, "UNAUTHENTICATED"),
    "PermissionDeniedError": (403, "PERMISSION_DENIED"),
    "NotFoundError": (404, "NOT_FOUND"),
    "ModelNotFoundError": (404, "NOT_FOUND"),
    "DecisionNotFoundError": (404, "NOT_FOUND"),
    "ModelNotReadyError": (503, "UNAVAILABLE"),
    "UpstreamUnavailableError": (503, "UNAVAILABLE"),
    "PayloadTooLargeError": (413, "RESOURCE_EXHAUSTED"),
    "OverloadedError": (429, "RESOURCE_EXHAUSTED"),
    "DeadlineError": (504, "DEADLINE_EXCEEDED"),
    "InferenceError": (500, "INTERNAL"),
    "UnsupportedError": (501, "UNIMPLEMENTED"),
}


@pytest.fixture(scope="module")
def raising() -> Iterator[tuple[ServerThread, RaisingTarget]]:
    target = RaisingTarget("raising")
    with ServerThread(lambda: Server(ModelRegistry([target]), local_options())) as server:
        yield server, target


def test_every_error_class_is_in_the_table() -> None:
    assert sorted(EXPECTED) == [cls.__name__ for cls in ERRORS]


def _rest(server: ServerThread):
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                       "data": [0.0] * 20}]}
    return http_call("POST", server.http_url + "/v2/models/raising/infer", doc)


def _grpc(server: ServerThread) -> grpc.RpcError:
    message = pb.ModelInferRequest(model_name="raising",
                                   raw_input_contents=[np.zeros(20, np.float32).tobytes()])
    message.inputs.add(name="input", datatype="FP32", shape=[1, 20])
    with grpc.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=10)
    return info.value


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_error_status_over_both_transports(raising, cls: type[errors.ArbiterError]) -> None:
    server, target = raising
    target.error = cls(f"message of {cls.__name__}")
    status, code = EXPECTED[cls.__name__]
    got_status, headers, body = _rest(server)
    assert got_status == status
    assert json.loads(body) == {"error": f"message of {cls.__name__}"}
    if status in (429, 503):
        assert headers["Retry-After"] == "1"
    error = _grpc(server)
    assert error.code() == grpc.StatusCode[code]
    assert error.details() == f"message of {cls.__name__}"


def test_unexpected_exception_is_a_generic_internal_error(raising) -> None:
    server, target = raising
    target.error = KeyError("secret detail")
    status, _, body = _rest(server)
    assert status == 500 and json.loads(body) == {"error": "internal server error"}
    error = _grpc(server)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in error.details()


def test_error_metrics_count_codes(raising) -> None:
    server, target = raising
    target.error = errors.OverloadedError("full")
    _rest(server)
    _grpc(server)
    text = http_call("GET", server.http_url + "/metrics")[2].decode()
    assert 'arbiter_requests_total{code="429",model="raising",protocol="rest"}' in text
    assert ('arbiter_requests_total{code="RESOURCE_EXHAUSTED",model="raising",'
            'protocol="grpc"}') in text
