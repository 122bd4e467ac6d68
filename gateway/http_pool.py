"""Keep-alive HTTP/1.1 connections from the gateway to one model pod.

The gateway calls its pods over REST on every decision, so the client's own cost is
paid on every request. aiohttp's client measured at about 46 % of the gateway's event-loop
time per decision (py-spy, docs/benchmarks.md "Gateway: where the time goes"): request
and response objects, header multidicts, a timer context, a payload registry look-up,
all for one POST to a known pod. This pool does the one thing the upstream needs: send
a request whose header block is mostly fixed (built once per pod) on a kept-alive
connection, and read the response with ``httptools`` (the llhttp parser, as uvicorn
uses it).

Behaviour (RFC 9112):

* connections are reused last-in first-out and closed after ``keepalive_s`` idle
  (before a pod's own keep-alive timer, 15 s for an Arbiter pod) or when the response
  says ``Connection: close``; at most ``limit`` are open at once, further requests wait;
* a request is sent once: a connection the pod closes before answering fails the
  call (the pod may have read and run it), it is never sent again on another;
* interim answers (1xx, RFC 9110 section 15.2) are skipped; an answer without
  ``Content-Length`` or chunked coding ends when the pod closes the connection (RFC 9112
  section 6.3); bytes that arrive on an idle connection, or after an answer, close it,
  so they are never read as the next request's answer;
* an answer's header section is limited to :data:`MAX_HEADERS` fields and
  :data:`MAX_HEADER_BYTES` bytes;
* the whole call (waiting for a connection, connecting, the answer) is bounded by
  ``timeout_s``; when it runs out the connection is closed (its answer would be stale)
  and :class:`TimeoutError` is raised;
* a refused or broken connection and a malformed answer raise :class:`PodConnectionError`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Sequence

import httptools

__all__ = ["HttpPool", "MAX_HEADERS", "MAX_HEADER_BYTES", "PodConnectionError", "Response"]

MAX_HEADERS = 100
"""Most header fields in a pod's answer."""
MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of header names and values in a pod's answer."""


class PodConnectionError(ConnectionError):
    """The pod could not be reached, closed the connection mid-answer, or answered
    something that is not HTTP/1.1."""


class Response:
    """A pod's answer.

    Attributes:
        status: HTTP status code.
        headers: header names lower-cased (ASCII) -> value; a repeated header keeps its
            last value.
        body: the body (chunked transfer coding removed).
    """

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its response parser."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._header_bytes = 0
        self._headers_done = False
        self._body: list[bytes] = []
        self._broken: str | None = None  # why the exchange cannot go on

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: the stream is out of step, drop it
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(PodConnectionError("the pod asked to upgrade the connection"))
        except httptools.HttpParserError as exc:
            self._fail(PodConnectionError(f"malformed answer from the pod: {exc}"))
        if self._broken is not None:
            self._fail(PodConnectionError(self._broken))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if (self._headers_done and "content-length" not in self._headers
                and "transfer-encoding" not in self._headers and self._broken is None):
            # the answer's body is delimited by the close (RFC 9112 section 6.3, rule 8)
            waiter.set_result(Response(self.parser.get_status_code(), self._headers,
                                       b"".join(self._body)))
            return
        waiter.set_exception(
            PodConnectionError("the pod closed the connection before answering"))
        waiter.exception()  # retrieved by the pool

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.waiter is None:  # an answer nobody asked for, after the last one
            self._broken = "the pod sent more than one answer to one request"

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            self._broken = (f"the pod's answer has more than {MAX_HEADERS} header fields "
                            f"or {MAX_HEADER_BYTES} bytes of headers")
            return
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, body = self._headers, b"".join(self._body)
        self._headers, self._body, self._headers_done = {}, [], False
        self._header_count = self._header_bytes = 0
        if 100 <= status < 200 or self._broken is not None:
            return  # interim (100 Continue, 103 Early Hints): the final one follows
        waiter, self.waiter = self.waiter, None
        if not self.parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, headers, body))

    # -- the pool's side ------------------------------------------------------------------
    def send(self, data: Sequence[bytes]) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


def _expire(answer: asyncio.Future) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


class HttpPool:
    """Kept-alive connections to one ``host:port`` (see the module docstring).

    Args:
        host: the pod's host name or address.
        port: its TCP port.
        ssl_context: TLS client context (``https``), or None for plain TCP.
        limit: most connections open at once.
        keepalive_s: an idle connection is closed after this many seconds.
    """

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 limit: int = 64, keepalive_s: float = 10.0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.keepalive_s = keepalive_s
        self.limit = limit
        self._active = 0  # requests holding a slot (at most ``limit``)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closing = False

    async def request(self, head: bytes, body: bytes = b"", *, timeout_s: float) -> Response:
        """Send ``head`` (request line and headers up to, not including, the blank line
        that ends them; ``Content-Length`` is added here) and ``body``; the answer.

        Args:
            head: e.g. ``b"POST /v2/models/m/infer HTTP/1.1\\r\\nHost: pod\\r\\n"``.
            body: the request body (may be empty).
            timeout_s: bound on the whole call, in seconds.

        Raises:
            TimeoutError: no complete answer within ``timeout_s``.
            PodConnectionError: connection refused, reset or closed mid-answer, or a
                malformed answer.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        data = (head, b"Content-Length: %d\r\n\r\n" % len(body), body)
        if self._active < self.limit and not self._waiters:
            self._active += 1
        else:
            await self._wait_for_slot(deadline)
        try:
            conn = self._idle_connection()
            if conn is None:
                conn = await self._connect(deadline)
            answer = conn.send(data)
            timer = loop.call_at(deadline, _expire, answer)
            try:
                response = await answer
            except BaseException:  # closed, malformed, a timeout or a cancel
                self._drop(conn)
                raise
            finally:
                timer.cancel()
            self._release(conn)
            return response
        finally:
            self._free_slot()

    async def _wait_for_slot(self, deadline: float) -> None:
        """Wait until a finishing request hands over its slot (FIFO)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # handed over just as the wait ended: pass it on
            else:
                waiter.cancel()
            raise

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it
                return
        self._active -= 1

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            self._drop(conn)
        return None

    async def _connect(self, deadline: float) -> _Connection:
        if self._closing:
            raise PodConnectionError("the connection pool is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None)
        except TimeoutError:  # an OSError too: the deadline, not a refusal
            raise
        except OSError as exc:
            raise PodConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") \
                from None
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self._closing:
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def close(self) -> None:
        """Close every connection; later requests raise :class:`PodConnectionError`."""
        self._closing = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
