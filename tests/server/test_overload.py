"""A pod whose batching queue is full answers 429 with Retry-After over REST and
RESOURCE_EXHAUSTED over gRPC at once, counts it in
``arbiter_batch_queue_rejected_requests_total{model}``, and answers every request it
admitted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import grpc
import numpy as np
import pytest

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.servers import ServerThread

DOC = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                   "data": [0.5] * 20}]}


class _GatedPredictWrapper(CreditLikeWrapper):
    """The credit contract; predict waits for :attr:`gate` and sets :attr:`entered`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict(self, inputs):
        self.entered.set()
        self.gate.wait(30)
        return super().predict(inputs)


@pytest.fixture
def busy_pod() -> Iterator[tuple[ServerThread, _GatedPredictWrapper]]:
    """A pod of model ``busy`` whose queue holds at most one row."""
    wrapper = _GatedPredictWrapper()
    settings = credit_like_settings("busy", max_queue_rows=1, probe_on_load=False)
    with ServerThread(model_pod(wrapper, settings)) as pod:
        try:
            yield pod, wrapper
        finally:
            wrapper.gate.set()


def _grpc_infer(target: str) -> grpc.RpcError | object:
    message = pb.ModelInferRequest(model_name="busy",
                                   raw_input_contents=[np.zeros(20, np.float32).tobytes()])
    message.inputs.add(name="input", datatype="FP32", shape=[1, 20])
    with grpc.insecure_channel(target) as channel:
        try:
            return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=10)
        except grpc.RpcError as exc:
            return exc


def test_full_queue_is_429_with_retry_after_and_counted(busy_pod) -> None:
    pod, wrapper = busy_pod
    url = pod.http_url + "/v2/models/busy/infer"
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(http_call, "POST", url, DOC)
        assert wrapper.entered.wait(10)
        contenders = [pool.submit(http_call, "POST", url, DOC) for _ in range(2)]
        done, _ = wait(contenders, timeout=10, return_when=FIRST_COMPLETED)
        assert done, "neither request was answered while the model was busy"
        status, headers, body = next(iter(done)).result()
        assert status == 429, body
        assert headers["Retry-After"] == "1"
        message = json.loads(body)["error"]
        assert "'busy'" in message and "max_queue_rows 1" in message
        reply = _grpc_infer(pod.grpc_target)
        assert isinstance(reply, grpc.RpcError)
        assert reply.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queue_rows 1" in reply.details()
        wrapper.gate.set()
        statuses = sorted(f.result()[0] for f in [running, *contenders])
    assert statuses == [200, 200, 429]
    metrics = http_call("GET", pod.http_url + "/metrics")[2].decode()
    assert 'arbiter_batch_queue_rejected_requests_total{model="busy"} 2.0' in metrics
    assert 'arbiter_requests_total{code="429",model="busy",protocol="rest"} 1.0' in metrics
    assert not isinstance(_grpc_infer(pod.grpc_target), grpc.RpcError)
