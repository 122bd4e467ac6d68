"""The gateway's REST client of a pod (HttpUpstream) against a real scripted TCP server:
a pod's malformed 200 is the pod's failure (500, counted by the breaker), never the
client's (400); a slow pod is a 504; a refused connection a 503 naming the model key."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.breaker import counts_as_failure
from gateway.config import ModelRef
from gateway.upstream import connect
from protos.errors import DeadlineError, InferenceError, UpstreamUnavailableError
from protos.protocol import InferenceRequest, Tensor
from tests.gateway.scripted_pod import ScriptedPod, ok


def _request() -> InferenceRequest:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    return InferenceRequest("m", [Tensor("x", "FP32", (2, 3), data)])


@pytest.mark.parametrize("answer", [
    ok(b"not json at all"),
    ok(b'{"outputs": [{"name": "y"}]}'),
    ok(b"short", b"Inference-Header-Content-Length: 999\r\n"),
    ok(b"{}", b"Inference-Header-Content-Length: many\r\n"),
])
async def test_a_malformed_answer_is_the_pods_failure(answer: bytes):
    async with ScriptedPod(answer=lambda r: answer) as pod:
        upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{pod.port}", name="m"))
        with pytest.raises(InferenceError, match="model 'gbm': malformed answer") as caught:
            await upstream.infer(_request())
        assert caught.value.status == 500 and counts_as_failure(caught.value)
        await upstream.close()


async def test_a_good_answer_decodes_and_a_slow_one_is_a_deadline():
    body = (b'{"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", '
            b'"shape": [2], "data": [0.25, 0.75]}]}')
    async with ScriptedPod(answer=lambda r: ok(body)) as pod:
        upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{pod.port}", name="m"))
        response = await upstream.infer(_request())
        np.testing.assert_array_equal(response.outputs[0].data, np.float32([0.25, 0.75]))
        await upstream.close()
        pod.delay_s = 0.5
        upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{pod.port}", name="m",
                                           timeout_s=0.1))
        with pytest.raises(DeadlineError, match="within 0.1 s"):
            await upstream.infer(_request())
        await upstream.close()


async def test_a_refused_connection_is_unreachable_without_the_address():
    async with ScriptedPod(answer=lambda r: None) as pod:
        port = pod.port
    upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{port}", name="m"))
    with pytest.raises(UpstreamUnavailableError) as caught:
        await upstream.infer(_request())
    assert caught.value.message == "model 'gbm' unreachable"
    await upstream.close()
