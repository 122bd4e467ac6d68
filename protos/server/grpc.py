"""gRPC adapter: ``inference.GRPCInferenceService`` over ``grpc.aio``.

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
from typing import Any

import grpc
from google.protobuf import json_format

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.codecs import grpc as codec
from protos.codecs.limits import DEFAULT_MAX_ELEMENTS
from protos.errors import ArbiterError
from protos.registry import ModelRegistry
from protos.server.auth import AuthInterceptor, AuthPolicy
from protos.server.metrics import ServerMetrics

__all__ = ["InferenceServicer", "abort_code", "build_server", "guarded"]

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
        if name[:1].isupper() and inspect.iscoroutinefunction(method):
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
        except Exception as exc:
            code = exc.grpc_code if isinstance(exc, ArbiterError) else "INTERNAL"
            raise
        finally:
            self.metrics.observe(request.model_name, "grpc", code, time.perf_counter() - start)

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
) -> grpc.aio.Server:
    """A ``grpc.aio`` server with the OIP service (and ``extra_services``, each a
    callable taking the server), its errors mapped by :func:`guarded`; not yet bound or
    started. A request tensor whose shape implies more than ``max_tensor_elements``
    elements gets INVALID_ARGUMENT before anything is allocated. ``reuse_port`` lets
    several worker processes bind the same port (off by default, so that a second
    server on a taken port fails instead of silently sharing it). ``auth`` is enforced
    on every RPC by an :class:`~protos.server.auth.AuthInterceptor`."""
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(auth)] if auth is not None else None,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        guarded(InferenceServicer(registry, metrics, max_tensor_elements)), server
    )
    for add in extra_services or ():
        add(server)
    return server
