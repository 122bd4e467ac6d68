"""gRPC adapter: ``inference.GRPCInferenceService`` served by grpc's thread-pool server,
its RPCs run as coroutines on the server's event loop (or, with ``threads=0``, by
``grpc.aio`` on that loop).

Why a thread pool: on one core, grpc.aio hands every call between its poller threads and
the event loop some 17 times (context switches per call), the thread-pool server about
8 times; measured on the ONNX pod it serves 1.6x the calls for 0.6x the CPU per call
(docs/benchmarks.md, "gRPC server"; ``python -m benchmarks.grpc_servers``). A pool
thread decodes nothing itself: it hands the call to the event loop, where the servicer
coroutine runs exactly as under grpc.aio (same registry, batcher and metrics), and
waits for its answer; a call the client cancels cancels its coroutine. Services added
by ``extra_services`` (written for ``grpc.aio``) are bridged the same way.

Errors are mapped once, for every RPC of every service, by :func:`guarded` (applied to
each servicer when the server is built): an :class:`~protos.errors.ArbiterError` aborts
with its ``grpc_code``; anything else is logged and aborts with INTERNAL and a generic
message.
Response headers of the core travel as trailing metadata.

Beside the six OIP RPCs, Triton's ``ModelConfig``, ``ModelStatistics``,
``RepositoryIndex``, ``RepositoryModelLoad`` and ``RepositoryModelUnload`` serve what the
REST extensions serve, built from the same registry documents.

Source: OIP ``open_inference_grpc.proto``; Triton ``grpc_service.proto``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import json_format

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.codecs import grpc as codec
from protos.codecs.limits import DEFAULT_MAX_ELEMENTS
from protos.errors import ArbiterError
from protos.registry import ModelRegistry
from protos.server.auth import AuthInterceptor, AuthPolicy, ThreadedAuthInterceptor
from protos.server.metrics import ServerMetrics

__all__ = ["InferenceServicer", "ThreadedServer", "abort_code", "build_server", "guarded"]

log = logging.getLogger("arbiter.grpc")


def abort_code(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for an exception (the transport's one table)."""
    if isinstance(exc, ArbiterError):
        return grpc.StatusCode[exc.grpc_code], exc.message
    log.exception("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal server error"


def guarded(servicer: Any) -> Any:
    """Wrap every RPC method of ``servicer`` (the public methods named after the proto's
    RPCs, CamelCase) once, so an exception becomes the status :func:`abort_code` gives.
    Done at construction rather than by a server interceptor, which would build a new
    method handler on every call."""
    for name in dir(servicer):
        method = getattr(servicer, name)
        if (name[:1].isupper() and inspect.iscoroutinefunction(method)
                and not getattr(method, "maps_errors", False)):
            setattr(servicer, name, _guard(method))
    return servicer


def _guard(method):
    @functools.wraps(method)
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = abort_code(exc)
            await context.abort(code, message)

    return call


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six OIP RPCs and Triton's repository, configuration and statistics RPCs
    over a :class:`ModelRegistry`."""

    def __init__(
        self, registry: ModelRegistry, metrics: ServerMetrics,
        max_tensor_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.max_tensor_elements = max_tensor_elements

    async def ServerLive(self, request, context):  # noqa: N802 - proto names
        return pb.ServerLiveResponse(live=self.registry.live())

    async def ServerReady(self, request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=self.registry.ready())

    async def ModelReady(self, request, context):  # noqa: N802
        ready = self.registry.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context):  # noqa: N802
        meta = self.registry.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request, context):  # noqa: N802
        target = self.registry.get(request.name, request.version or None)
        return codec.metadata_to_pb(target.metadata())

    async def ModelInfer(self, request, context):  # noqa: N802
        start = time.perf_counter()
        code = "OK"
        try:
            req = codec.request_from_pb(request, max_elements=self.max_tensor_elements)
            req.headers = _metadata(context)
            resp = await self.registry.infer(req)
            if resp.headers:
                context.set_trailing_metadata(
                    tuple((k.lower(), v) for k, v in resp.headers.items())
                )
            return codec.response_to_pb(resp)
        except asyncio.CancelledError:  # the client cancelled or disconnected
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # the table of guarded(), applied here (no extra frame)
            code = exc.grpc_code if isinstance(exc, ArbiterError) else "INTERNAL"
            status, message = abort_code(exc)
            await context.abort(status, message)
        finally:
            self.metrics.observe(request.model_name, "grpc", code, time.perf_counter() - start)

    ModelInfer.maps_errors = True  # type: ignore[attr-defined]

    async def ModelConfig(self, request, context):  # noqa: N802
        doc = self.registry.model_config(request.name, request.version or None)
        return json_format.ParseDict({"config": doc}, pb.ModelConfigResponse())

    async def ModelStatistics(self, request, context):  # noqa: N802
        docs = self.registry.statistics(request.name or None, request.version or None)
        return json_format.ParseDict({"model_stats": docs}, pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request, context):  # noqa: N802
        models = self.registry.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in models]
        )

    async def RepositoryModelLoad(self, request, context):  # noqa: N802
        await self.registry.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):  # noqa: N802
        await self.registry.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def build_server(
    registry: ModelRegistry,
    metrics: ServerMetrics,
    *,
    max_message_bytes: int = 64 * 2**20,
    max_tensor_elements: int = DEFAULT_MAX_ELEMENTS,
    extra_services: list | None = None,
    reuse_port: bool = False,
    auth: AuthPolicy | None = None,
    threads: int = 0,
) -> Any:
    """The gRPC server of ``registry``: the OIP service (and ``extra_services``, each a
    callable taking the server, as the generated ``add_*_to_server`` functions do), its
    errors mapped by :func:`guarded`; not yet bound or started.

    A request tensor whose shape implies more than ``max_tensor_elements`` elements gets
    INVALID_ARGUMENT before anything is allocated. ``reuse_port`` lets several worker
    processes bind the same port (off by default, so that a second server on a taken
    port fails instead of silently sharing it). ``auth`` is enforced on every RPC by an
    :class:`~protos.server.auth.AuthInterceptor` (grpc.aio) or its thread-pool twin;
    with no policy no interceptor is installed.

    Args:
        threads: ``0``: a ``grpc.aio`` server on the running event loop; ``n > 0``: a
            :class:`ThreadedServer` with ``n`` pool threads (at most ``n`` calls in
            flight; more wait in grpc's queue) running the RPCs on the event loop that
            calls :meth:`ThreadedServer.start`.

    Returns:
        ``grpc.aio.Server`` or :class:`ThreadedServer`: both have ``add_insecure_port``,
        ``add_secure_port``, ``async start()`` and ``async stop(grace)``.
    """
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
    ]
    if threads > 0:
        server: Any = ThreadedServer(threads, options, auth)
    else:
        server = grpc.aio.server(
            interceptors=[AuthInterceptor(auth)] if auth is not None else None,
            options=options,
        )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        guarded(InferenceServicer(registry, metrics, max_tensor_elements)), server
    )
    for add in extra_services or ():
        add(server)
    return server


class ThreadedServer:
    """grpc's thread-pool server running ``grpc.aio``-style servicers on an event loop.

    Every unary-unary handler whose behaviour is a coroutine function (all of this
    package's and the gateway's) is wrapped once, when it is added: the pool thread
    submits the coroutine to the loop and waits for it. The coroutine gets a context
    with the ``grpc.aio`` calls servicers use (``invocation_metadata``,
    ``set_trailing_metadata``, ``await abort(...)``); anything else is read from the
    thread's own context.

    Args:
        threads: pool threads (calls in flight at most).
        options: channel arguments.
        auth: enforced on every RPC before any handler runs; None: open.
    """

    def __init__(self, threads: int, options: list, auth: AuthPolicy | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = futures.ThreadPoolExecutor(threads, thread_name_prefix="arbiter-grpc")
        interceptors = [ThreadedAuthInterceptor(auth)] if auth is not None else None
        self._server = grpc.server(self._pool, interceptors=interceptors, options=options)

    def add_generic_rpc_handlers(self, handlers) -> None:
        """Add generic handlers, their coroutine handlers bridged to the loop."""
        self._server.add_generic_rpc_handlers(
            tuple(_BridgedGenericHandler(h, self._bridge) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        """Add a service's method handlers, their coroutine handlers bridged to the loop."""
        self._server.add_registered_method_handlers(
            service, {name: self._bridge(h) for name, h in handlers.items()})

    def add_insecure_port(self, address: str) -> int:
        """Bind ``address`` in plain text; the port, or 0 if it could not be bound."""
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        """Bind ``address`` with TLS; the port, or 0 if it could not be bound."""
        return self._server.add_secure_port(address, credentials)

    async def start(self) -> None:
        """Start serving; RPCs run on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._server.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs, give those in flight ``grace`` seconds (their coroutines go
        on running on the loop meanwhile), then cancel the rest and stop the pool."""
        await asyncio.to_thread(self._server.stop(grace).wait)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _bridge(self, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None or not inspect.iscoroutinefunction(handler.unary_unary):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _on_loop(handler.unary_unary, lambda: self._loop),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _BridgedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are bridged once, on first use."""

    def __init__(self, inner: grpc.GenericRpcHandler, bridge) -> None:
        self._inner = inner
        self._bridge = bridge
        self._bridged: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        try:
            return self._bridged[method]
        except KeyError:
            handler = self._bridge(self._inner.service(handler_call_details))
            self._bridged[method] = handler
            return handler


class _Abort(grpc.aio.AbortError):
    """``await context.abort(...)`` of a bridged coroutine (passed through
    :func:`guarded`, as grpc.aio's own abort is)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _LoopContext:
    """What a servicer coroutine sees of its call's context on the event loop."""

    __slots__ = ("_context", "trailing")

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self.trailing: tuple | None = None

    def invocation_metadata(self):
        return self._context.invocation_metadata()

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: tuple = ()) -> None:
        if trailing_metadata:
            self.trailing = tuple(trailing_metadata)
        raise _Abort(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _on_loop(method, loop_of):
    """A pool-thread handler running the coroutine ``method`` on ``loop_of()``."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        bridge = _LoopContext(context)
        done = asyncio.run_coroutine_threadsafe(method(request, bridge), loop_of())
        context.add_callback(done.cancel)  # the call ended early: cancel the coroutine
        try:
            result = done.result()
        except _Abort as abort:
            if bridge.trailing:
                context.set_trailing_metadata(bridge.trailing)
            context.abort(abort.code, abort.details)
        except futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "cancelled")
        if bridge.trailing:
            context.set_trailing_metadata(bridge.trailing)
        return result

    return call
