"""What every REST route of the server stack shares: the typed app keys and the JSON
response helpers (``{"error": message}`` for errors)."""

from __future__ import annotations

from aiohttp import web

from protos.codecs import json as jsonc
from protos.registry import ModelRegistry
from protos.server.metrics import ServerMetrics

__all__ = [
    "REGISTRY_KEY",
    "METRICS_KEY",
    "MAX_ELEMENTS_KEY",
    "JSON_TYPE",
    "json_response",
    "error_response",
]

JSON_TYPE = "application/json"
REGISTRY_KEY = web.AppKey("registry", ModelRegistry)
METRICS_KEY = web.AppKey("metrics", ServerMetrics)
MAX_ELEMENTS_KEY = web.AppKey("max_tensor_elements", int)
"""Most elements one request tensor's shape may imply (``ServerOptions``)."""


def json_response(doc: object, status: int = 200, headers: dict[str, str] | None = None):
    """An ``application/json`` response serialised with orjson."""
    return web.Response(
        body=jsonc.dumps(doc), status=status, content_type=JSON_TYPE, headers=headers
    )


def error_response(status: int, message: str, retry_after_s: int | None = None):
    """``{"error": message}`` with ``status`` (and ``Retry-After`` when given)."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
    return json_response({"error": message}, status, headers)


