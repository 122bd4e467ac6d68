"""One process, one event loop: the REST and gRPC adapters over one registry.

Startup binds both ports (port 0 picks free ones, reported back), runs the startup
hooks (model loads, upstream checks) and only then reports ready. Shutdown (SIGTERM,
SIGINT or :meth:`Server.stop`) turns readiness false, stops accepting, lets in-flight
requests finish within ``drain_timeout_s``, then runs the cleanup hooks in reverse
order (drain shadows and explanations, close upstream pools, unload models).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from protos.codecs.limits import DEFAULT_MAX_ELEMENTS
from protos.registry import ModelRegistry
from protos.server import grpc as grpc_server
from protos.server import rest
from protos.server.auth import AuthPolicy
from protos.server.metrics import MetricsBound, ServerMetrics
from protos.server.tls import ServerTls

__all__ = ["ServerOptions", "Server", "Hook"]

log = logging.getLogger("arbiter.server")

Hook = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class ServerOptions:
    """Network options of a server.

    Attributes:
        host: interface to bind.
        http_port: REST port (0: any free port).
        grpc_port: gRPC port (0: any free port; -1: no gRPC).
        max_body_bytes: largest REST body / gRPC message accepted, in bytes.
        max_tensor_elements: most elements one request tensor's shape may imply;
            checked, with the bytes the tensor carries, before anything is allocated.
        drain_timeout_s: seconds in-flight requests get to finish at shutdown.
        reuse_port: bind with SO_REUSEPORT, so that several worker processes share
            the ports (``--workers``).
        auth: bearer tokens and route scopes; None: every caller may do anything
            (a warning is logged at start).
        tls: certificate and key (and client CA for mTLS) of both ports; None: plain
            text.
        header_timeout_s: a REST connection whose request headers are not complete
            this long after it opened or after its last response is closed. aiohttp has
            no separate header timeout: this is its keep-alive timer, which also closes
            idle keep-alive connections (clients should keep them idle for less; the
            gateway's own pools use 10 s).
        body_timeout_s: a REST request body not received within this many seconds
            gets 408.
        backlog: connections the REST port queues before they are accepted (capped
            by ``net.core.somaxconn``); past it a new client's SYN is dropped and
            retried a second later, so a burst of clients wants a deep one.
        grpc_threads: threads of the gRPC server: at most this many gRPC calls in
            flight (more wait in grpc's queue), each run on the event loop; 0 serves
            gRPC with ``grpc.aio`` instead (see :mod:`protos.server.grpc` for why
            threads are the default).
    """

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    max_body_bytes: int = 64 * 2**20
    max_tensor_elements: int = DEFAULT_MAX_ELEMENTS
    drain_timeout_s: float = 10.0
    reuse_port: bool = False
    auth: AuthPolicy | None = None
    tls: ServerTls | None = None
    header_timeout_s: float = 15.0
    body_timeout_s: float = 60.0
    backlog: int = 2048
    grpc_threads: int = 64


class Server:
    """REST + gRPC server of a :class:`ModelRegistry`.

    Targets that export metrics of their own (:class:`MetricsBound`, such as a local
    model's batching queue) are bound to this server's metrics when it is built.

    Args:
        registry: the targets served.
        options: ports and limits.
        metrics_registry: Prometheus registry (a fresh one by default).
        extra_routes: adds REST routes to the aiohttp app.
        extra_services: each adds a gRPC service to the server.
        on_startup: awaited in order after binding, before readiness.
        on_cleanup: awaited in reverse order after the drain.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        options: ServerOptions | None = None,
        *,
        metrics_registry: CollectorRegistry | None = None,
        extra_routes: Callable[[web.Application], None] | None = None,
        extra_services: list | None = None,
        on_startup: list[Hook] | None = None,
        on_cleanup: list[Hook] | None = None,
    ) -> None:
        self.registry = registry
        self.options = options or ServerOptions()
        self.metrics_registry = metrics_registry or CollectorRegistry()
        self.metrics = ServerMetrics(self.metrics_registry, lambda n: n in registry.names())
        for name in registry.names():
            target = registry.get(name)
            if isinstance(target, MetricsBound):
                target.bind_metrics(self.metrics)
        self.app = rest.build_app(
            registry, self.metrics, max_body_bytes=self.options.max_body_bytes,
            max_tensor_elements=self.options.max_tensor_elements, extra_routes=extra_routes,
            auth=self.options.auth, body_timeout_s=self.options.body_timeout_s,
        )
        self._extra_services = extra_services
        self._on_startup = list(on_startup or ())
        self._on_cleanup = list(on_cleanup or ())
        self._runner: web.AppRunner | None = None
        self._grpc = None
        self._stopped = asyncio.Event()
        self.http_port = -1
        self.grpc_port = -1

    async def start(self) -> None:
        """Bind both ports, run the startup hooks (a ``reuse_port`` worker runs them
        first, so it takes no connection before it is ready). Sets :attr:`http_port`
        and :attr:`grpc_port` to the bound ports.

        Raises:
            OSError: a port is taken.
        """
        self.registry.starting = True
        opts = self.options
        if opts.reuse_port:  # a worker joins ports others already serve: only once ready
            await self._startup_hooks()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if opts.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((opts.host, opts.http_port))
        except OSError as exc:
            sock.close()
            message = f"cannot bind HTTP port {opts.http_port}: {exc.strerror}"
            raise OSError(exc.errno, message) from None
        self.http_port = sock.getsockname()[1]
        self._runner = web.AppRunner(  # a client that leaves cancels its handler
            self.app, access_log=None, shutdown_timeout=opts.drain_timeout_s,
            handler_cancellation=True, keepalive_timeout=opts.header_timeout_s,
        )
        await self._runner.setup()
        ssl_context = opts.tls.ssl_context() if opts.tls is not None else None
        await web.SockSite(self._runner, sock, shutdown_timeout=opts.drain_timeout_s,
                           backlog=opts.backlog,
                           ssl_context=ssl_context).start()
        if opts.grpc_port >= 0:
            await self._start_grpc(opts)
        if not opts.reuse_port:  # health answers "starting" while models load
            await self._startup_hooks()
        self.registry.starting = False
        if opts.auth is None:
            log.warning("auth is off: any caller that reaches %s may infer, send feedback, "
                        "read decisions and change models (configure auth.tokens_file or "
                        "--auth-tokens-file)", opts.host)
        log.info("serving REST%s on %s:%d, gRPC on %d", " (TLS)" if opts.tls else "",
                 opts.host, self.http_port, self.grpc_port)

    async def _startup_hooks(self) -> None:
        for hook in self._on_startup:
            await hook()

    async def _start_grpc(self, opts: ServerOptions) -> None:
        self._grpc = grpc_server.build_server(
            self.registry, self.metrics, max_message_bytes=opts.max_body_bytes,
            max_tensor_elements=opts.max_tensor_elements, extra_services=self._extra_services,
            reuse_port=opts.reuse_port, auth=opts.auth, threads=opts.grpc_threads,
        )
        address = f"{opts.host}:{opts.grpc_port}"
        try:
            if opts.tls is not None:
                port = self._grpc.add_secure_port(address, opts.tls.grpc_credentials())
            else:
                port = self._grpc.add_insecure_port(address)
        except RuntimeError:  # grpcio raises this when the port is taken
            port = 0
        if port == 0:
            raise OSError(f"cannot bind gRPC port {opts.grpc_port}: address in use")
        self.grpc_port = port
        await self._grpc.start()

    async def stop(self) -> None:
        """Drain and stop: readiness false, stop accepting, finish in-flight requests
        within ``drain_timeout_s``, then the cleanup hooks."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.registry.draining = True
        grace = self.options.drain_timeout_s
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(grace))
        if self._runner is not None:
            stops.append(self._runner.cleanup())
        await asyncio.gather(*stops, return_exceptions=True)
        for hook in reversed(self._on_cleanup):
            try:
                await hook()
            except Exception:
                log.exception("cleanup hook failed")

    async def serve_forever(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then :meth:`stop`. A signal during a
        slow startup (waiting for models) cancels it and stops cleanly."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        starting = asyncio.ensure_future(self.start())
        stopping = asyncio.ensure_future(done.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("stop requested during startup")
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        elif starting.exception() is not None:
            stopping.cancel()
            await self.stop()
            raise starting.exception()
        else:
            await stopping
            log.info("draining (up to %.1f s)", self.options.drain_timeout_s)
        await self.stop()

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the bound REST port (``https`` with TLS)."""
        scheme = "https" if self.options.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        """``127.0.0.1:<port>`` of the bound gRPC port."""
        return f"127.0.0.1:{self.grpc_port}"
