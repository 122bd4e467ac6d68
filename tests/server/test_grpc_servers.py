"""Both gRPC server kinds (the thread pool, the default, and ``grpc.aio`` with
``grpc_threads=0``) serve the same RPCs the same way: answers, trailing metadata, the
error table, auth, and a call the client abandons is cancelled on the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.protocol import InferenceRequest, InferenceResponse
from protos.registry import ModelRegistry
from protos.server.app import Server
from protos.server.grpc import ThreadedServer
from tests.fakes import EchoTarget
from tests.security import write_tokens
from tests.servers import ServerThread, local_options

KINDS = {"threads": 8, "aio": 0}


class _HeaderTarget(EchoTarget):
    """An echo that answers with a response header (sent as trailing metadata)."""

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        response = await super().infer(request)
        response.headers = {"X-Arbiter-Test": request.headers.get("x-caller", "none")}
        return response


class _HangingTarget(EchoTarget):
    """An echo whose infer waits until cancelled; records that it was."""

    def __init__(self) -> None:
        super().__init__("hanging")
        self.started = asyncio.Event()
        self.cancelled = False

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return await super().infer(request)


def _request(model: str) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, id="r1")
    message.inputs.add(name="x", datatype="FP32", shape=[2])
    message.raw_input_contents.append(np.array([1.5, -2.0], np.float32).tobytes())
    return message


def _server(threads: int, *targets, **options):
    opts = dataclasses.replace(local_options(), grpc_threads=threads, **options)
    return lambda: Server(ModelRegistry(list(targets)), opts)


@pytest.mark.parametrize("kind", KINDS)
def test_answer_trailing_metadata_and_errors(kind: str) -> None:
    with ServerThread(_server(KINDS[kind], _HeaderTarget("echo"))) as pod:
        assert isinstance(pod.server._grpc, ThreadedServer) == (kind == "threads")
        with grpc.insecure_channel(pod.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            reply, call = stub.ModelInfer.with_call(_request("echo"), timeout=10,
                                                    metadata=(("x-caller", "me"),))
            assert reply.id == "r1" and reply.outputs[0].name == "x"
            np.testing.assert_array_equal(
                np.frombuffer(reply.raw_output_contents[0], np.float32), [1.5, -2.0])
            assert ("x-arbiter-test", "me") in call.trailing_metadata()
            with pytest.raises(grpc.RpcError) as missing:
                stub.ModelInfer(_request("ghost"), timeout=10)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            assert "'ghost' not found" in missing.value.details()
            with pytest.raises(grpc.RpcError) as unready:
                stub.ModelReady(pb.ModelReadyRequest(name="ghost"), timeout=10)
            assert unready.value.code() == grpc.StatusCode.NOT_FOUND
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live


@pytest.mark.parametrize("kind", KINDS)
def test_auth_guards_every_rpc(kind: str, tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path)
    factory = _server(KINDS[kind], EchoTarget(), auth=tokens.policy())
    with ServerThread(factory) as pod, grpc.insecure_channel(pod.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.ModelInfer(_request("echo"), timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong_scope:
            stub.ModelInfer(_request("echo"), timeout=10, metadata=(
                ("authorization", f"Bearer {tokens.by_scope['decisions:read']}"),))
        assert wrong_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED
        reply = stub.ModelInfer(_request("echo"), timeout=10, metadata=(
            ("authorization", f"Bearer {tokens.by_scope['infer']}"),))
        assert reply.outputs[0].name == "x"


@pytest.mark.parametrize("kind", KINDS)
def test_abandoned_call_is_cancelled_on_the_loop_and_counted(kind: str) -> None:
    target = _HangingTarget()
    with ServerThread(_server(KINDS[kind], target)) as pod:
        with grpc.insecure_channel(pod.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as late:
                stub.ModelInfer(_request("hanging"), timeout=0.5)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 10
        while not target.cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.started.is_set() and target.cancelled
        metrics = pod.server.metrics.requests.labels("hanging", "grpc", "CANCELLED")
        assert metrics._value.get() == 1
