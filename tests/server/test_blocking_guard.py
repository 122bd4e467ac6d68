"""The test servers fail a test whose server blocks its event loop."""

from __future__ import annotations

import time

import pytest

from protos.protocol import InferenceRequest, InferenceResponse
from protos.registry import ModelRegistry
from protos.server.app import Server
from tests.fakes import EchoTarget, http_call
from tests.servers import BLOCKING_LIMIT_S, ServerThread, local_options


class BlockingTarget(EchoTarget):
    """Calls a blocking function inside ``async infer`` (the bug the guard catches)."""

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        time.sleep(BLOCKING_LIMIT_S * 1.5)  # noqa: ASYNC251 - the bug under test
        return await super().infer(request)


def _call(pod: ServerThread) -> int:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    return http_call("POST", pod.http_url + "/v2/models/echo/infer", body)[0]


def test_blocking_call_fails_the_test() -> None:
    def factory() -> Server:
        return Server(ModelRegistry([BlockingTarget()]), local_options())

    with pytest.raises(AssertionError, match="blocking call inside the server's event loop"):
        with ServerThread(factory) as pod:
            assert _call(pod) == 200


def test_non_blocking_server_passes() -> None:
    with ServerThread(lambda: Server(ModelRegistry([EchoTarget()]), local_options())) as pod:
        assert _call(pod) == 200
