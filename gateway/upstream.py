"""Pooled OIP clients from the gateway to model-wrapper pods.

gRPC targets use ``grpc.aio`` channels (raw tensor contents); REST targets use
kept-alive HTTP/1.1 connections (:mod:`gateway.http_pool`) with the binary tensor
extension; ``grpcs://`` and
``https://`` reach the pod over TLS (``ca_file``, and a client certificate for mTLS),
and ``token_env`` names the bearer token sent to a pod that has auth. Every call has the
model's deadline. Failures map onto the error tree: unreachable -> 503
(:class:`UpstreamUnavailableError`), deadline -> 504 (:class:`DeadlineError`), the pod's
own 4xx keep their meaning, anything else -> 500 (:class:`InferenceError`). Messages
name the model key, never the pod's address (transport details go to the log).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from urllib.parse import quote, urlsplit

import grpc

from gateway.config import ModelRef
from gateway.http_pool import HttpPool, PodConnectionError, Response
from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.codecs import binary
from protos.codecs import grpc as grpc_codec
from protos.codecs import json as jsonc
from protos.errors import (
    ArbiterError,
    DeadlineError,
    InferenceError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    UnsupportedError,
    UpstreamUnavailableError,
)
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    TensorMetadata,
)
from protos.server.tls import ClientTls

__all__ = ["UpstreamModel", "connect"]

log = logging.getLogger("arbiter.upstream")

_GRPC_ERRORS: dict[grpc.StatusCode, type[ArbiterError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAVAILABLE: UpstreamUnavailableError,
    grpc.StatusCode.NOT_FOUND: UpstreamUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.UNIMPLEMENTED: UnsupportedError,
}
_HTTP_ERRORS: dict[int, type[ArbiterError]] = {
    400: InvalidRequestError,
    404: UpstreamUnavailableError,
    413: PayloadTooLargeError,
    429: OverloadedError,
    501: UnsupportedError,
    503: UpstreamUnavailableError,
    504: DeadlineError,
}


class UpstreamModel:
    """One model on a wrapper pod, as an OIP target of the gateway.

    Args:
        key: the model's key in the gateway config.
        ref: where and how to reach it.
    """

    def __init__(self, key: str, ref: ModelRef) -> None:
        self.key = key
        self.name = ref.name
        self.ref = ref
        self._metadata: ModelMetadata | None = None

    def metadata(self) -> ModelMetadata:
        """The pod's metadata for the model (fetched by :meth:`fetch_metadata`).

        Raises:
            UpstreamUnavailableError: not fetched yet.
        """
        if self._metadata is None:
            raise UpstreamUnavailableError(f"model {self.key!r} has not been reached yet")
        return self._metadata

    def ready(self) -> bool:
        """Whether the model's metadata has been fetched."""
        return self._metadata is not None

    def _prepare(self, request: InferenceRequest) -> InferenceRequest:
        return InferenceRequest(
            self.ref.name, request.inputs, self.ref.version, request.id, request.outputs,
            request.parameters,
        )

    async def wait_ready(self, timeout_s: float) -> ModelMetadata:
        """Fetch the metadata, retrying until ``timeout_s`` seconds have passed.

        Raises:
            UpstreamUnavailableError: still unreachable at the end.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        next_note = loop.time() + 5
        while True:
            try:
                self._metadata = await self.fetch_metadata()
                log.info("model %r reached at %s", self.key, self.ref.url)
                return self._metadata
            except ArbiterError as exc:
                if loop.time() >= next_note:
                    log.warning("waiting for model %r at %s (%.0f s left): %s", self.key,
                                self.ref.url, deadline - loop.time(), exc.message)
                    next_note = loop.time() + 5
                if loop.time() >= deadline:
                    raise UpstreamUnavailableError(
                        f"model {self.key!r} at {self.ref.url} did not answer within "
                        f"{timeout_s:.0f} s: {exc.message}"
                    ) from None
                await asyncio.sleep(0.25)

    async def fetch_metadata(self) -> ModelMetadata:  # pragma: no cover - abstract
        raise NotImplementedError

    async def model_ready(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    async def infer(self, request: InferenceRequest) -> InferenceResponse:  # pragma: no cover
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class GrpcUpstream(UpstreamModel):
    """A model reached over gRPC, through ``connections`` channels used in turn."""

    def __init__(self, key: str, ref: ModelRef) -> None:
        super().__init__(key, ref)
        options = [
            ("grpc.max_receive_message_length", 256 * 2**20),
            ("grpc.max_send_message_length", 256 * 2**20),
            # a restarted pod is reached within 2 s, not after gRPC's default backoff
            # (up to 120 s), so its breaker's probe can close again
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self._channels = [
            _channel(ref, [*options, ("grpc.channel_pool_id", i)]) for i in range(ref.connections)
        ]
        token = ref.token()
        self._auth_metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stubs = itertools.cycle(
            [pb_grpc.GRPCInferenceServiceStub(c) for c in self._channels]
        )

    async def fetch_metadata(self) -> ModelMetadata:
        message = pb.ModelMetadataRequest(name=self.ref.name, version=self.ref.version or "")
        try:
            reply = await next(self._stubs).ModelMetadata(
                message, timeout=self.ref.timeout_s, metadata=self._auth_metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return ModelMetadata(
            name=reply.name, platform=reply.platform, versions=list(reply.versions),
            inputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in reply.inputs],
            outputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in reply.outputs],
        )

    async def model_ready(self) -> bool:
        """OIP ``ModelReady`` of the model (the breaker's probe).

        Raises:
            ArbiterError: the pod could not be asked (unreachable, deadline, ...).
        """
        message = pb.ModelReadyRequest(name=self.ref.name, version=self.ref.version or "")
        try:
            reply = await next(self._stubs).ModelReady(
                message, timeout=self.ref.timeout_s, metadata=self._auth_metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return bool(reply.ready)

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        message = grpc_codec.request_to_pb(self._prepare(request))
        try:
            reply = await next(self._stubs).ModelInfer(
                message, timeout=self.ref.timeout_s, metadata=self._auth_metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        try:
            return grpc_codec.response_from_pb(reply)
        except ArbiterError as exc:  # the pod's fault, not the client's
            raise InferenceError(
                f"model {self.key!r}: malformed answer from the pod: {exc.message}") from None

    def _error(self, exc: grpc.aio.AioRpcError) -> ArbiterError:
        cls = _GRPC_ERRORS.get(exc.code(), InferenceError)
        details = exc.details() or ""
        if exc.code() in _TRANSPORT_CODES and _names_an_address(details, self.ref):
            log.warning("model %r at %s: %s %s", self.key, self.ref.url, exc.code().name,
                        details)  # the address goes to the log only
            return cls(f"model {self.key!r}: {_TRANSPORT_CODES[exc.code()]}")
        return cls(f"model {self.key!r}: {details or exc.code().name}")

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels), return_exceptions=True)


class HttpUpstream(UpstreamModel):
    """A model reached over REST with the binary tensor extension, on kept-alive
    connections (:class:`~gateway.http_pool.HttpPool`, ``connections`` x 16 at most)."""

    def __init__(self, key: str, ref: ModelRef) -> None:
        super().__init__(key, ref)
        url = urlsplit(ref.url)
        host = url.hostname or "127.0.0.1"
        port = url.port or (443 if ref.tls else 80)
        token = ref.token()
        path = url.path.rstrip("/") + f"/v2/models/{quote(ref.name, safe='')}" + (
            f"/versions/{quote(ref.version, safe='')}" if ref.version else "")
        fixed = f"Host: {url.netloc}\r\n" + (
            f"Authorization: Bearer {token}\r\n" if token else "")
        self._meta_head = f"GET {path} HTTP/1.1\r\n{fixed}".encode("latin-1")
        self._ready_head = f"GET {path}/ready HTTP/1.1\r\n{fixed}".encode("latin-1")
        self._infer_head = (f"POST {path}/infer HTTP/1.1\r\n{fixed}"
                            "Content-Type: application/octet-stream\r\n").encode("latin-1")
        self._host, self._port = host, port
        self._pool: HttpPool | None = None

    def _connections(self) -> HttpPool:
        if self._pool is None:
            ssl_context = _client_tls(self.ref).ssl_context() if self.ref.tls else None
            # idle connections closed after 10 s: before a pod's 15 s keep-alive timer
            self._pool = HttpPool(self._host, self._port, ssl_context=ssl_context,
                                  limit=self.ref.connections * 16, keepalive_s=10.0)
        return self._pool

    async def _call(self, head: bytes, body: bytes = b"") -> Response:
        try:
            return await self._connections().request(head, body, timeout_s=self.ref.timeout_s)
        except TimeoutError:
            raise DeadlineError(
                f"model {self.key!r} did not answer within {self.ref.timeout_s} s"
            ) from None
        except (PodConnectionError, OSError) as exc:  # names the address: logged only
            log.warning("model %r at %s unreachable: %s", self.key, self.ref.url, exc)
            raise UpstreamUnavailableError(f"model {self.key!r} unreachable") from None

    def _check(self, status: int, body: bytes) -> None:
        if status == 200:
            return
        try:
            message = jsonc.loads(body).get("error", "")
        except Exception:
            message = body[:200].decode(errors="replace")
        if status in (401, 403):
            message = "the pod refused the gateway's credentials"
        cls = _HTTP_ERRORS.get(status, InferenceError)
        raise cls(f"model {self.key!r}: {message or status}")

    async def fetch_metadata(self) -> ModelMetadata:
        reply = await self._call(self._meta_head)
        self._check(reply.status, reply.body)
        doc = jsonc.loads(reply.body)

        def tensors(items):
            return [TensorMetadata(t["name"], t["datatype"], list(t["shape"])) for t in items]

        return ModelMetadata(
            name=doc["name"], platform=doc.get("platform", ""),
            versions=list(doc.get("versions", [])),
            inputs=tensors(doc.get("inputs", [])), outputs=tensors(doc.get("outputs", [])),
        )

    async def model_ready(self) -> bool:
        """OIP ``GET /v2/models/{m}[/versions/{v}]/ready`` (the breaker's probe):
        200 is ready, anything else not.

        Raises:
            ArbiterError: the pod could not be reached, or no answer in time.
        """
        return (await self._call(self._ready_head)).status == 200

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        body, length = binary.request_to_binary(self._prepare(request), binary_outputs=True)
        reply = await self._call(
            self._infer_head + b"%s: %d\r\n" % (_BINARY_HEADER, length), body)
        self._check(reply.status, reply.body)
        header_length = reply.headers.get(_BINARY_HEADER_KEY)
        try:
            if header_length is not None:
                return binary.response_from_binary(reply.body, int(header_length))
            return jsonc.response_from_json(jsonc.loads(reply.body))
        except (ArbiterError, ValueError) as exc:  # the pod's fault, not the client's
            detail = exc.message if isinstance(exc, ArbiterError) else str(exc)
            raise InferenceError(
                f"model {self.key!r}: malformed answer from the pod: {detail}") from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


_BINARY_HEADER = binary.HEADER.encode("latin-1")
_BINARY_HEADER_KEY = binary.HEADER.lower()


_TRANSPORT_CODES = {
    grpc.StatusCode.UNAVAILABLE: "unreachable",
    grpc.StatusCode.UNKNOWN: "transport error",
    grpc.StatusCode.UNAUTHENTICATED: "the pod refused the gateway's credentials",
    grpc.StatusCode.PERMISSION_DENIED: "the pod refused the gateway's credentials",
}


_ADDRESS = re.compile(r"ipv[46]:|unix:|dns:|addresses|\d+\.\d+\.\d+\.\d+|:\d{2,5}\b")


def _names_an_address(details: str, ref: ModelRef) -> bool:
    """Whether gRPC's error text is the transport's (naming addresses) rather than the
    pod's own message."""
    host = ref.address.rsplit(":", 1)[0]
    return not details or host in details or bool(_ADDRESS.search(details))


def _client_tls(ref: ModelRef) -> ClientTls:
    return ClientTls(ref.ca_file, ref.client_cert, ref.client_key)


def _channel(ref: ModelRef, options: list) -> grpc.aio.Channel:
    if ref.tls:
        return grpc.aio.secure_channel(ref.address, _client_tls(ref).grpc_credentials(),
                                       options=options)
    return grpc.aio.insecure_channel(ref.address, options=options)


def connect(key: str, ref: ModelRef) -> UpstreamModel:
    """The client for ``ref``'s protocol (``grpc[s]://`` or ``http[s]://``)."""
    return GrpcUpstream(key, ref) if ref.protocol == "grpc" else HttpUpstream(key, ref)
