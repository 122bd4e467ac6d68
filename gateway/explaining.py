"""Explanations of decisions: one :class:`~gateway.explanation_queue.ExplanationQueue`
and one explanation worker (a process pool) per deployment with ``explain``.

Which decisions are explained follows ``explain.when`` and ``explain.adverse``
(``gateway.explanation_policy``): adverse decisions always, durably (their jobs wait in
the decision store until done and survive restarts, on any replica); the others are
best effort. A decision's explanation document is served by
``GET /v2/decisions/{id}/explanation`` (:meth:`ExplainHub.explanation`): 200 with the
document once final (``done``, or ``failed`` after its retries), 202 while it is
owed, and a decision never explained is queued on demand (202). In ``inline`` mode
the inference response waits for the explanation up to a deadline
(``explain.inline_deadline_s``, else ``timeout_s``; per request the
parameter ``explanation_deadline_s``) and carries it in ``parameters.explanation``
(JSON text), or ``{"status": "pending"}`` past the deadline. A promotion refits the
deployment's explainers in the background.

Every process holds leases under its own owner id; a background task renews them, and
another reads the store's backlog per deployment for the metrics
``arbiter_explanation_backlog`` and ``arbiter_explanation_oldest_pending_age_seconds``.
Closing gives this process's leases back so that another process (or the next start)
takes the jobs up at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson

from gateway.config import GatewayConfig, router_models
from gateway.decisions import DecisionStore
from gateway.decisions.explanation_jobs import FINAL
from gateway.explanation_queue import LEASE_S, ExplanationQueue
from gateway.metrics import GatewayMetrics
from protos.errors import ModelNotFoundError

__all__ = ["BACKLOG_INTERVAL_S", "ExplainHub", "explanation_parameter"]

log = logging.getLogger("arbiter.explain")

BACKLOG_INTERVAL_S = 2.0
"""How often the backlog gauges are read from the store."""


class ExplainHub:
    """The explanation queues and workers of every deployment that explains."""

    def __init__(self, config: GatewayConfig, store: DecisionStore, metrics: GatewayMetrics):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.queues = {
            name: ExplanationQueue(name, spec.explain, store, metrics, self.owner)
            for name, spec in config.deployments.items()
            if spec.explain is not None and spec.explain.mode != "off"
        }
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []

    @property
    def workers(self) -> dict[str, Any]:
        """Deployment -> its started explanation worker."""
        return {n: q.worker for n, q in self.queues.items() if q.worker is not None}

    def hook(self, name: str):
        """The callable a deployment calls with each new decision and its request just
        before recording it; returns an awaitable of the explanation document in
        ``inline`` mode, else None (see :meth:`ExplanationQueue.on_decision`)."""
        return self.queues[name].on_decision

    async def explanation(self, decision_id: str) -> tuple[int, dict[str, Any]]:
        """A decision's explanation: ``(200, document)`` once final, ``(202, {"status":
        "pending", "decision_id", "kind", "attempts", "decided_at"})`` while owed; a
        decision never explained (or skipped) is queued on demand (202).

        Raises:
            DecisionNotFoundError: unknown id (404).
            ModelNotFoundError: its deployment does not explain decisions (404).
            NotFoundError: the decision failed, or its inputs were not kept (404).
        """
        decision = await self.store.get(decision_id)
        queue = self.queues.get(decision.deployment)
        if queue is None:
            raise ModelNotFoundError(
                f"deployment {decision.deployment!r} does not explain its decisions")
        state = await self.store.explanation_state(decision_id)
        if state.document is not None and state.document.get("status") in FINAL:
            return 200, state.document
        if state.job is not None:
            return 202, {"status": "pending", "decision_id": decision_id, **state.job}
        if decision_id in queue.running:
            return 202, {"status": "pending", "decision_id": decision_id, "kind": "best_effort",
                         "attempts": 1, "decided_at": decision.time}
        if await queue.request(decision) == "final":
            return 200, (await self.store.explanation_state(decision_id)).document or {}
        return 202, {"status": "pending", "decision_id": decision_id, "kind": "requested",
                     "attempts": 0, "decided_at": decision.time}

    async def start(self, deployments: dict[str, Any]) -> None:
        """Create and fit the workers (after the model pods have answered), then start
        claiming stored jobs."""
        from explain.worker import ExplanationWorker

        for name, queue in self.queues.items():
            deployment = deployments[name]
            spec = _worker_spec(queue.spec)
            worker = ExplanationWorker(spec, self._predictors(deployment, spec))
            errors = await worker.start()
            for model, error in errors.items():
                log.error("%s: explainer for %s could not be fitted: %s", name, model, error)
            queue.start(worker)
            if not queue.policy.declared and queue.policy.when != "all":
                log.warning("%s: explain.adverse is not declared: every decision counts as "
                            "adverse and is explained", name)
        if self.queues:
            self._loops = [asyncio.create_task(self._renew_loop(), name="explain-leases"),
                           asyncio.create_task(self._backlog_loop(), name="explain-backlog")]

    def _predictors(self, deployment: Any, spec) -> dict[str, Any]:
        from explain.client import ModelEndpoint

        predictors = {}
        for key in router_models(deployment.spec.router):
            upstream = deployment.upstreams[key]
            meta = upstream.metadata()
            predictors[key] = ModelEndpoint(
                url=upstream.ref.url, model=upstream.ref.name,
                input_name=meta.inputs[0].name, input_datatype=meta.inputs[0].datatype,
                output_name=spec.output, model_version=upstream.ref.version,
                timeout_s=spec.timeout_s, token=upstream.ref.token(),
                **{k: str(v) for k, v in (("ca_file", upstream.ref.ca_file),
                                          ("client_cert", upstream.ref.client_cert),
                                          ("client_key", upstream.ref.client_key)) if v},
            )
        return predictors

    def on_promotion(self, name: str) -> None:
        """Refit the deployment's explainers in the background after a promotion."""
        queue = self.queues.get(name)
        if queue is None or queue.worker is None:
            return
        task = asyncio.create_task(queue.worker.refit())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            if not any(q.durable for q in self.queues.values()):
                continue
            try:
                await self.store.renew_explanation_leases(self.owner, time.time() + LEASE_S)
            except Exception:
                log.exception("renewing explanation leases failed")

    async def _backlog_loop(self) -> None:
        while True:
            try:
                await self.update_backlog()
            except Exception:
                log.exception("reading the explanation backlog failed")
            await asyncio.sleep(BACKLOG_INTERVAL_S)

    async def update_backlog(self) -> dict[str, tuple[int, float]]:
        """Read the jobs owed per deployment into the backlog gauges; returns them
        (deployment -> (jobs, decision time of the oldest))."""
        backlog = await self.store.explanation_backlog()
        now = time.time()
        for name in self.queues:
            count, oldest = backlog.get(name, (0, now))
            self.metrics.explanation_backlog.labels(name).set(count)
            self.metrics.explanation_oldest_age.labels(name).set(max(0.0, now - oldest))
        return backlog

    async def close(self, grace_s: float = 3.0) -> None:
        """Stop claiming, let running explanations finish for up to ``grace_s``
        seconds, stop the pools, and give this process's leases back."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await asyncio.gather(*(q.close(grace_s) for q in self.queues.values()))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self.queues:
            try:
                released = await self.store.release_explanation_jobs(self.owner, refund=True)
            except Exception:
                log.exception("giving explanation leases back failed (they expire in %.0f s)",
                              LEASE_S)
            else:
                if released:
                    log.info("%d explanation jobs left for another process", released)


def _worker_spec(spec):
    """The worker's copy of the spec: the queue applies sampling and room itself, so
    the worker explains whatever it is given."""
    fields = type(spec).model_fields
    update: dict[str, Any] = {"sample_rate": 1.0, "max_queue": 1_000_000}
    if "when" in fields:
        update["when"] = "all"
    return spec.model_copy(update=update)


def explanation_parameter(document: dict[str, Any]) -> str:
    """The explanation as the JSON text carried in response ``parameters``."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY).decode()
