"""A gateway deployment: route -> call the routed model -> shadows -> decision record
-> explanation; and feedback by decision id.

The router is synchronous, so routing and learning are atomic under asyncio; all
awaiting happens here. Shadows run as tracked background tasks, bounded by
``max_shadow_in_flight`` (what is shed is counted); their outputs, latencies and
failures are written onto the decision record and never touch the response. Feedback
is accepted once per decision (a second one is reported as ``duplicate`` and not
counted) and becomes a reward per model: a scalar reward credits the routed model; a
ground truth is compared with every recorded output (see ``FeedbackSpec``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.config import DeploymentSpec
from gateway.decisions import Decision, DecisionStore
from gateway.explaining import explanation_parameter
from gateway.metrics import GatewayMetrics
from gateway.upstream import UpstreamModel
from protos.codecs.json import finite_or_name
from protos.errors import ArbiterError, DecisionNotFoundError, InvalidRequestError
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestedOutput,
    Tensor,
    new_id,
)
from routers.base import Outcome, Router

__all__ = ["Deployment", "ShadowStats", "tensor_doc"]

log = logging.getLogger("arbiter.dataplane")

_MAX_RECORDED_ELEMENTS = 65_536


def tensor_doc(tensor: Tensor) -> dict[str, Any]:
    """A tensor as a JSON-able record: flat data (non-finite floats as "NaN",
    "Infinity", "-Infinity", as in the JSON API), dropped past 65,536 elements."""
    doc: dict[str, Any] = {"datatype": tensor.datatype, "shape": list(tensor.shape)}
    if tensor.data.size <= _MAX_RECORDED_ELEMENTS:
        data = tensor.data.ravel()
        if tensor.datatype == "BYTES":
            doc["data"] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in data]
        else:
            doc["data"] = [finite_or_name(v) if isinstance(v, float) else v
                           for v in data.tolist()]
    return doc


class ShadowStats:
    """Running agreement between one shadow and the primary."""

    __slots__ = ("compared", "agreed", "abs_diff_sum", "abs_diff_n")

    def __init__(self) -> None:
        self.compared = 0
        self.agreed = 0
        self.abs_diff_sum = 0.0
        self.abs_diff_n = 0

    def as_dict(self) -> dict[str, float | int | None]:
        """Counts, agreement rate and mean absolute difference."""
        return {
            "compared": self.compared,
            "agreement": self.agreed / self.compared if self.compared else None,
            "mean_abs_difference": self.abs_diff_sum / self.abs_diff_n if self.abs_diff_n else None,
        }


class Deployment:
    """One deployment, served by the gateway as an OIP model (a ``Target``).

    Args:
        name: deployment name (the OIP model name clients address).
        spec: the deployment's config.
        router: its routing policy.
        upstreams: model key -> client, for every model the router names.
        store: the decision store.
        metrics: gateway metrics.
        explain: called with each new decision to schedule its explanation, or None.
    """

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
    ) -> None:
        self.name = name
        self.spec = spec
        self.router = router
        self.upstreams = upstreams
        self.store = store
        self.metrics = metrics
        self.explain = explain
        self.on_promotion = on_promotion or (lambda name: None)
        self.inline = spec.explain is not None and spec.explain.mode == "inline"
        self.shadow_stats = {key: ShadowStats() for key in router.models}
        self._tasks: set[asyncio.Task] = set()
        self._shadow_tasks: dict[str, list[asyncio.Task]] = {}
        self._made: dict[str, asyncio.Future[Decision | None]] = {}
        """Decision id -> the decision once the routed model has answered (None if it
        failed), awaited by that decision's shadows."""
        self._shadow_wait_s = max((u.ref.timeout_s for u in upstreams.values()), default=5.0)
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
        """Whether every model of the deployment has been reached."""
        return all(u.ready() for u in self.upstreams.values())

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Route ``request``, answer with the routed model's response, record the
        decision.

        Raises:
            ArbiterError: the routed model's failure (503 unreachable, 504 deadline,
                400 invalid input, ...); shadows never raise.
        """
        decision_id = await self._decision_id(request)
        route = self.router.route(request)
        upstream_request, extra = self._with_feedback_output(request)
        made: asyncio.Future[Decision | None] | None = None
        if route.shadows:  # kept here too: the dict entry goes when the shadows finish
            made = self._made[decision_id] = asyncio.get_running_loop().create_future()
            self._start_shadows(route.shadows, upstream_request, decision_id)
        start = time.perf_counter()
        routed = self.upstreams[route.routed]
        try:
            response = await routed.infer(upstream_request)
        except ArbiterError as exc:
            self._abandon(decision_id, made)
            self._count_upstream(route.routed, exc.grpc_code, start)
            raise
        except BaseException:
            self._abandon(decision_id, made)
            raise
        latency = self._count_upstream(route.routed, "OK", start)
        if request.id != decision_id:
            response.id = request.id
        decision = Decision(
            id=decision_id, time=time.time(), deployment=self.name, router=self.router.kind,
            routed=route.routed, shadows=list(route.shadows),
            inputs={t.name: tensor_doc(t) for t in request.inputs},
            outputs={route.routed: {t.name: tensor_doc(t) for t in response.outputs}},
            latency_ms={route.routed: latency * 1000}, parameters=dict(request.parameters),
        )
        self.store.add(decision)
        if self.store.spec.durable:
            await self.store.persist(decision)
        if made is not None and not made.done():
            made.set_result(decision)
        if decision_id not in self._shadow_tasks:  # every shadow was shed
            self._made.pop(decision_id, None)
        if extra is not None:  # recorded for feedback, not asked for by the client
            response.outputs = [t for t in response.outputs if t.name != extra]
        self._count_route(route.routed)
        response = self._answer(response, decision)
        if self.explain is not None:
            pending = self.explain(decision, request)
            if self.inline and pending is not None:
                response.parameters["explanation"] = explanation_parameter(await pending)
        return response

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

    def _abandon(self, decision_id: str, made: asyncio.Future | None) -> None:
        """The routed model failed: no decision; its shadows record nothing."""
        self.store.release(decision_id)
        self._made.pop(decision_id, None)
        if made is not None and not made.done():
            made.set_result(None)

    async def _decision_id(self, request: InferenceRequest) -> str:
        """The request's id when it is new; a fresh id when a decision already has it
        (so a reused request id never overwrites an earlier decision)."""
        if not request.id:  # absent, or "" (which gRPC cannot tell from absent)
            request.id = new_id()
            self.store.claim(request.id)
            return request.id
        if await self.store.reserve(request.id):
            return request.id
        fresh = new_id()
        self.store.claim(fresh)
        log.info("%s: request id %r is already a decision id; decision %s", self.name,
                 request.id, fresh)
        return fresh

    def _answer(self, response: InferenceResponse, decision: Decision) -> InferenceResponse:
        response.model_name = self.name
        response.model_version = None
        response.parameters = {
            **response.parameters, "decision_id": decision.id,
            "routed_model": decision.routed, "router": self.router.kind,
        }
        response.headers = {
            "x-arbiter-decision-id": decision.id,
            "x-arbiter-routed-model": decision.routed,
            "x-arbiter-router": self.router.kind,
        }
        return response

    def _count_upstream(self, key: str, code: str, start: float) -> float:
        elapsed = time.perf_counter() - start
        self.metrics.upstream.labels(self.name, key, code).inc()
        self.metrics.upstream_duration.labels(self.name, key).observe(elapsed)
        return elapsed

    def _count_route(self, key: str) -> None:
        counter = self._route_counters.get(key)
        if counter is None:
            counter = self.metrics.route_decisions.labels(self.name, self.router.kind, key)
            self._route_counters[key] = counter
        counter.inc()

    # -- shadows ------------------------------------------------------------------
    def _start_shadows(
        self, keys: tuple[str, ...], request: InferenceRequest, decision_id: str
    ) -> None:
        started = []
        for key in keys:
            if len(self._tasks) >= self.spec.max_shadow_in_flight:
                self.metrics.shadow.labels(self.name, key, "shed").inc()
                self._note_shadow_error(decision_id, key, "shed: too many shadow calls in flight")
                continue
            task = asyncio.create_task(self._shadow(key, request, decision_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        if started:
            self._shadow_tasks[decision_id] = started
            waiter = asyncio.ensure_future(asyncio.wait(started))
            waiter.add_done_callback(lambda _: self._forget(decision_id))

    def _forget(self, decision_id: str) -> None:
        self._shadow_tasks.pop(decision_id, None)
        self._made.pop(decision_id, None)

    async def _shadows_settled(self, decision_id: str) -> None:
        """Wait until the decision's shadows have answered, failed or timed out, so that
        feedback scores every model that saw the request."""
        tasks = self._shadow_tasks.get(decision_id)
        if tasks:
            await asyncio.wait(tasks, timeout=self._shadow_wait_s + 1)

    async def _shadow(self, key: str, request: InferenceRequest, decision_id: str) -> None:
        start = time.perf_counter()
        try:
            response = await self.upstreams[key].infer(request)
        except ArbiterError as exc:
            self._count_upstream(key, exc.grpc_code, start)
            self.metrics.shadow.labels(self.name, key, "error").inc()
            self._note_shadow_error(decision_id, key, exc.message)
            return
        except Exception as exc:  # a shadow never raises into anything
            log.exception("shadow %s of %s failed", key, self.name)
            self.metrics.shadow.labels(self.name, key, "error").inc()
            self._note_shadow_error(decision_id, key, f"internal error: {type(exc).__name__}")
            return
        latency = self._count_upstream(key, "OK", start)
        self.metrics.shadow.labels(self.name, key, "ok").inc()
        await self._record_shadow(decision_id, key, response, latency)

    async def _decision_made(self, decision_id: str) -> Decision | None:
        """The decision once the routed model has answered (None if it failed)."""
        made = self._made.get(decision_id)
        return None if made is None else await made

    def _note_shadow_error(self, decision_id: str, key: str, message: str) -> None:
        made = self._made.get(decision_id)  # taken now: the entry goes with the shadows

        async def note() -> None:
            decision = None if made is None else await made
            if decision is not None:
                decision.errors[key] = message
                self.store.touch(decision)

        task = asyncio.create_task(note())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record_shadow(
        self, decision_id: str, key: str, response: InferenceResponse, latency: float
    ) -> None:
        decision = await self._decision_made(decision_id)
        if decision is None:  # the primary failed: nothing to compare with
            return
        decision.outputs[key] = {t.name: tensor_doc(t) for t in response.outputs}
        decision.latency_ms[key] = latency * 1000
        self.store.touch(decision)
        self._compare(decision, key, response)

    def _compare(self, decision: Decision, key: str, response: InferenceResponse) -> None:
        primary = decision.outputs.get(decision.routed, {})
        stats = self.shadow_stats[key]
        for tensor in response.outputs:
            base = primary.get(tensor.name)
            if base is None or "data" not in base or base["shape"] != list(tensor.shape):
                continue
            mine = np.asarray(tensor.data, dtype=object if tensor.datatype == "BYTES" else None)
            theirs = np.asarray(base["data"]).reshape(tensor.shape)
            if tensor.datatype.startswith("FP"):
                diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
                stats.abs_diff_sum += float(np.nanmean(diff)) if diff.size else 0.0
                stats.abs_diff_n += 1
                self.metrics.shadow_abs_diff.labels(self.name, key).set(
                    stats.abs_diff_sum / stats.abs_diff_n
                )
            elif tensor.name == self.spec.feedback.output or tensor.datatype != "BYTES":
                stats.compared += 1
                stats.agreed += int(np.array_equal(mine.ravel().tolist(), theirs.ravel().tolist()))
                self.metrics.shadow_agreement.labels(self.name, key).set(
                    stats.agreed / stats.compared
                )

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (up to ``timeout_s``) for shadow tasks in flight."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    # -- feedback -------------------------------------------------------------------
    async def feedback(self, item: Any) -> dict[str, Any]:
        """Apply one feedback item ``{"decision_id", "reward" | "truth"}``.

        Returns:
            ``{"decision_id", "status": "accepted" | "duplicate", "rewards"}``.

        Raises:
            InvalidRequestError: malformed item, reward not in [0, 1], truth of the
                wrong shape.
            DecisionNotFoundError: unknown decision, or one of another deployment.
        """
        decision, reward, truth, routed_reward = await self._validated(item)
        if decision.feedback is None:
            await self._shadows_settled(decision.id)
        if decision.feedback is not None:
            self.metrics.feedback.labels(self.name, "duplicate").inc()
            return {"decision_id": decision.id, "status": "duplicate",
                    "rewards": decision.rewards or {}}
        rewards = (
            {decision.routed: reward} if truth is None
            else self._score(decision, truth, routed_reward)
        )
        learned = {k: v for k, v in rewards.items() if k in self.router.models}
        decision.feedback = {"reward": reward, "truth": truth, "time": time.time(),
                             "learned": sorted(learned)}
        decision.rewards = rewards
        self.store.touch(decision)
        self._learn(decision, learned)
        result = {"decision_id": decision.id, "status": "accepted", "rewards": rewards}
        if len(learned) < len(rewards):  # a model left the router since the decision
            result["not_learned"] = sorted(set(rewards) - set(learned))
        return result

    async def check_feedback(self, item: Any) -> None:
        """Validate one feedback item without applying it.

        Raises:
            InvalidRequestError, DecisionNotFoundError: as :meth:`feedback`.
        """
        await self._validated(item)

    async def _validated(self, item: Any) -> tuple[Decision, float | None, Any, float | None]:
        """Parse an item, find its decision and score a truth against the routed
        model's recorded output (before any duplicate check: bad input is 400).

        Returns:
            The decision, the reward, the truth, and the routed model's reward for the
            truth (None for a scalar reward).
        """
        decision_id, reward, truth = _parse_feedback(item)
        decision = await self.store.get(decision_id)
        if decision.deployment != self.name:
            raise DecisionNotFoundError(
                f"decision {decision_id!r} belongs to deployment {decision.deployment!r}"
            )
        if truth is not None:
            return decision, reward, truth, self._score_one(decision, decision.routed, truth)
        return decision, reward, truth, None

    def _learn(self, decision: Decision, rewards: dict[str, float]) -> None:
        """Teach the router the rewards of models it still has (all validated)."""
        before = self.router.primary
        self.metrics.feedback.labels(self.name, "accepted").inc()
        if not rewards:
            return
        self.router.feedback(Outcome(decision.routed, rewards))
        for key, value in rewards.items():
            self.metrics.rewards.labels(self.name, key).inc(value)
            self.metrics.scored.labels(self.name, key).inc()
        self.update_posterior_metrics()
        if self.router.primary != before:
            self.metrics.promotions.labels(self.name).inc()
            log.info("%s: %s promoted over %s", self.name, self.router.primary, before)
            self.on_promotion(self.name)

    def update_posterior_metrics(self) -> None:
        """Export each arm's posterior mean reward rate, where the router has one."""
        snapshot = self.router.snapshot()
        for arm, info in (snapshot.get("arms") or {}).items():
            mean = info.get("posterior_mean", info.get("mean")) if isinstance(info, dict) else None
            if isinstance(mean, int | float):
                self.metrics.posterior_mean.labels(self.name, arm).set(mean)

    def _score(self, decision: Decision, truth: Any, routed_reward: float) -> dict[str, float]:
        """Reward of every model whose output the decision recorded."""
        rewards = {decision.routed: routed_reward}
        for key in decision.outputs:
            if key != decision.routed:
                recorded = decision.outputs[key].get(self.spec.feedback.output)
                if recorded is not None and "data" in recorded:
                    rewards[key] = _reward(recorded, truth, self.spec.feedback.output,
                                           self.spec.feedback.labels)
        return rewards

    def _score_one(self, decision: Decision, key: str, truth: Any) -> float:
        output = self.spec.feedback.output
        recorded = decision.outputs.get(key, {}).get(output)
        if recorded is None:
            raise InvalidRequestError(
                f"decision {decision.id!r} has no output {output!r} to compare the truth with"
            )
        if "data" not in recorded:
            raise InvalidRequestError(
                f"decision {decision.id!r}: output {output!r} was too large to record "
                f"(over {_MAX_RECORDED_ELEMENTS:,} elements); send a reward instead"
            )
        return _reward(recorded, truth, output, self.spec.feedback.labels)

    def snapshot(self) -> dict[str, Any]:
        """Router state, shadow agreement, and models, for ``GET /v2/deployments/{name}``."""
        return {
            "name": self.name,
            "router": self.router.snapshot(),
            "models": {
                key: {"url": up.ref.url, "name": up.ref.name} for key, up in self.upstreams.items()
            },
            "shadow_agreement": {
                k: s.as_dict() for k, s in self.shadow_stats.items() if s.compared or s.abs_diff_n
            },
        }


def _parse_feedback(item: Any) -> tuple[str, float | None, Any]:
    if not isinstance(item, dict):
        raise InvalidRequestError("each feedback item must be an object")
    decision_id = item.get("decision_id")
    if not isinstance(decision_id, str) or not decision_id:
        raise InvalidRequestError("feedback needs a string 'decision_id'")
    has_reward, has_truth = "reward" in item, "truth" in item
    if has_reward == has_truth:
        raise InvalidRequestError("feedback needs exactly one of 'reward' or 'truth'")
    if has_truth:
        return decision_id, None, item["truth"]
    reward = item["reward"]
    if (
        isinstance(reward, bool) or not isinstance(reward, int | float)
        or not math.isfinite(reward) or not 0 <= reward <= 1
    ):
        raise InvalidRequestError(f"'reward' must be a number in [0, 1], got {reward!r}")
    return decision_id, float(reward), None


def _reward(recorded: dict[str, Any], truth: Any, output: str,
            labels: list | None = None) -> float:
    predicted = np.asarray(recorded["data"], dtype=object)
    try:
        expected = np.asarray(truth, dtype=object).ravel()
    except ValueError:
        raise InvalidRequestError("'truth' must be a value or a (nested) list") from None
    if expected.size != predicted.size:
        raise InvalidRequestError(
            f"'truth' has {expected.size} values; output {output!r} of the decision has "
            f"{predicted.size} (shape {recorded['shape']})"
        )
    values = expected.tolist()
    _check_truth(values, recorded["datatype"], output)
    if labels is not None:
        unknown = [v for v in values if v not in labels]
        if unknown:
            raise InvalidRequestError(
                f"'truth' value {unknown[0]!r} is not one of the labels {labels} of "
                f"output {output!r}"
            )
    if recorded["datatype"].startswith("FP"):
        error = np.abs(predicted.astype(float) - np.asarray(values, dtype=float)).mean()
        return float(min(1.0, max(0.0, 1.0 - error)))
    matches = [p == e for p, e in zip(predicted.tolist(), values, strict=True)]
    return float(sum(matches) / len(matches))


def _check_truth(values: list, datatype: str, output: str) -> None:
    """Truth values must be of the output's kind: integers (or true/false) for integer
    and BOOL outputs, finite numbers for float outputs, strings for BYTES outputs.

    Raises:
        InvalidRequestError: naming the first bad value.
    """
    for value in values:
        if datatype == "BYTES":
            ok = isinstance(value, str)
        elif datatype.startswith("FP"):
            ok = isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value)
        elif datatype == "BOOL":
            ok = isinstance(value, bool) or value in (0, 1)
        else:
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        if not ok:
            raise InvalidRequestError(
                f"'truth' value {value!r} does not fit output {output!r} ({datatype})"
            )
