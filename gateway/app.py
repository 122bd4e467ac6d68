"""The gateway process: deployments from a config file, served over OIP REST and gRPC,
plus Arbiter's decision API.

REST, beside the OIP endpoints (each deployment is an OIP model):

========  ===========================================  =================================
verb      path                                         what
========  ===========================================  =================================
POST      /v2/deployments/{deployment}/feedback        ``{"decision_id", "reward"|"truth"
                                                       [, "correction": true]}`` or a list
GET       /v2/decisions/{decision_id}                  the decision record
GET       /v2/decisions/{decision_id}/explanation      its explanation: 200 once final, 202
                                                       while owed (queued on demand)
GET       /v2/deployments                              every deployment's state
GET       /v2/deployments/{deployment}                 router state, shadow agreement
GET       /v2/deployments/{deployment}/fairness        ``?window=all|hour|day|day_of_week
                                                       [&buckets=N]``: figures per group
POST      /v2/deployments/{deployment}/promote         ``{"model": key}`` (champion_challenger)
========  ===========================================  =================================

gRPC: ``arbiter.DecisionService`` (``Feedback``, ``GetDecision``, ``GetExplanation``), beside
``inference.GRPCInferenceService``.

With ``console: {enabled: true}``, the read-only web console at ``/console``
(``gateway/console``).

With ``auth:`` every route needs a bearer token of its scope (:data:`REST_SCOPES`,
:data:`GRPC_SCOPES`, and the stack's own in ``protos/server/auth.py``); only ``admin``
callers see the pods' URLs in deployment state. With a feedback secret each decision
carries a feedback token, required on its feedback where
``feedback.require_decision_token`` says so (``gateway/feedback_tokens.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import signal
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.breaker import build_health
from gateway.config import ConfigError, GatewayConfig, load_config, router_models
from gateway.console import add_console
from gateway.decisions import StoreMetrics, build_store
from gateway.deployment import Deployment
from gateway.explaining import ExplainHub
from gateway.feedback_tokens import TOKEN_FIELD, FeedbackTokens
from gateway.metrics import GatewayMetrics
from gateway.monitoring import FairnessMonitor, watch
from gateway.seldon import (
    SELDON_GRPC_SCOPES,
    SELDON_REST_SCOPES,
    add_seldon_routes,
    add_seldon_service,
)
from gateway.upstream import UpstreamModel, connect
from protos import arbiter_pb2, arbiter_pb2_grpc
from protos.errors import InvalidRequestError, ModelNotFoundError
from protos.registry import ModelRegistry
from protos.server import rest
from protos.server.app import Server, ServerOptions
from protos.server.auth import ADMIN, DECISIONS_READ, FEEDBACK, AuthPolicy, is_admin
from protos.server.grpc import guarded
from protos.server.http import json_response
from routers import build_router

__all__ = ["Gateway", "GRPC_SCOPES", "REST_SCOPES", "build_gateway", "run_gateway"]

log = logging.getLogger("arbiter.gateway")

REST_SCOPES = {
    ("POST", "/v2/deployments/{deployment}/feedback"): FEEDBACK,
    ("GET", "/v2/decisions/{decision_id}"): DECISIONS_READ,
    ("GET", "/v2/decisions/{decision_id}/explanation"): DECISIONS_READ,
    ("GET", "/v2/deployments"): DECISIONS_READ,
    ("GET", "/v2/deployments/{deployment}"): DECISIONS_READ,
    ("GET", "/v2/deployments/{deployment}/fairness"): DECISIONS_READ,
    ("POST", "/v2/deployments/{deployment}/promote"): ADMIN,
    **SELDON_REST_SCOPES,
}
"""Scope of each REST route the gateway adds to the server stack."""

GRPC_SCOPES = {
    "/arbiter.DecisionService/Feedback": FEEDBACK,
    "/arbiter.DecisionService/GetDecision": DECISIONS_READ,
    "/arbiter.DecisionService/GetExplanation": DECISIONS_READ,
    **SELDON_GRPC_SCOPES,
}
"""Scope of each RPC the gateway adds to the server stack."""


class Gateway:
    """Everything a running gateway holds.

    Args:
        config: the validated config.
        upstream_wait_s: how long startup waits for every model pod to answer.
    """

    def __init__(self, config: GatewayConfig, upstream_wait_s: float = 60.0) -> None:
        self.config = config
        self.upstream_wait_s = upstream_wait_s
        self.metrics_registry = CollectorRegistry()
        self.metrics = GatewayMetrics(self.metrics_registry)
        self.store = build_store(config.store, StoreMetrics(
            write_errors=self.metrics.decisions_dropped.inc,
            queue_depth=self.metrics.decision_queue.set,
            health=self.metrics.store_up.set,
        ))
        self.upstreams: dict[str, UpstreamModel] = {
            key: connect(key, ref) for key, ref in config.models.items()
        }
        self.health = build_health(self.upstreams, self.metrics.breaker_state)
        self.explain = ExplainHub(config, self.store, self.metrics)
        secret = config.feedback.resolved_secret
        self.feedback_tokens = FeedbackTokens(secret) if secret else None
        self.monitors: dict[str, FairnessMonitor] = {}
        self.deployments = {name: self._deployment(name) for name in config.deployments}
        self.registry = ModelRegistry(self.deployments.values())
        self.registry.readiness = config.readiness
        self._store_open = False

    async def open_store(self) -> None:
        """Open the decision store (once): connect, create or check the schema, load
        the routers' state.

        Raises:
            StoreError: the store cannot be opened (names its path or host, and why).
        """
        if not self._store_open:
            await self.store.open(list(self.deployments))
            self._store_open = True

    def _deployment(self, name: str) -> Deployment:
        spec = self.config.deployments[name]
        rng = random.Random(spec.seed)
        router = build_router(name, spec.router, rng=rng, clock=time.time,
                              store=self.store.state)
        upstreams = {key: self.upstreams[key] for key in router_models(spec.router)}
        explain = self.explain.hook(name) if spec.explain and spec.explain.mode != "off" else None
        deployment = Deployment(
            name, spec, router, upstreams, self.store, self.metrics, explain,
            on_promotion=self.explain.on_promotion,
            idempotency_window_s=self.config.store.idempotency_window_s,
            wait_for_commit=self.config.store.decision_writes == "before_answer",
            health=self.health, draining=lambda: self.registry.draining,
        )
        deployment.feedback_tokens = self.feedback_tokens
        if spec.monitoring is not None:
            self.monitors[name] = watch(deployment, spec.monitoring, self.metrics)
        return deployment

    async def start(self) -> None:
        """Open the store, reach every model pod, check each deployment's contract,
        start the explainers.

        Raises:
            StoreError: the store cannot be opened.
            UpstreamUnavailableError: a pod did not answer within ``upstream_wait_s``.
            ConfigError: models of one deployment disagree on inputs/outputs.
        """
        await self.open_store()
        self.metrics.decision_queue.set(self.store.pending_writes)
        self.metrics.store_up.set(self.store.healthy)
        for monitor in self.monitors.values():
            await monitor.start()
        await asyncio.gather(*(u.wait_ready(self.upstream_wait_s) for u in self.upstreams.values()))
        self.health.start()
        for deployment in self.deployments.values():
            check_contract(deployment)
            deployment.update_posterior_metrics()
        await self.explain.start(self.deployments)

    async def stop(self) -> None:
        """Drain shadows and explanations, commit queued writes, close the pools."""
        for deployment in self.deployments.values():
            await deployment.drain()
        await self.explain.close()
        for monitor in self.monitors.values():
            await monitor.close()
        await self.store.close()
        await self.health.close()
        for upstream in self.upstreams.values():
            await upstream.close()

    def deployment(self, name: str) -> Deployment:
        """The deployment ``name``.

        Raises:
            ModelNotFoundError: unknown deployment.
        """
        try:
            return self.deployments[name]
        except KeyError:
            raise ModelNotFoundError(f"deployment {name!r} not found") from None

    async def feedback(self, name: str, body: Any) -> list[dict[str, Any]]:
        """Apply one feedback item or a list of them; every item is validated before
        any is applied, so a bad list changes nothing.

        Raises:
            InvalidRequestError, DecisionNotFoundError, ModelNotFoundError.
            PermissionDeniedError: the deployment requires each decision's feedback
                token and an item lacks it (nothing of the list is applied).
        """
        deployment = self.deployment(name)
        items = body if isinstance(body, list) else [body]
        if not items:
            raise InvalidRequestError("feedback list is empty")
        if self.config.requires_decision_token(name):
            assert self.feedback_tokens is not None  # the config validator ensures it
            for item in items:
                self.feedback_tokens.check(item)
        if len(items) > 1:  # one item is validated by feedback() before it changes anything
            for item in items:
                await deployment.check_feedback(item)
        return [await deployment.feedback(item) for item in items]

    def fairness(self, name: str, query: dict[str, str]) -> dict[str, Any]:
        """Fairness figures of a deployment (``window``, ``buckets``: the most recent N,
        default 24); see :meth:`gateway.monitoring.FairnessMonitor.figures`.

        Raises:
            ModelNotFoundError: unknown deployment, or one without monitoring.
            InvalidRequestError: a window it does not monitor, a bad bucket count.
        """
        self.deployment(name)
        monitor = self.monitors.get(name)
        if monitor is None:
            raise ModelNotFoundError(f"deployment {name!r} has no monitoring")
        buckets = query.get("buckets", "24")
        if not buckets.isdigit():
            raise InvalidRequestError(f"'buckets' must be a whole number, got {buckets!r}")
        try:
            return monitor.figures(query.get("window", "all"), int(buckets))
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None

    async def promote(self, name: str, body: Any) -> dict[str, Any]:
        """Manual promotion of a challenger.

        Raises:
            InvalidRequestError: not a champion-challenger deployment, not a challenger,
                or the champion changed meanwhile.
        """
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str):
            raise InvalidRequestError("promotion needs a string 'model'")
        return await self.deployment(name).promote(model)


def check_contract(deployment: Deployment) -> None:
    """Every model of a deployment must share the primary's inputs and outputs.

    Raises:
        ConfigError: naming the model and the difference.
    """
    def contract(meta):
        return (
            [(t.name, t.datatype, list(t.shape)) for t in meta.inputs],
            [(t.name, t.datatype, list(t.shape)) for t in meta.outputs],
        )

    primary_key = deployment.router.primary
    expected = contract(deployment.upstreams[primary_key].metadata())
    for key, upstream in deployment.upstreams.items():
        got = contract(upstream.metadata())
        for i, part in enumerate(("inputs", "outputs")):
            if got[i] != expected[i]:
                raise ConfigError(
                    f"deployment {deployment.name!r}: model {key!r} {part} {got[i]} differ "
                    f"from {primary_key!r} {part} {expected[i]}"
                )


def _routes(gateway: Gateway, auth: AuthPolicy | None = None):
    async def feedback(request: web.Request) -> web.Response:
        body = rest.body_json(await request.read())
        results = await gateway.feedback(request.match_info["deployment"], body)
        return json_response(results if isinstance(body, list) else results[0])

    async def decision(request: web.Request) -> web.Response:
        record = await gateway.store.get(request.match_info["decision_id"])
        return json_response(record)

    async def explanation(request: web.Request) -> web.Response:
        status, doc = await gateway.explain.explanation(request.match_info["decision_id"])
        return json_response(doc, status, {"Retry-After": "1"} if status == 202 else None)

    async def deployments(request: web.Request) -> web.Response:
        admin = is_admin(request)
        return json_response({n: _state(d, admin) for n, d in gateway.deployments.items()})

    async def deployment(request: web.Request) -> web.Response:
        state = _state(gateway.deployment(request.match_info["deployment"]), is_admin(request))
        return json_response(state)

    async def fairness(request: web.Request) -> web.Response:
        return json_response(gateway.fairness(request.match_info["deployment"],
                                              dict(request.query)))

    async def promote(request: web.Request) -> web.Response:
        body = rest.body_json(await request.read())
        return json_response(await gateway.promote(request.match_info["deployment"], body))

    def add(app: web.Application) -> None:
        app.router.add_post("/v2/deployments/{deployment}/feedback", feedback)
        app.router.add_get("/v2/decisions/{decision_id}", decision)
        app.router.add_get("/v2/decisions/{decision_id}/explanation", explanation)
        app.router.add_get("/v2/deployments", deployments)
        app.router.add_get("/v2/deployments/{deployment}", deployment)
        app.router.add_get("/v2/deployments/{deployment}/fairness", fairness)
        app.router.add_post("/v2/deployments/{deployment}/promote", promote)
        add_seldon_routes(app, gateway)
        if gateway.config.console.enabled:
            add_console(app, gateway, auth)

    return add


def _state(deployment: Deployment, admin: bool) -> dict[str, Any]:
    """A deployment's state; the pods' URLs for admin callers only."""
    snapshot = deployment.snapshot()
    if not admin:
        snapshot["models"] = {k: {n: v for n, v in m.items() if n != "url"}
                              for k, m in snapshot.get("models", {}).items()}
    return snapshot


class DecisionServicer(arbiter_pb2_grpc.DecisionServiceServicer):
    """``arbiter.DecisionService``: feedback and decision records over gRPC."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def Feedback(self, request, context):  # noqa: N802 - proto names
        items = []
        for item in request.feedback:
            doc: dict[str, Any] = {"decision_id": item.decision_id}
            if item.WhichOneof("outcome") == "reward":
                doc["reward"] = item.reward
            elif item.WhichOneof("outcome") == "truth_json":
                doc["truth"] = rest.body_json(item.truth_json.encode())
            if item.correction:
                doc["correction"] = True
            if item.feedback_token:
                doc[TOKEN_FIELD] = item.feedback_token
            items.append(doc)
        results = await self.gateway.feedback(request.deployment, items)
        return arbiter_pb2.FeedbackResponse(results=[
            arbiter_pb2.FeedbackResult(decision_id=r["decision_id"], status=r["status"],
                                       rewards=r["rewards"])
            for r in results
        ])

    async def GetDecision(self, request, context):  # noqa: N802
        record = await self.gateway.store.get(request.decision_id)
        return arbiter_pb2.DecisionRecord(json=orjson.dumps(record).decode())

    async def GetExplanation(self, request, context):  # noqa: N802
        status, doc = await self.gateway.explain.explanation(request.decision_id)
        return arbiter_pb2.ExplanationRecord(
            json=orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            pending=status == 202)


def build_gateway(
    config: GatewayConfig, options: ServerOptions, upstream_wait_s: float = 60.0
) -> tuple[Gateway, Server]:
    """The gateway and its (not yet started) server. The config's ``auth:`` applies
    unless ``options`` brings a policy (``--auth-tokens-file``).

    Raises:
        AuthConfigError: the tokens file is missing or invalid.
    """
    gateway = Gateway(config, upstream_wait_s)
    options = dataclasses.replace(options, auth=_auth(config, options.auth))

    def add_decisions(server) -> None:
        arbiter_pb2_grpc.add_DecisionServiceServicer_to_server(
            guarded(DecisionServicer(gateway)), server
        )
        add_seldon_service(server, gateway)

    server = Server(
        gateway.registry, options, metrics_registry=gateway.metrics_registry,
        extra_routes=_routes(gateway, options.auth), extra_services=[add_decisions],
        on_startup=[gateway.start], on_cleanup=[gateway.stop],
    )
    return gateway, server


def _auth(config: GatewayConfig, given: AuthPolicy | None) -> AuthPolicy | None:
    spec = config.auth
    policy = given
    if policy is None and spec is not None:
        policy = AuthPolicy.from_file(spec.tokens_file, open_paths=spec.open_paths,
                                      protect_metrics=spec.protect_metrics)
    if policy is not None:
        policy.add_scopes(REST_SCOPES, GRPC_SCOPES)
    return policy


async def run_gateway(config_path: Path, options: ServerOptions) -> None:
    """``arbiter gateway``: load the config, open the decision store, then bind the
    ports and serve until SIGTERM/SIGINT (either one during startup ends it).

    Raises:
        ConfigError: invalid config file.
        StoreError: the store cannot be opened (before any port is bound).
    """
    config = load_config(config_path)
    gateway, server = build_gateway(config, options)
    if not await _unless_stopped(gateway.open_store()):  # the store opens before any port
        return
    await server.serve_forever()


async def _unless_stopped(step) -> bool:
    """Await ``step`` unless SIGTERM or SIGINT comes first (which cancels it).

    Returns:
        True when ``step`` finished, False when a signal stopped it.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(step)
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        await asyncio.wait({task})
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if task.cancelled():
        log.info("stop requested during startup")
        return False
    task.result()  # raises what the step raised
    return True
