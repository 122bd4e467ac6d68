"""REST routes of Triton's model-configuration and statistics extensions.

========  ===============================================  =============================
verb      path                                             body
========  ===============================================  =============================
GET       /v2/models/{m}[/versions/{v}]/config             Triton ``ModelConfig`` JSON
GET       /v2/models/stats                                 ``{"model_stats": [...]}``
GET       /v2/models/{m}[/versions/{v}]/stats              ``{"model_stats": [...]}``
========  ===============================================  =============================

``/v2/models/stats`` is matched before ``/v2/models/{m}``, as in Triton (a model named
``stats`` is reached through its versioned path). The gRPC ``ModelConfig`` and
``ModelStatistics`` RPCs serve the same documents (``protos/server/grpc.py``).

Source: Triton ``docs/protocol/extension_model_configuration.md`` and
``extension_statistics.md``.
"""

from __future__ import annotations

from aiohttp import web

from protos.server.http import REGISTRY_KEY, json_response
from protos.statistics import statistics_doc

__all__ = ["add_triton_routes"]


async def _config(request: web.Request) -> web.Response:
    info = request.match_info
    return json_response(request.app[REGISTRY_KEY].model_config(info["model"],
                                                                 info.get("version")))


async def _all_stats(request: web.Request) -> web.Response:
    return json_response(statistics_doc(request.app[REGISTRY_KEY].statistics()))


async def _stats(request: web.Request) -> web.Response:
    info = request.match_info
    docs = request.app[REGISTRY_KEY].statistics(info["model"], info.get("version"))
    return json_response(statistics_doc(docs))


def add_triton_routes(app: web.Application) -> None:
    """Add the config and statistics routes (before the OIP ``/v2/models/{m}`` routes)."""
    app.router.add_get("/v2/models/stats", _all_stats)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.router.add_get(prefix + "/config", _config)
        app.router.add_get(prefix + "/stats", _stats)
