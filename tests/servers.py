"""Real servers on port 0 for tests: each runs its own event loop in a thread, so
synchronous clients (tritonclient, urllib) can drive it from the test.

The loop runs in asyncio debug mode: a callback or task step that holds the loop longer
than ``BLOCKING_LIMIT_S`` (a blocking call inside the event loop) fails the test when
the server stops."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from protos.server.app import Server, ServerOptions

__all__ = ["ServerThread", "BLOCKING_LIMIT_S"]

BLOCKING_LIMIT_S = 1.0


class _SlowCallbacks(logging.Handler):
    """Collects asyncio's "Executing <...> took N seconds" reports of one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self.loop = loop
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and record.thread == self.thread.ident:
            self.reports.append(message)

    thread: threading.Thread


class ServerThread:
    """Start ``factory()`` (which returns a :class:`Server`) in a thread; stop on exit.

    Attributes:
        server: the running server (ports in ``server.http_port`` / ``grpc_port``).
    """

    def __init__(self, factory: Callable[[], Server]) -> None:
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._loop.set_debug(True)
        self._loop.slow_callback_duration = BLOCKING_LIMIT_S
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._slow = _SlowCallbacks(self._loop)
        self._slow.thread = self._thread
        self.server: Server

    def __enter__(self) -> ServerThread:
        logging.getLogger("asyncio").addHandler(self._slow)
        self._thread.start()
        self.server = self.call(self._start())
        return self

    async def _start(self) -> Server:
        server = self._factory()
        await server.start()
        return server

    def call(self, coro, timeout: float = 60.0):
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            logging.getLogger("asyncio").removeHandler(self._slow)
        assert not self._slow.reports, (
            f"blocking call inside the server's event loop: {self._slow.reports[:3]}"
        )

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def http_hostport(self) -> str:
        return f"127.0.0.1:{self.server.http_port}"

    @property
    def grpc_target(self) -> str:
        return self.server.grpc_target


def local_options() -> ServerOptions:
    """Loopback, both ports free, short drain."""
    return ServerOptions(host="127.0.0.1", http_port=0, grpc_port=0, drain_timeout_s=2.0)
