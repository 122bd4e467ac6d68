"""A real TCP server on port 0 that reads HTTP/1.1 requests (by ``Content-Length``) and
answers each as a test scripts it: the pod behind the gateway's REST client in
``test_http_pool.py`` and ``test_upstream_http.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Script = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool | None]]
"""``script(n, body, writer)`` answers request number ``n`` (0-based, over all
connections) by writing to ``writer``; returning False ends the connection."""


def ok(body: bytes, extra: bytes = b"") -> bytes:
    """A 200 answer with ``body`` and the header lines ``extra`` (each ending CRLF)."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class ScriptedPod:
    """The server (``async with``; ``port`` once entered).

    Args:
        script: how each request is answered; None: ``answer`` in turn.
        answer: ``answer(request_bytes)`` -> the bytes to send, or None to send nothing.
        close_after: with ``answer``, end the connection after each answer.
        delay_s: with ``answer``, wait this long before each answer (may be changed
            while the server runs).

    Attributes:
        requests: every request read, head and body.
        bodies: their bodies.
        connections: connections accepted; ``open_now`` and ``most_open`` count the
            open ones.
    """

    def __init__(self, script: Script | None = None, *,
                 answer: Callable[[bytes], bytes | None] | None = None,
                 close_after: bool = False, delay_s: float = 0.0) -> None:
        self.script = script or self._answer_in_turn
        self.answer = answer
        self.close_after = close_after
        self.delay_s = delay_s
        self.requests: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> ScriptedPod:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                self.bodies.append(body)
                if await self.script(len(self.bodies) - 1, body, writer) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def _answer_in_turn(self, n: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = self.answer(self.requests[n])
        if out is None:
            return True
        writer.write(out)
        await writer.drain()
        return not self.close_after
