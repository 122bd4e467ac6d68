"""A gateway deployment: route -> call the routed model -> shadows -> decision ->
explanation; feedback by decision id; promotion.

The router is synchronous, so routing is atomic under asyncio; all awaiting happens
here. Every decision gets a fresh server-generated id (UUID4, 122 random bits; the
client's request ``id`` is only echoed, as OIP requires; a request without one gets
the decision id as its response ``id``) and the propensity of the router's choice.
A request carrying an ``Idempotency-Key`` header (gRPC metadata ``idempotency-key``)
that repeats within ``store.idempotency_window_s`` gets the original decision back
(same id, same outputs) instead of a second decision; the same key with a different
request is refused (422, gRPC ALREADY_EXISTS: ``gateway.idempotency``).

While the decision store cannot be written (an outage: ``gateway.decisions.sql``),
the deployment is not ready and every request is refused with 503 and Retry-After
(gRPC UNAVAILABLE) before any model is asked: no decision is answered that the store
could not record, beyond the decisions already in its bounded write-behind queue.

Around failure: the router chooses among the models whose circuit breaker is closed, a
connection failure is retried once on another healthy model (``gateway.dispatch``), and
a routed model that fails (5xx) still leaves a decision, ``status: failed``, optionally
scored as reward 0 for that model (``feedback.penalise_failures``). Under load, at most
``max_in_flight`` requests are answered at once and ``max_queue`` wait; the rest are
refused at once (``gateway.admission``). ``input_schema`` refuses out-of-domain input
before any model sees it (``gateway.domain``).

Feedback is recorded once per decision together with the router counts it changes,
in one store transaction committed before it is acknowledged; a repeat is reported as
``duplicate`` and counts nothing; ``"correction": true`` replaces it instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.admission import Admission
from gateway.breaker import UpstreamHealth
from gateway.config import DeploymentSpec
from gateway.decisions import Decision, DecisionStore, tensor_doc
from gateway.dispatch import CallFailed, Dispatcher
from gateway.domain import InputDomain, load_input_schema
from gateway.explaining import explanation_parameter
from gateway.feedback import FeedbackDesk
from gateway.feedback_tokens import TOKEN_FIELD, TOKEN_HEADER, FeedbackTokens
from gateway.idempotency import IdempotencyKeyReusedError, request_digest
from gateway.metrics import GatewayMetrics
from gateway.shadows import Shadows
from gateway.upstream import UpstreamModel
from protos.codecs.json import tensor_from_doc
from protos.errors import (
    ArbiterError,
    InvalidRequestError,
    UpstreamUnavailableError,
)
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestedOutput,
    new_id,
)
from routers.base import Outcome, RouteDecision, Router
from routers.champion_challenger import ChampionChallengerRouter
from routers.state import CHAMPION

__all__ = ["Deployment", "IDEMPOTENCY_HEADER"]

log = logging.getLogger("arbiter.deployment")

IDEMPOTENCY_HEADER = "idempotency-key"


class Deployment:
    """One deployment, served by the gateway as an OIP model (a ``Target``).

    Args:
        name: deployment name (the OIP model name clients address).
        spec: the deployment's config.
        router: its routing policy (reading ``store.state``).
        upstreams: model key -> client, for every model the router names.
        store: the decision store.
        metrics: gateway metrics.
        explain: called with each new decision and its request to schedule the
            explanation; returns an awaitable of the explanation document, or None.
        on_promotion: called with the deployment name after a promotion.
        idempotency_window_s: how long an Idempotency-Key keeps its decision (s).
        wait_for_commit: each response waits for its decision's commit.
        health: the models' circuit breakers; None: every model always healthy.
        draining: returns whether the server drains (backpressure answers 503 then).
    """

    feedback_tokens: FeedbackTokens | None = None
    """Issues each decision's ``feedback_token`` (set by the gateway when it has a
    feedback secret)."""

    on_decision: Callable[[Decision], None] | None = None
    """Called with each new decision once recorded (the fairness monitor, set by
    ``gateway.monitoring.watch``), or None."""

    def __init__(
        self,
        name: str,
        spec: DeploymentSpec,
        router: Router,
        upstreams: dict[str, UpstreamModel],
        store: DecisionStore,
        metrics: GatewayMetrics,
        explain: Callable[[Decision, InferenceRequest], Any] | None = None,
        on_promotion: Callable[[str], None] | None = None,
        *,
        idempotency_window_s: float = 86_400.0,
        wait_for_commit: bool = False,
        health: UpstreamHealth | None = None,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.name = name
        self.spec = spec
        self.router = router
        self.upstreams = upstreams
        self.store = store
        self.metrics = metrics
        self.explain = explain
        self.on_promotion = on_promotion or (lambda name: None)
        self.idempotency_window_s = idempotency_window_s
        self.wait_for_commit = wait_for_commit
        self.inline = spec.explain is not None and spec.explain.mode == "inline"
        self.shadows = Shadows(name, upstreams, store, metrics, spec.max_shadow_in_flight,
                               spec.feedback.output)
        self.shadows.health = health
        self.dispatcher = Dispatcher(name, router, upstreams, health, metrics)
        self.admission = Admission(
            name, spec.max_in_flight, spec.max_queue, spec.queue_timeout_ms / 1000,
            draining=draining, on_shed=lambda reason: metrics.shed.labels(name, reason).inc(),
        )
        schema = spec.input_schema
        if isinstance(schema, Path):  # a config not read by load_config: relative to cwd
            schema = load_input_schema(schema)
        self.domain = InputDomain(schema) if schema is not None else None
        self.desk = FeedbackDesk(name, spec.feedback, router, store, self.shadows, metrics,
                                 self._learned)
        self._keyed: dict[str, tuple[str, asyncio.Future[InferenceResponse]]] = {}
        """Idempotency-Key -> (request digest, response) of the keyed requests in flight."""
        self._route_counters: dict[str, Any] = {}

    # -- Target -----------------------------------------------------------------
    def metadata(self) -> ModelMetadata:
        """The primary model's metadata under the deployment's name."""
        primary = self.upstreams[self.router.primary].metadata()
        return ModelMetadata(
            name=self.name, platform=primary.platform, inputs=primary.inputs,
            outputs=primary.outputs, versions=[],
            parameters={"router": self.router.kind, "primary": self.router.primary},
        )

    def ready(self) -> bool:
        """Whether every model of the deployment has been reached, one that may answer
        is healthy (its circuit breaker closed), and the decision store can record
        what it decides (no outage)."""
        return (self.store.healthy and all(u.ready() for u in self.upstreams.values())
                and self.dispatcher.ready())

    def not_ready_reason(self) -> str | None:
        """Why the deployment is not ready, when the cause is the decision store (the
        503's message); ``None`` otherwise."""
        if not self.store.healthy:
            return (f"deployment {self.name!r} cannot record decisions now: the decision "
                    "store cannot be written; retry later")
        return None

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Check the input's domain, take a place in flight, route ``request``, answer
        with the routed model's response, record the decision; a repeated
        Idempotency-Key gets the original decision back.

        Raises:
            InvalidRequestError: input outside ``input_schema`` (400).
            StoreUnavailableError: the decision store cannot record the decision (503,
                before any model is asked; or after, when the outage began meanwhile).
            IdempotencyKeyReusedError: the Idempotency-Key was used with a different
                request (422).
            OverloadedError: no place in flight nor in the queue (429).
            ArbiterError: no healthy model (503), or the routed model's failure (503
                unreachable, 504 deadline, 500 model error, 400 invalid input, ...);
                shadows never raise.
        """
        if self.domain is not None:
            self.domain.check(request)
        self.store.check_writable()
        await self.admission.acquire()
        try:
            return await self._infer(request)
        finally:
            self.admission.release()

    async def _infer(self, request: InferenceRequest) -> InferenceResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER) if self.idempotency_window_s else None
        if not key:
            return await self._decide(request, None)
        digest = request_digest(request)
        earlier = await self.store.find(self.name, key, time.time() - self.idempotency_window_s,
                                        digest)
        running = self._keyed.get(key)  # read after the await: a repeat may have started
        if running is not None:  # the same key in flight in this process
            if running[0] != digest:
                raise IdempotencyKeyReusedError(key)
            return self._echo(await asyncio.shield(running[1]), request)
        if earlier is not None:
            return self._replay(earlier, request)
        future = asyncio.get_running_loop().create_future()
        self._keyed[key] = (digest, future)
        try:
            response = await self._decide(request, key, digest)
        except asyncio.CancelledError:  # that client left: a repeat may try again
            future.set_exception(UpstreamUnavailableError(
                "the first request with this Idempotency-Key was abandoned; retry"))
            future.exception()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._keyed.pop(key, None)
        future.set_result(response)
        return response

    async def _decide(self, request: InferenceRequest, key: str | None,
                      digest: str | None = None) -> InferenceResponse:
        decision_id = new_id()
        route = self.dispatcher.route(request)
        upstream_request, extra = self._with_feedback_output(request)
        made: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()
        if route.shadows:
            self.shadows.start(route.shadows, upstream_request, decision_id, made)
        try:
            route, response, latency = await self.dispatcher.call(
                route, request, upstream_request)
        except CallFailed as failed:
            raise await self._failed(decision_id, request, failed, made) from None
        except BaseException:
            made.set_result(None)
            raise
        decision = self._decision_of(decision_id, request, route, latency)
        decision.outputs[route.routed] = {t.name: tensor_doc(t) for t in response.outputs}
        pending = self._start_explanation(decision, request)
        try:
            holder = await self.store.create(
                decision, idempotency_key=key, window_s=self.idempotency_window_s,
                wait=self.wait_for_commit, request_hash=digest,
            )
        except BaseException:  # not recorded (an outage, a key taken by another request)
            made.set_result(None)
            raise
        made.set_result(decision)
        if holder.id != decision.id:  # another replica decided this key first
            return self._replay(holder, request)
        if self.on_decision is not None:
            self.on_decision(decision)
        if extra is not None:  # recorded for feedback, not asked for by the client
            response.outputs = [t for t in response.outputs if t.name != extra]
        self._count_route(route.routed)
        response = self._answer(response, decision, request)
        if self.inline and pending is not None:
            response.parameters["explanation"] = explanation_parameter(await pending)
        return response

    def _decision_of(self, decision_id: str, request: InferenceRequest, route: RouteDecision,
                     latency_s: float) -> Decision:
        fallback = route.fallback
        return Decision(
            id=decision_id, time=time.time(), deployment=self.name, router=self.router.kind,
            routed=route.routed, propensity=route.propensity, request_id=request.id or "",
            shadows=[m for m in route.shadows if m != route.routed],
            inputs={t.name: tensor_doc(t) for t in request.inputs},
            latency_ms={route.routed: latency_s * 1000}, parameters=dict(request.parameters),
            fallback=None if fallback is None else {"from": fallback[0], "reason": fallback[1]},
        )

    async def _failed(self, decision_id: str, request: InferenceRequest, failed: CallFailed,
                      made: asyncio.Future) -> ArbiterError:
        """A routed model's failure: a 5xx is recorded as a failed decision (scored as
        reward 0 with ``penalise_failures`` when the model raised), its id added to the
        error; a 4xx (the request's fault, or the pod's backpressure) records nothing.

        Returns:
            The error to raise to the client.
        """
        error = failed.error
        if error.status < 500 or error.status == 501:
            made.set_result(None)
            return error
        decision = self._decision_of(decision_id, request, failed.route, failed.latency_s)
        decision.status = "failed"
        decision.errors[decision.routed] = error.message
        try:
            await self.store.create(decision, wait=self.wait_for_commit)
        except BaseException:
            made.set_result(None)
            raise
        made.set_result(decision)
        self.metrics.failed_decisions.labels(self.name, decision.routed).inc()
        if self.spec.feedback.penalise_failures and error.grpc_code == "INTERNAL":
            await self._penalise(decision)
        answer = type(error)(f"{error.message} (decision {decision_id})")
        answer.retry_after_s = error.retry_after_s
        return answer

    async def _penalise(self, decision: Decision) -> None:
        """Score a failed decision as reward 0 for the model that failed, through the
        feedback path: once, durably, with the router counts it changes."""
        rewards = {decision.routed: 0.0}
        learning = (self.router.learning(Outcome(decision.routed, rewards))
                    if decision.routed in self.router.models else None)
        doc = {"reward": 0.0, "truth": None, "time": time.time(), "source": "failure",
               "learned": sorted(learning.rewards) if learning else []}
        recorded = await self.store.record_feedback(decision, doc, rewards, learning)
        if recorded.new and learning is not None:
            self.metrics.feedback.labels(self.name, "failure").inc()
            self.metrics.scored.labels(self.name, decision.routed).inc()
            self.update_posterior_metrics()
            if recorded.promotion is not None:
                self._promoted(recorded.promotion)

    def _start_explanation(self, decision: Decision, request: InferenceRequest):
        if self.explain is None:
            return None
        return self.explain(decision, request)

    def _with_feedback_output(
        self, request: InferenceRequest
    ) -> tuple[InferenceRequest, str | None]:
        """The request sent upstream: when the client asked for some outputs only, the
        feedback output is asked for too (and recorded, so truth feedback always has
        something to compare), then dropped from the client's response."""
        name = self.spec.feedback.output
        wanted = request.outputs
        if wanted is None or any(o.name == name for o in wanted):
            return request, None
        primary = self.upstreams[self.router.primary]
        if not primary.ready() or primary.metadata().output(name) is None:
            return request, None
        upstream = InferenceRequest(
            request.model_name, request.inputs, request.model_version, request.id,
            [*wanted, RequestedOutput(name)], request.parameters, request.headers,
        )
        return upstream, name

    def _answer(self, response: InferenceResponse, decision: Decision,
                request: InferenceRequest) -> InferenceResponse:
        response.id = request.id or decision.id  # OIP echoes a client's id; else ours
        response.model_name = self.name
        response.model_version = None
        response.parameters = {
            **response.parameters, "decision_id": decision.id,
            "routed_model": decision.routed, "router": decision.router,
            "propensity": decision.propensity,
        }
        response.headers = {
            "x-arbiter-decision-id": decision.id,
            "x-arbiter-routed-model": decision.routed,
            "x-arbiter-router": decision.router,
            "x-arbiter-propensity": repr(decision.propensity),
        }
        if self.feedback_tokens is not None:  # proof of receipt for its feedback
            token = self.feedback_tokens.issue(decision.id)
            response.parameters[TOKEN_FIELD] = token
            response.headers[TOKEN_HEADER] = token
        return response

    def _replay(self, decision: Decision, request: InferenceRequest) -> InferenceResponse:
        """The response of an earlier decision, rebuilt from its record.

        Raises:
            InvalidRequestError: an output of that decision was too large to record.
        """
        tensors = []
        for name, doc in decision.outputs.get(decision.routed, {}).items():
            if "data" not in doc:
                raise InvalidRequestError(
                    f"decision {decision.id!r} holds this Idempotency-Key but its output "
                    f"{name!r} was too large to record; use a new key"
                )
            tensors.append(tensor_from_doc({**doc, "name": name}))
        wanted = request.outputs
        if wanted is not None:
            names = {o.name for o in wanted}
            tensors = [t for t in tensors if t.name in names]
        response = InferenceResponse(model_name=self.name, outputs=tensors,
                                     parameters={"idempotent_replay": True})
        return self._answer(response, decision, request)

    @staticmethod
    def _echo(response: InferenceResponse, request: InferenceRequest) -> InferenceResponse:
        """A concurrent duplicate's copy of the first response, with its own id."""
        return InferenceResponse(
            model_name=response.model_name, outputs=response.outputs, id=request.id,
            model_version=response.model_version,
            parameters={**response.parameters, "idempotent_replay": True},
            headers=dict(response.headers),
        )

    def _count_route(self, key: str) -> None:
        counter = self._route_counters.get(key)
        if counter is None:
            counter = self.metrics.route_decisions.labels(self.name, self.router.kind, key)
            self._route_counters[key] = counter
        counter.inc()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (up to ``timeout_s``) for shadow calls in flight."""
        await self.shadows.drain(timeout_s)

    # -- feedback -------------------------------------------------------------------
    async def feedback(self, item: Any) -> dict[str, Any]:
        """Apply one feedback item; see :meth:`gateway.feedback.FeedbackDesk.apply`."""
        return await self.desk.apply(item)

    async def check_feedback(self, item: Any) -> None:
        """Validate one feedback item; see :meth:`gateway.feedback.FeedbackDesk.check`."""
        await self.desk.check(item)

    # -- promotion ------------------------------------------------------------------
    async def promote(self, model: str) -> dict[str, Any]:
        """Manual promotion of challenger ``model`` (compare-and-set in the store).

        Raises:
            InvalidRequestError: not a champion-challenger deployment, not a challenger,
                or the champion changed meanwhile.
        """
        if not isinstance(self.router, ChampionChallengerRouter):
            raise InvalidRequestError(f"deployment {self.name!r} has no champion to promote over")
        stored = self.store.state.get_value(self.name, CHAMPION)
        try:
            record = self.router.promotion_record(model, reason="manual")
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        if not await self.store.promote(self.name, stored, record):
            raise InvalidRequestError(
                f"the champion of {self.name!r} changed meanwhile; read it again and retry"
            )
        self._promoted(record)
        return record

    def _learned(self, promotion: dict[str, Any] | None) -> None:
        self.update_posterior_metrics()
        if promotion is not None:
            self._promoted(promotion)

    def _promoted(self, record: dict[str, Any]) -> None:
        self.metrics.promotions.labels(self.name).inc()
        log.info("%s: %s promoted over %s (%s)", self.name, record["champion"],
                 record["previous"], record.get("reason"))
        self.on_promotion(self.name)

    def update_posterior_metrics(self) -> None:
        """Export each arm's posterior mean reward rate, where the router has one."""
        snapshot = self.router.snapshot()
        for arm, info in (snapshot.get("arms") or {}).items():
            mean = info.get("posterior_mean", info.get("mean")) if isinstance(info, dict) else None
            if isinstance(mean, int | float):
                self.metrics.posterior_mean.labels(self.name, arm).set(mean)

    def snapshot(self) -> dict[str, Any]:
        """Router state, shadow agreement, and models, for ``GET /v2/deployments/{name}``."""
        return {
            "name": self.name,
            "router": self.router.snapshot(),
            "models": {
                key: {"url": up.ref.url, "name": up.ref.name} for key, up in self.upstreams.items()
            },
            "health": self._health(),
            "admission": {"in_flight": self.admission.in_flight,
                          "queued": self.admission.queued,
                          "max_in_flight": self.admission.max_in_flight,
                          "max_queue": self.admission.max_queue},
            "shadow_agreement": {
                k: s.as_dict() for k, s in self.shadows.stats.items() if s.compared or s.abs_diff_n
            },
        }

    def _health(self) -> dict[str, Any]:
        """Each model's breaker, and whether the deployment can answer."""
        health = self.dispatcher.health
        models = {} if health is None else {
            key: health.breakers[key].as_dict() for key in self.upstreams
            if key in health.breakers}
        return {"ready": self.dispatcher.ready() and self.store.healthy,
                "store": "up" if self.store.healthy else "down", "models": models}

