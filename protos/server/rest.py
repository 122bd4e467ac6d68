"""REST adapter: the OIP HTTP/JSON API (and Triton's binary extension) over aiohttp.

One error table: every :class:`~protos.errors.ArbiterError` becomes its status with
``{"error": message}``; aiohttp's own HTTP errors (unknown route, method, body over the
limit) keep their status with the same body; anything else is a logged 500 with a
generic message. A body with no Content-Type is parsed as JSON (tritonclient sends
none).

Slow and departed clients: a request body must arrive within ``body_timeout_s`` (408
otherwise), read by the innermost middleware before any handler; headers are bounded by
the server's keep-alive timer (``ServerOptions.header_timeout_s``). A client that
disconnects cancels its handler (``handler_cancellation``) and is counted with code
``499`` (the status nginx logs for it), without a traceback.

Source: OIP ``inference_rest.md`` (paths, health semantics); Triton
``extension_binary_data.md``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from protos.codecs import binary
from protos.codecs import json as jsonc
from protos.codecs.limits import DEFAULT_MAX_ELEMENTS
from protos.errors import ArbiterError, InvalidRequestError, PayloadTooLargeError
from protos.protocol import ModelMetadata
from protos.registry import ModelRegistry
from protos.server.auth import AuthPolicy, auth_middleware
from protos.server.http import (
    JSON_TYPE,
    MAX_ELEMENTS_KEY,
    METRICS_KEY,
    REGISTRY_KEY,
    error_response,
    json_response,
)
from protos.server.metrics import ServerMetrics
from protos.server.triton import add_triton_routes
from protos.server.v1 import add_v1_routes

__all__ = ["build_app", "body_json", "metadata_doc", "DISCONNECTED"]

DISCONNECTED = "499"
"""Code label of a request whose client disconnected before its answer."""

log = logging.getLogger("arbiter.rest")

def _from_error(exc: Exception) -> web.Response:
    if isinstance(exc, ArbiterError):
        return error_response(exc.status, exc.message, exc.retry_after_s)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, PayloadTooLargeError.__doc__ or "payload too large")
    if isinstance(exc, web.HTTPException):
        return error_response(exc.status, exc.reason)
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal server error")


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable]):
    try:
        return await handler(request)
    except Exception as exc:  # the one error table of this transport
        return _from_error(exc)


def _health(value: bool, key: str) -> web.Response:
    return json_response({key: value}, 200 if value else 503)


async def _live(request: web.Request) -> web.Response:
    return _health(request.app[REGISTRY_KEY].live(), "live")


async def _ready(request: web.Request) -> web.Response:
    return _health(request.app[REGISTRY_KEY].ready(), "ready")


async def _server_metadata(request: web.Request) -> web.Response:
    return json_response(request.app[REGISTRY_KEY].server_metadata())


def metadata_doc(metadata: ModelMetadata) -> dict[str, object]:
    """The OIP model-metadata JSON object."""

    def tensors(specs):
        return [
            {"name": t.name, "datatype": t.datatype, "shape": t.shape,
             **({"parameters": t.parameters} if t.parameters else {})}
            for t in specs
        ]

    doc: dict[str, object] = {"name": metadata.name}
    if metadata.versions:
        doc["versions"] = metadata.versions
    doc["platform"] = metadata.platform
    doc["inputs"] = tensors(metadata.inputs)
    doc["outputs"] = tensors(metadata.outputs)
    if metadata.parameters:
        doc["parameters"] = metadata.parameters
    return doc


async def _model_metadata(request: web.Request) -> web.Response:
    info = request.match_info
    target = request.app[REGISTRY_KEY].get(info["model"], info.get("version"))
    return json_response(metadata_doc(target.metadata()))


async def _model_ready(request: web.Request) -> web.Response:
    info = request.match_info
    ready = request.app[REGISTRY_KEY].model_ready(info["model"], info.get("version"))
    return json_response({"name": info["model"], "ready": ready}, 200 if ready else 503)


async def _read_body(request: web.Request, timeout_s: float) -> None:
    """Read the whole body within ``timeout_s`` seconds (kept by aiohttp for the
    handler's ``read()``); no timer when it has already arrived.

    Raises:
        HTTPRequestTimeout: the body is still incomplete after ``timeout_s``.
    """
    if not request.can_read_body or request.content.is_eof():
        return
    try:
        async with asyncio.timeout(timeout_s):
            await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            reason=f"request body not received within {timeout_s:g} s") from None


def _body_deadline(timeout_s: float):
    """Middleware: the whole body within ``timeout_s`` seconds, else 408."""

    @web.middleware
    async def read_body(request: web.Request, handler: Callable[[web.Request], Awaitable]):
        await _read_body(request, timeout_s)
        return await handler(request)

    return read_body


def _errors_and_body(timeout_s: float):
    """The two middlewares :func:`_errors` and :func:`_body_deadline` in one (one
    coroutine frame less per request), for a server with no auth between them."""

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable]):
        try:
            await _read_body(request, timeout_s)
            return await handler(request)
        except Exception as exc:  # the one error table of this transport
            return _from_error(exc)

    return guard


async def _infer(request: web.Request) -> web.Response:
    start = time.perf_counter()
    name = request.match_info["model"]
    code = "200"
    try:
        return await _infer_inner(request, name)
    except asyncio.CancelledError:  # the client disconnected
        code = DISCONNECTED
        raise
    except Exception as exc:
        reply = _from_error(exc)
        code = str(reply.status)
        return reply
    finally:
        request.app[METRICS_KEY].observe(name, "rest", code, time.perf_counter() - start)


async def _infer_inner(request: web.Request, name: str) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    version = request.match_info.get("version")
    body = await request.read()
    limit = request.app[MAX_ELEMENTS_KEY]
    header_length = request.headers.get(binary.HEADER)
    if header_length is not None:
        length = _int_header(header_length)
        metadata = registry.get(name, version).metadata() if length == 0 else None
        req, prefs = binary.request_from_binary(
            body, length, name, version, metadata, max_elements=limit)
    else:
        req, prefs = jsonc.request_from_json(
            jsonc.loads(body), name, version, max_elements=limit)
    req.headers = {k.lower(): v for k, v in request.headers.items()}
    resp = await registry.infer(req)
    headers = dict(resp.headers) if resp.headers else None
    if prefs.any:
        payload, length = binary.response_to_binary(resp, prefs)
        if length is not None:
            headers = {**(headers or {}), binary.HEADER: str(length)}
            return web.Response(
                body=payload, content_type="application/octet-stream", headers=headers
            )
    else:
        payload = jsonc.response_to_json(resp)
    return web.Response(body=payload, content_type=JSON_TYPE, headers=headers)


def _int_header(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidRequestError(f"{binary.HEADER} must be an integer") from None


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS_KEY].registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # --workers: the sums of every worker
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _repository_index(request: web.Request) -> web.Response:
    raw = await request.read()
    doc = jsonc.loads(raw) if raw.strip() else {}
    if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
        raise InvalidRequestError('repository index body must be {"ready": true|false} or empty')
    return json_response(request.app[REGISTRY_KEY].index(ready_only=doc.get("ready", False)))


async def _repository_load(request: web.Request) -> web.Response:
    await request.app[REGISTRY_KEY].load(request.match_info["model"])
    return json_response({})


async def _repository_unload(request: web.Request) -> web.Response:
    await request.app[REGISTRY_KEY].unload(request.match_info["model"])
    return json_response({})


def build_app(
    registry: ModelRegistry,
    metrics: ServerMetrics,
    *,
    max_body_bytes: int = 64 * 2**20,
    max_tensor_elements: int = DEFAULT_MAX_ELEMENTS,
    extra_routes: Callable[[web.Application], None] | None = None,
    auth: AuthPolicy | None = None,
    body_timeout_s: float = 60.0,
) -> web.Application:
    """The aiohttp application serving ``registry``.

    Args:
        registry: targets served.
        metrics: request metrics (also served at ``GET /metrics``).
        max_body_bytes: bodies over this many bytes get 413.
        max_tensor_elements: a request tensor whose shape implies more elements gets
            400 before anything is allocated.
        extra_routes: adds product routes (the gateway's feedback, decisions, admin).
        auth: bearer tokens and route scopes (checked before any handler); None: open.
        body_timeout_s: a body not received within this many seconds gets 408.
    """
    if auth is None:
        middlewares = [_errors_and_body(body_timeout_s)]
    else:  # auth before the body is read: a refused caller's body is never awaited
        middlewares = [_errors, auth_middleware(auth), _body_deadline(body_timeout_s)]
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = metrics
    app[MAX_ELEMENTS_KEY] = max_tensor_elements
    add = app.router.add_route
    # inference first: aiohttp tries the routes sharing a path prefix in order
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        add("POST", prefix + "/infer", _infer)
    add("GET", "/v2/health/live", _live)
    add("GET", "/v2/health/ready", _ready)
    add("GET", "/v2", _server_metadata)
    add("GET", "/metrics", _metrics)
    add("POST", "/v2/repository/index", _repository_index)
    add("POST", "/v2/repository/models/{model}/load", _repository_load)
    add("POST", "/v2/repository/models/{model}/unload", _repository_unload)
    add_triton_routes(app)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        add("GET", prefix, _model_metadata)
        add("GET", prefix + "/ready", _model_ready)
    add_v1_routes(app)
    if extra_routes is not None:
        extra_routes(app)
    return app


def body_json(raw: bytes) -> object:
    """Parse a request body as JSON for product routes.

    Raises:
        InvalidRequestError: malformed JSON.
    """
    return jsonc.loads(raw)

