"""The gateway's keep-alive HTTP/1.1 client (gateway/http_pool.py) against a real TCP
server on port 0 whose answers each test scripts: reuse, Connection: close, chunked
bodies, bodies ended by the close, interim 1xx answers, stray bytes, a pod closing an
idle connection or dropping a request it read, timeouts (connecting included), refusals,
malformed answers, header limits, the connection limit."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from gateway.http_pool import MAX_HEADERS, HttpPool, PodConnectionError
from tests.gateway.scripted_pod import ScriptedPod, ok

HEAD = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: pod\r\nContent-Type: text/plain\r\n"


def _echo(request: bytes) -> bytes:
    return ok(request.split(b"\r\n\r\n", 1)[1].upper(), b"X-Seen: yes\r\n")


async def test_sequential_requests_share_one_connection_and_read_headers_and_body():
    async with ScriptedPod(answer=_echo) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        for word in (b"alpha", b"beta", b"gamma"):
            reply = await pool.request(HEAD, word, timeout_s=5)
            assert (reply.status, reply.body) == (200, word.upper())
            assert reply.headers["x-seen"] == "yes"
        assert pod.connections == 1
        assert pod.requests[1].endswith(b"Content-Length: 4\r\n\r\nbeta")
        await pool.close()


async def test_connection_close_answer_is_not_reused():
    async with ScriptedPod(answer=lambda r: ok(b"x", b"Connection: close\r\n"),
                           close_after=True) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        for _ in range(3):
            assert (await pool.request(HEAD, b"", timeout_s=5)).body == b"x"
        assert pod.connections == 3
        await pool.close()


async def test_chunked_answer_is_joined():
    chunked = (b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    async with ScriptedPod(answer=lambda r: chunked) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        reply = await pool.request(HEAD, b"q", timeout_s=5)
        assert (reply.status, reply.body) == (503, b"hello world")
        await pool.close()


async def test_idle_connection_closed_by_the_pod_is_replaced_and_the_request_sent_once():
    async with ScriptedPod(answer=_echo) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        assert (await pool.request(HEAD, b"one", timeout_s=5)).body == b"ONE"
        for w in pod.writers:  # the pod's keep-alive timer fires
            w.close()
        await asyncio.sleep(0.05)
        assert (await pool.request(HEAD, b"two", timeout_s=5)).body == b"TWO"
        assert pod.connections == 2
        assert [r.rsplit(b"\r\n", 1)[1] for r in pod.requests] == [b"one", b"two"]
        await pool.close()


async def test_idle_connections_older_than_keepalive_are_not_reused():
    async with ScriptedPod(answer=_echo) as pod:
        pool = HttpPool("127.0.0.1", pod.port, keepalive_s=0.05)
        await pool.request(HEAD, b"a", timeout_s=5)
        await asyncio.sleep(0.1)
        await pool.request(HEAD, b"b", timeout_s=5)
        assert pod.connections == 2
        await pool.close()


async def test_timeout_raises_and_drops_the_connection_with_the_staleok():
    async with ScriptedPod(answer=_echo, delay_s=0.3) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        with pytest.raises(TimeoutError):
            await pool.request(HEAD, b"slow", timeout_s=0.1)
        pod.delay_s = 0.0
        reply = await pool.request(HEAD, b"next", timeout_s=5)
        assert reply.body == b"NEXT"  # not the late answer to "slow"
        assert pod.connections == 2
        await pool.close()


async def test_refused_connection_and_malformed_answer_raise_pod_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(PodConnectionError, match="cannot connect"):
            await HttpPool("127.0.0.1", port).request(HEAD, b"", timeout_s=5)
    async with ScriptedPod(answer=lambda r: b"SMTP ready\r\n\r\n") as pod:
        with pytest.raises(PodConnectionError, match="malformed"):
            await HttpPool("127.0.0.1", pod.port).request(HEAD, b"", timeout_s=5)


async def test_pod_closing_mid_answer_is_an_error_not_a_retry():
    async with ScriptedPod(answer=lambda r: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                           close_after=True) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        with pytest.raises(PodConnectionError, match="closed the connection"):
            await pool.request(HEAD, b"", timeout_s=5)
        assert len(pod.requests) == 1
        await pool.close()


async def test_limit_bounds_open_connections_and_every_request_is_answered():
    async with ScriptedPod(answer=_echo, delay_s=0.02) as pod:
        pool = HttpPool("127.0.0.1", pod.port, limit=3)
        words = [b"w%d" % i for i in range(12)]
        replies = await asyncio.gather(*(pool.request(HEAD, w, timeout_s=5) for w in words))
        assert [r.body for r in replies] == [w.upper() for w in words]
        assert pod.most_open <= 3 and pod.connections == 3
        await pool.close()
        with pytest.raises(PodConnectionError, match="closed"):
            await pool.request(HEAD, b"late", timeout_s=5)


async def test_waiting_for_a_slot_is_bounded_by_the_timeout_and_frees_nothing_twice():
    async with ScriptedPod(answer=_echo, delay_s=0.3) as pod:
        pool = HttpPool("127.0.0.1", pod.port, limit=1)
        slow = asyncio.ensure_future(pool.request(HEAD, b"first", timeout_s=5))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):  # no slot within 0.1 s
            await pool.request(HEAD, b"second", timeout_s=0.1)
        assert (await slow).body == b"FIRST"
        pod.delay_s = 0.0
        replies = await asyncio.gather(*(pool.request(HEAD, b"n%d" % i, timeout_s=5)
                                         for i in range(5)))
        assert [r.body for r in replies] == [b"N%d" % i for i in range(5)]
        assert pool._active == 0 and not pool._waiters
        await pool.close()


async def test_a_cancelled_caller_leaves_the_pool_usable():
    async with ScriptedPod(answer=_echo, delay_s=0.2) as pod:
        pool = HttpPool("127.0.0.1", pod.port, limit=1)
        task = asyncio.ensure_future(pool.request(HEAD, b"gone", timeout_s=5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pod.delay_s = 0.0
        assert (await pool.request(HEAD, b"next", timeout_s=5)).body == b"NEXT"
        assert pool._active == 0
        await pool.close()


async def test_body_delimited_by_connection_close_is_anok():
    # RFC 9112 section 6.3, rule 8: neither Content-Length nor chunked coding, so the
    # body ends when the pod closes the connection
    async def script(n, body, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body.upper())
        await writer.drain()
        return False

    async with ScriptedPod(script) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        response = await pool.request(HEAD, b"abc", timeout_s=2)
        assert (response.status, response.body) == (200, b"ABC")
        await pool.close()


async def test_interim_1xx_answer_is_skipped_and_never_given_to_the_next_request():
    # a 100 Continue before the final answer: the interim answer is not the answer, and
    # the final one must not be left on the connection for the next request
    async def script(n, body, writer):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(ok(body))
        await writer.drain()

    async with ScriptedPod(script) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        first = await pool.request(HEAD, b"first", timeout_s=2)
        second = await pool.request(HEAD, b"second", timeout_s=2)
        assert (first.status, first.body) == (200, b"first")
        assert (second.status, second.body) == (200, b"second")
        await pool.close()


async def test_bytes_arriving_on_an_idle_connection_are_not_the_nextok():
    # a pod that sends anything while the connection is idle has broken the exchange:
    # the connection is dropped, else the next answer would be read as the stray one's rest
    async def script(n, body, writer):
        writer.write(ok(body))
        await writer.drain()
        if n == 0:
            await asyncio.sleep(0.1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nstray")  # cut short
            await writer.drain()

    async with ScriptedPod(script) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        assert (await pool.request(HEAD, b"one", timeout_s=2)).body == b"one"
        await asyncio.sleep(0.2)  # the stray answer has arrived on the idle connection
        assert (await pool.request(HEAD, b"two", timeout_s=2)).body == b"two"
        await pool.close()


async def test_tls_handshake_outliving_the_deadline_is_a_timeout():
    # the whole call, connecting included, is bounded by timeout_s and raises
    # TimeoutError (the gateway's 504), not the unreachable pod's PodConnectionError (503)
    async def silent(reader, writer):
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    context = ssl.create_default_context()
    pool = HttpPool("127.0.0.1", port, ssl_context=context)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await pool.request(HEAD, b"x", timeout_s=0.3)
    except Exception as exc:  # noqa: BLE001 - the type is the point
        raised = exc
    else:
        raised = None
    assert type(raised) is TimeoutError, repr(raised)
    assert loop.time() - started < 1.0
    await pool.close()
    server.close()


async def test_a_request_the_pod_read_is_not_sent_twice():
    # a pod that read a request and closed without answering may have run it (a crash,
    # an OOM kill): the request fails, it is never sent again
    async def script(n, body, writer):
        if n == 1:  # the second request, on the kept-alive connection: read, then drop
            return False
        writer.write(ok(body))
        await writer.drain()

    async with ScriptedPod(script) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        await pool.request(HEAD, b"one", timeout_s=2)
        with pytest.raises(PodConnectionError, match="closed the connection"):
            await pool.request(HEAD, b"two", timeout_s=2)
        assert pod.bodies.count(b"two") == 1, pod.bodies
        await pool.close()


async def test_an_answer_with_too_many_headers_is_refused():
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1))

    async def script(n, body, writer):
        writer.write(b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()

    async with ScriptedPod(script) as pod:
        pool = HttpPool("127.0.0.1", pod.port)
        with pytest.raises(PodConnectionError, match="header fields"):
            await pool.request(HEAD, b"x", timeout_s=2)
        await pool.close()
