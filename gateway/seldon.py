"""Seldon Core v1's prediction API on the gateway, for clients migrating from Seldon
Core: the same requests reach an Arbiter deployment, and come back as decisions.

REST (``SeldonMessage`` JSON):

========  ======================================================  ==========================
verb      path                                                    what
========  ======================================================  ==========================
POST      /api/v1.0/predictions                                   the only deployment
POST      /seldon/{namespace}/{deployment}/api/v1.0/predictions   a named deployment
POST      /api/v1.0/feedback                                      ``{request, response,
POST      /seldon/{namespace}/{deployment}/api/v1.0/feedback      reward, truth}``
========  ======================================================  ==========================

gRPC: ``seldon.protos.Seldon`` ``Predict`` and ``SendFeedback`` (``protos/seldon.proto``);
the deployment is named by the ``seldon`` metadata key, as Seldon's ingress routes it
(needed when the gateway serves several). The namespace is accepted and not used.

A prediction goes through the registry like any OIP request (readiness, statistics,
decisions); :mod:`gateway.seldon_messages` converts the payload. The answer carries
``meta.puid`` (the request id: ``meta.puid`` or the ``Seldon-Puid`` header when sent,
also returned as that header), ``meta.tags`` (the request's tags plus ``decision_id``,
``routed_model``, ``router``), ``meta.routing`` (``{deployment: index of the routed
model among the router's models}``, as Seldon's routers reported) and
``meta.requestPath`` (``{model key: model name}``).

Feedback finds its decision by ``response.meta.tags.decision_id`` (the prediction's
answer sent back, as Seldon clients do); ``truth`` is used when sent (it scores every
model the decision recorded), else ``reward``. Over gRPC ``reward`` cannot be told
apart from an absent one (proto3), so a feedback without ``truth`` is a reward.

Errors are Seldon's ``{"status": {"code", "info", "reason", "status": "FAILURE"}}``
with Arbiter's HTTP status (``code`` is that status; ``reason`` its gRPC name, such as
``INVALID_ARGUMENT``); over gRPC, the status of the error table.

Source: Seldon Core v1 "External Prediction API" and "Seldon Deployment REST API".
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Protocol

from aiohttp import web
from google.protobuf import json_format

from gateway.seldon_messages import answer_payload, payload_kind, request_tensor, truth_value
from protos import seldon_pb2, seldon_pb2_grpc
from protos.codecs import json as jsonc
from protos.codecs.limits import DEFAULT_MAX_ELEMENTS
from protos.errors import ArbiterError, InvalidRequestError, UnsupportedError
from protos.protocol import InferenceRequest, RequestedOutput
from protos.registry import ModelRegistry
from protos.server.auth import FEEDBACK, INFER
from protos.server.grpc import guarded
from protos.server.http import MAX_ELEMENTS_KEY, METRICS_KEY, json_response
from protos.server.metrics import ServerMetrics

__all__ = [
    "SeldonGateway", "SeldonAPI", "add_seldon_routes", "add_seldon_service", "seldon_error",
    "SELDON_GRPC_SCOPES", "SELDON_REST_SCOPES",
]

log = logging.getLogger("arbiter.seldon")

EXTENSION = "seldon_v1"
"""Advertised at ``GET /v2`` when the Seldon routes are served."""

_PREFIXES = ("", "/seldon/{namespace}/{deployment}")
_VERSIONS = ("v1.0", "v0.1")
SELDON_REST_SCOPES = {
    ("POST", f"{prefix}/api/{version}/{path}"): scope
    for prefix in _PREFIXES for version in _VERSIONS
    for path, scope in (("predictions", INFER), ("feedback", FEEDBACK))
}
"""Scope of each Seldon REST route (``protos/server/auth.py``)."""
SELDON_GRPC_SCOPES = {
    "/seldon.protos.Seldon/Predict": INFER,
    "/seldon.protos.Seldon/SendFeedback": FEEDBACK,
}
"""Scope of each ``seldon.protos.Seldon`` RPC."""


class SeldonGateway(Protocol):
    """What the Seldon endpoints use of a :class:`gateway.app.Gateway`."""

    deployments: dict[str, Any]
    registry: ModelRegistry
    config: Any

    def deployment(self, name: str) -> Any:
        """The deployment ``name`` (raises ModelNotFoundError)."""
        ...

    async def feedback(self, name: str, body: Any) -> list[dict[str, Any]]:
        """Apply feedback items to deployment ``name``."""
        ...


class SeldonAPI:
    """The Seldon endpoints' core, shared by REST and gRPC.

    Args:
        gateway: the gateway whose deployments are served.

    Attributes:
        metrics: request metrics (protocol ``seldon``), once the REST routes are added.
        max_elements: most elements a request tensor may hold.
    """

    def __init__(self, gateway: SeldonGateway) -> None:
        self.gateway = gateway
        self.metrics: ServerMetrics | None = None
        self.max_elements = DEFAULT_MAX_ELEMENTS

    def deployment_name(self, name: str | None) -> str:
        """The deployment addressed: ``name``, or the only one when ``name`` is None.

        Raises:
            InvalidRequestError: no name and several deployments (naming them).
        """
        if name:
            return name
        names = sorted(self.gateway.deployments)
        if len(names) == 1:
            return names[0]
        raise InvalidRequestError(
            f"this gateway serves several deployments ({', '.join(names)}); use "
            "POST /seldon/{namespace}/{deployment}/api/v1.0/predictions (or /feedback), "
            "or over gRPC the metadata key 'seldon'")

    async def predict(
        self, message: Any, deployment: str | None, headers: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Answer one SeldonMessage: (answer document, response headers).

        Raises:
            InvalidRequestError, ModelNotFoundError, UnsupportedError, ArbiterError: the
                message is malformed, the deployment unknown, or the request failed.
        """
        name = self.deployment_name(deployment)
        target = self.gateway.deployment(name)
        kind = payload_kind(message)
        metadata = target.metadata()
        if not metadata.inputs or not metadata.outputs:
            raise UnsupportedError(f"deployment {name!r} does not declare inputs and outputs")
        tensor = request_tensor(message, kind, metadata.inputs[0], self.max_elements)
        meta = _request_meta(message)
        output = metadata.outputs[0].name
        request = InferenceRequest(name, [tensor], id=meta.get("puid") or
                                   headers.get("seldon-puid") or None,
                                   outputs=[RequestedOutput(output)])
        request.headers = dict(headers)
        response = await self.gateway.registry.infer(request)
        params = response.parameters
        routed = str(params.get("routed_model", ""))
        models = list(target.router.models)
        ref = self.gateway.config.models.get(routed)
        answer_meta = {
            "puid": response.id,
            "tags": {**meta.get("tags", {}), "decision_id": params.get("decision_id"),
                     "routed_model": routed, "router": params.get("router"),
                     **({"feedback_token": params["feedback_token"]}
                        if "feedback_token" in params else {})},
            "routing": {name: models.index(routed)} if routed in models else {},
            "requestPath": {routed: ref.name} if ref is not None else {},
        }
        answer = {"meta": answer_meta, **answer_payload(response.output(output), kind)}
        return answer, {**response.headers, "Seldon-Puid": str(response.id)}

    async def feedback(self, message: Any, deployment: str | None) -> dict[str, Any]:
        """Apply one Seldon ``Feedback``; the answer's ``meta.tags`` carry the decision
        id, the feedback status (``accepted`` or ``duplicate``), what was used
        (``truth`` or ``reward``) and the rewards per model.

        Raises:
            InvalidRequestError, DecisionNotFoundError, ModelNotFoundError.
        """
        name = self.deployment_name(deployment)
        self.gateway.deployment(name)
        decision_id, puid = _decision_of(message)
        if message.get("truth") is not None:
            used, item = "truth", {"decision_id": decision_id,
                                   "truth": truth_value(message["truth"])}
        elif message.get("reward") is not None:
            used, item = "reward", {"decision_id": decision_id, "reward": message["reward"]}
        else:
            raise InvalidRequestError("feedback needs a 'reward' (in [0, 1]) or a 'truth'")
        token = message["response"]["meta"]["tags"].get("feedback_token")
        if token is not None:  # the answer's own token, sent back with it
            item["feedback_token"] = token
        [result] = await self.gateway.feedback(name, [item])
        status = result["status"]
        tags = {"decision_id": decision_id, "feedback": status, "used": used,
                "rewards": result.get("rewards", {})}
        return {
            "meta": {"puid": puid, "tags": tags} if puid else {"tags": tags},
            "status": {"code": 200, "info": f"feedback {status}", "reason": "",
                       "status": "SUCCESS"},
        }


def _request_meta(message: dict) -> dict[str, Any]:
    meta = message.get("meta") or {}
    if not isinstance(meta, dict):
        raise InvalidRequestError("'meta' must be an object")
    if not isinstance(meta.get("tags", {}), dict):
        raise InvalidRequestError("meta.tags must be an object")
    puid = meta.get("puid")
    if puid is not None and not isinstance(puid, str):
        raise InvalidRequestError("meta.puid must be a string")
    return meta


def _decision_of(message: Any) -> tuple[str, str | None]:
    """(decision id, puid) of a Seldon Feedback, from its ``response.meta``."""
    if not isinstance(message, dict):
        raise InvalidRequestError("feedback body must be a Seldon Feedback JSON object")
    if "decision_id" in message and "response" not in message:
        raise InvalidRequestError(
            "this path expects a Seldon Core Feedback ({request, response, reward, truth}); "
            "Arbiter's feedback items go to POST /v2/deployments/{deployment}/feedback")
    response = message.get("response")
    meta = response.get("meta") if isinstance(response, dict) else None
    tags = meta.get("tags") if isinstance(meta, dict) else None
    decision_id = tags.get("decision_id") if isinstance(tags, dict) else None
    if not isinstance(decision_id, str) or not decision_id:
        raise InvalidRequestError(
            "feedback needs response.meta.tags.decision_id: send back the prediction's "
            "answer as it was returned")
    puid = meta.get("puid")
    return decision_id, puid if isinstance(puid, str) else None


_APIS: weakref.WeakKeyDictionary[SeldonGateway, SeldonAPI] = weakref.WeakKeyDictionary()


def _api(gateway: SeldonGateway) -> SeldonAPI:
    """The one :class:`SeldonAPI` of ``gateway`` (shared by its REST routes and its gRPC
    service, which are added at different times)."""
    api = _APIS.get(gateway)
    if api is None:
        api = _APIS[gateway] = SeldonAPI(gateway)
    return api


# -- REST ---------------------------------------------------------------------------

def seldon_error(exc: BaseException) -> web.Response:
    """A Seldon failure body with the status of Arbiter's error table."""
    if isinstance(exc, ArbiterError):
        status, reason, info = exc.status, exc.grpc_code, exc.message
    elif isinstance(exc, web.HTTPException):
        status, reason, info = exc.status, exc.reason.upper().replace(" ", "_"), exc.reason
    else:
        log.exception("unexpected error", exc_info=exc)
        status, reason, info = 500, "INTERNAL", "internal server error"
    body = {"status": {"code": status, "info": info, "reason": reason, "status": "FAILURE"}}
    headers = {"Retry-After": str(exc.retry_after_s)} if getattr(
        exc, "retry_after_s", None) else None
    return json_response(body, status, headers)


def _handler(api: SeldonAPI, call):
    async def handle(request: web.Request) -> web.Response:
        start = time.perf_counter()
        deployment = request.match_info.get("deployment")
        status = 200
        try:
            message = jsonc.loads(await request.read())
            doc, headers = await call(api, message, deployment, request)
            return json_response(doc, headers=headers)
        except Exception as exc:  # Seldon's error shape for every failure of these paths
            reply = seldon_error(exc)
            status = reply.status
            return reply
        finally:
            if api.metrics is not None:
                label = deployment or _only(api)
                api.metrics.observe(label, "seldon", str(status), time.perf_counter() - start)

    return handle


def _only(api: SeldonAPI) -> str:
    names = list(api.gateway.deployments)
    return names[0] if len(names) == 1 else ""


async def _predict(api: SeldonAPI, message, deployment, request: web.Request):
    headers = {k.lower(): v for k, v in request.headers.items()}
    return await api.predict(message, deployment, headers)


async def _feedback(api: SeldonAPI, message, deployment, request: web.Request):
    return await api.feedback(message, deployment), {}


def add_seldon_routes(app: web.Application, gateway: SeldonGateway) -> None:
    """Serve the Seldon REST paths of ``gateway`` on ``app`` (and advertise
    ``seldon_v1`` at ``GET /v2``)."""
    api = _api(gateway)
    api.metrics = app[METRICS_KEY]
    api.max_elements = app[MAX_ELEMENTS_KEY]
    if EXTENSION not in gateway.registry.extensions:
        gateway.registry.extensions.append(EXTENSION)
    for prefix in _PREFIXES:
        for version in _VERSIONS:
            app.router.add_post(f"{prefix}/api/{version}/predictions", _handler(api, _predict))
            app.router.add_post(f"{prefix}/api/{version}/feedback", _handler(api, _feedback))


# -- gRPC ---------------------------------------------------------------------------

class SeldonServicer(seldon_pb2_grpc.SeldonServicer):
    """``seldon.protos.Seldon``: Predict and SendFeedback over :class:`SeldonAPI`."""

    def __init__(self, api: SeldonAPI) -> None:
        self.api = api

    async def Predict(self, request, context):  # noqa: N802 - proto names
        start = time.perf_counter()
        headers = _grpc_metadata(context)
        code = "OK"
        try:
            doc = json_format.MessageToDict(request, preserving_proto_field_name=True)
            answer, reply_headers = await self.api.predict(doc, headers.get("seldon"), headers)
            context.set_trailing_metadata(
                tuple((k.lower(), v) for k, v in reply_headers.items()))
            return json_format.ParseDict(answer, seldon_pb2.SeldonMessage())
        except Exception as exc:
            code = exc.grpc_code if isinstance(exc, ArbiterError) else "INTERNAL"
            raise
        finally:
            if self.api.metrics is not None:
                label = headers.get("seldon") or _only(self.api)
                self.api.metrics.observe(label, "seldon_grpc", code, time.perf_counter() - start)

    async def SendFeedback(self, request, context):  # noqa: N802
        doc = json_format.MessageToDict(request, preserving_proto_field_name=True)
        doc.pop("reward", None)
        if not request.HasField("truth"):
            doc["reward"] = request.reward
        answer = await self.api.feedback(doc, _grpc_metadata(context).get("seldon"))
        return json_format.ParseDict(answer, seldon_pb2.SeldonMessage())


def _grpc_metadata(context) -> dict[str, str]:
    return {k.lower(): v for k, v in (context.invocation_metadata() or ())
            if isinstance(v, str)}


def add_seldon_service(server, gateway: SeldonGateway) -> None:
    """Serve ``seldon.protos.Seldon`` for ``gateway`` on a ``grpc.aio`` server."""
    seldon_pb2_grpc.add_SeldonServicer_to_server(guarded(SeldonServicer(_api(gateway))), server)
