"""The gateway's REST client of a pod (HttpUpstream) against a real scripted TCP server:
a pod's malformed 200 is the pod's failure (500, counted by the breaker), never the
client's (400); a slow pod is a 504; a refused connection a 503 naming the model key."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.breaker import counts_as_failure
from gateway.config import ModelRef
from gateway.upstream import connect
from protos.errors import DeadlineError, InferenceError, UpstreamUnavailableError
from protos.protocol import InferenceRequest, Tensor


def _request() -> InferenceRequest:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    return InferenceRequest("m", [Tensor("x", "FP32", (2, 3), data)])


async def _pod(answer: bytes, delay_s: float = 0.0):
    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                await asyncio.sleep(delay_s)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.mark.parametrize("answer", [
    _ok(b"not json at all"),
    _ok(b'{"outputs": [{"name": "y"}]}'),
    _ok(b"short", b"Inference-Header-Content-Length: 999\r\n"),
    _ok(b"{}", b"Inference-Header-Content-Length: many\r\n"),
])
async def test_a_malformed_answer_is_the_pods_failure(answer: bytes):
    server, port = await _pod(answer)
    upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{port}", name="m"))
    with pytest.raises(InferenceError, match="model 'gbm': malformed answer") as caught:
        await upstream.infer(_request())
    assert caught.value.status == 500 and counts_as_failure(caught.value)
    await upstream.close()
    server.close()


async def test_a_good_answer_decodes_and_a_slow_one_is_a_deadline():
    body = (b'{"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", '
            b'"shape": [2], "data": [0.25, 0.75]}]}')
    server, port = await _pod(_ok(body))
    upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{port}", name="m"))
    response = await upstream.infer(_request())
    np.testing.assert_array_equal(response.outputs[0].data, np.float32([0.25, 0.75]))
    await upstream.close()
    server.close()
    server, port = await _pod(_ok(body), delay_s=0.5)
    upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{port}", name="m",
                                       timeout_s=0.1))
    with pytest.raises(DeadlineError, match="within 0.1 s"):
        await upstream.infer(_request())
    await upstream.close()
    server.close()


async def test_a_refused_connection_is_unreachable_without_the_address():
    server, port = await _pod(b"")
    server.close()
    await server.wait_closed()
    upstream = connect("gbm", ModelRef(url=f"http://127.0.0.1:{port}", name="m"))
    with pytest.raises(UpstreamUnavailableError) as caught:
        await upstream.infer(_request())
    assert caught.value.message == "model 'gbm' unreachable"
    await upstream.close()
