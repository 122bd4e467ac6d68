"""Slow and departed clients: a body that does not arrive in time gets 408, headers that
never end close the connection, a client that disconnects (REST) or cancels (gRPC) is
counted as 499 / CANCELLED without a traceback, and names clients make up do not grow
the metrics cache."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.server.app import ServerOptions
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.gateway.conftest import metric_value
from tests.servers import ServerThread

BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                               "data": [0.5] * 20}]}).encode()


@pytest.fixture(scope="module")
def pod() -> Iterator[ServerThread]:
    """A pod whose model takes 0.5 s, with 0.3 s header and body timeouts."""
    options = ServerOptions(host="127.0.0.1", http_port=0, grpc_port=0, drain_timeout_s=1,
                            header_timeout_s=0.3, body_timeout_s=0.3)
    settings = credit_like_settings("slowish", probe_on_load=False)
    with ServerThread(model_pod(CreditLikeWrapper(delay_s=0.5), settings, options)) as server:
        yield server


def _connect(pod: ServerThread) -> socket.socket:
    return socket.create_connection(("127.0.0.1", pod.server.http_port), timeout=5)


def _head(length: int) -> bytes:
    return (f"POST /v2/models/slowish/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def test_a_body_that_does_not_arrive_in_time_is_408(pod) -> None:
    with _connect(pod) as sock:
        sock.sendall(_head(len(BODY)) + BODY[:10])
        start = time.monotonic()
        reply = sock.recv(4096)
        elapsed = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"request body not received within 0.3 s" in reply
    assert 0.25 < elapsed < 1.5


def test_headers_that_never_end_close_the_connection(pod) -> None:
    with _connect(pod) as sock:
        sock.sendall(b"POST /v2/models/slowish/infer HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        assert sock.recv(4096) == b""  # closed, nothing sent
        assert time.monotonic() - start < 1.5


def test_a_client_that_leaves_is_499_without_a_traceback(pod, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with _connect(pod) as sock:
        sock.sendall(_head(len(BODY)) + BODY)
        time.sleep(0.1)  # the model is running
    time.sleep(0.8)
    text = http_call("GET", pod.http_url + "/metrics")[2].decode()
    assert metric_value(text, "arbiter_requests_total", model="slowish", protocol="rest",
                        code="499") == 1
    assert metric_value(text, "arbiter_requests_total", model="slowish", code="500") == 0
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]
    assert http_call("POST", pod.http_url + "/v2/models/slowish/infer", BODY)[0] == 200


def test_a_grpc_client_that_gives_up_is_cancelled(pod) -> None:
    message = pb.ModelInferRequest(model_name="slowish",
                                   raw_input_contents=[np.zeros(20, np.float32).tobytes()])
    message.inputs.add(name="input", datatype="FP32", shape=[1, 20])
    with grpc.insecure_channel(pod.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=0.1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.8)
    text = http_call("GET", pod.http_url + "/metrics")[2].decode()
    assert metric_value(text, "arbiter_requests_total", model="slowish", protocol="grpc",
                        code="CANCELLED") == 1


def test_made_up_model_names_do_not_grow_the_metrics_cache(pod) -> None:
    for i in range(300):
        http_call("POST", f"{pod.http_url}/v2/models/nobody-{i}/infer", BODY)
    children = pod.server.metrics._children
    assert len(children) < 10, sorted(children)[:20]
    text = http_call("GET", pod.http_url + "/metrics")[2].decode()
    assert metric_value(text, "arbiter_requests_total", model="_unknown", code="404") == 300
