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
* a request sent on a reused connection that the pod closed before any byte of the
  answer came back (the pod's keep-alive timer won the race) is sent once more on a
  fresh connection: the pod read nothing of it, so nothing runs twice;
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

__all__ = ["HttpPool", "PodConnectionError", "Response"]


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
        self.used = False  # has carried a request before (a reused connection)
        self.answered = False  # some byte of the current answer arrived
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(PodConnectionError("the pod asked to upgrade the connection"))
        except httptools.HttpParserError as exc:
            self._fail(PodConnectionError(f"malformed answer from the pod: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            error = PodConnectionError("the pod closed the connection before answering")
            error.stale = self.used and not self.answered  # type: ignore[attr-defined]
            waiter.set_exception(error)
            waiter.exception()  # retrieved by the pool

    # -- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        response = Response(self.parser.get_status_code(), self._headers,
                            b"".join(self._body))
        if not self.parser.should_keep_alive():
            self.close()
        self._headers, self._body = {}, []
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # -- the pool's side ------------------------------------------------------------------
    def send(self, data: Sequence[bytes]) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.answered = False
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
            for _ in range(2):
                conn = self._idle_connection()
                if conn is None:
                    conn = await self._connect(deadline)
                answer = conn.send(data)
                timer = loop.call_at(deadline, _expire, answer)
                try:
                    response = await answer
                except PodConnectionError as exc:
                    self._open.discard(conn)
                    if getattr(exc, "stale", False):
                        continue  # the pod dropped an idle connection: once more, fresh
                    raise
                except BaseException:  # a timeout or a cancel: the answer is stale
                    conn.close()
                    self._open.discard(conn)
                    raise
                finally:
                    timer.cancel()
                self._release(conn)
                return response
            raise PodConnectionError("the pod closed two connections before answering")
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
            conn.close()
            self._open.discard(conn)
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
        except OSError as exc:
            raise PodConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") \
                from None
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self._closing:
            conn.close()
            self._open.discard(conn)
            return
        conn.used = True
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def close(self) -> None:
        """Close every connection; later requests raise :class:`PodConnectionError`."""
        self._closing = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
