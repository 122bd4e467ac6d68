"""One deployment's explanations: which decisions, where they wait, who computes them.

Each new decision meets the deployment's :class:`~gateway.explanation_policy.ExplanationPolicy`:

* **adverse** (and every decision a client asks to have explained): a job goes into the
  decision store on the writer queue just before the decision, so the two commit
  together (``gateway.decisions.explanation_jobs``). When this process has room
  (fewer than ``workers * max_batch`` such jobs running here, enough to fill the
  worker's batches; always in ``inline`` mode) the
  job is leased to it at once and explained here; otherwise it waits in the store for
  whichever process claims it first. A claim loop takes waiting jobs (free or past their
  lease: a process that died, a restart) whenever room frees up, and at least every
  :data:`POLL_S` seconds. A job whose explanation fails is retried up to
  :data:`MAX_ATTEMPTS` times (after :data:`RETRY_S`, doubling), then recorded as
  failed; one that finishes is recorded and deleted in one transaction.
* **best effort** (``when: all`` or sampled): explained here while fewer than
  ``max_queue`` explanations run and no stored job waits for room; otherwise shed,
  with ``{"status": "skipped", "reason": "queue_full"}`` on the decision and the count
  in ``arbiter_explanations_shed_total``.

Explanations run in the deployment's :class:`~explain.worker.ExplanationWorker` (a
process pool); this class is its only client and applies the budget itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import numpy as np

from explain.settings import ExplainSpec
from gateway.decisions import Decision
from gateway.decisions.explanation_jobs import ExplanationJob
from gateway.explanation_policy import ExplanationPolicy
from gateway.metrics import GatewayMetrics
from protos.errors import InvalidRequestError, NotFoundError
from protos.protocol import InferenceRequest

__all__ = ["DEADLINE_PARAMETER", "ExplanationQueue", "LEASE_S", "MAX_ATTEMPTS", "POLL_S",
           "RETRY_S", "decision_rows"]

log = logging.getLogger("arbiter.explain")

LEASE_S = 10.0
"""Seconds a claim holds a job; renewed every third of it while the job runs here."""
POLL_S = 1.0
"""Longest wait between two looks for jobs waiting in the store."""
MAX_ATTEMPTS = 3
"""Claims of a job before its failure is final."""
RETRY_S = 2.0
"""Wait before a failed job may be claimed again (doubled at each attempt)."""
PERMANENT = frozenset({"unknown model"})
"""Failure reasons not worth another attempt."""
DEADLINE_PARAMETER = "explanation_deadline_s"
"""Request parameter: seconds an ``inline`` response waits for its explanation."""


class ExplanationQueue:
    """The explanations of deployment ``name``.

    Args:
        name: the deployment.
        spec: its ``explain`` block.
        store: the decision store (an :class:`~gateway.decisions.SQLDecisionStore`).
        metrics: gateway metrics.
        owner: this process's lease owner id (unique per process).
    """

    def __init__(self, name: str, spec: ExplainSpec, store: Any, metrics: GatewayMetrics,
                 owner: str) -> None:
        self.name = name
        self.spec = spec
        self.store = store
        self.metrics = metrics
        self.owner = owner
        self.policy = ExplanationPolicy(spec)
        self.inline = spec.mode == "inline"
        self.deadline_s = float(spec.inline_deadline_s or spec.timeout_s)
        self.room = spec.workers * max(2, int(getattr(spec, "max_batch", 2)))
        self.worker: Any = None
        self.running: dict[str, asyncio.Task] = {}
        """Decision id -> task, for every explanation running in this process."""
        self.durable: set[str] = set()
        """Ids of the stored jobs running here (leased to :attr:`owner`)."""
        self._owed = False  # jobs wait in the store for room
        self._closing = False
        self._wake = asyncio.Event()
        self._claims: asyncio.Task | None = None

    # -- decisions ---------------------------------------------------------------------
    def on_decision(self, decision: Decision, request: InferenceRequest) -> Awaitable | None:
        """Schedule the explanation of a new decision (called just before it is
        recorded; sets ``decision.explanation``).

        Returns:
            In ``inline`` mode, an awaitable of the explanation document (or of
            ``{"status": "pending"}`` past the deadline); else None.

        Raises:
            InvalidRequestError: a bad ``explanation_deadline_s`` parameter.
        """
        deadline_s = self._deadline(request) if self.inline else 0.0
        verdict = self.policy.verdict(decision.outputs.get(decision.routed, {}))
        if verdict == "not_explained":
            return None
        if verdict == "not_sampled":
            return self._shed(decision, "not_sampled")
        rows = _request_rows(request)
        if rows is None:
            decision.explanation = {"status": "skipped", "reason": "input not numeric"}
            return None
        job = ExplanationJob(decision.id, self.name, decision.routed, rows,
                             "adverse" if verdict == "adverse" else "best_effort", decision.time)
        if verdict == "adverse":
            task = self._store(job)
        elif self.worker is None or self._owed or len(self.running) >= self.spec.max_queue:
            return self._shed(decision, "queue_full" if self.worker else "not_started")
        else:
            task = self._launch(job, durable=False)
        decision.explanation = {"status": "pending", "kind": job.kind}
        if task is None or not self.inline:
            return None
        return _within(task, deadline_s, decision.id)

    async def request(self, decision: Decision) -> str:
        """Queue the explanation of ``decision`` on demand (a client asked for it).

        Returns:
            ``queued``, ``pending`` (already owed) or ``final`` (done or failed).

        Raises:
            NotFoundError: the decision failed (no prediction), or its inputs were not
                kept (``store.inputs``) so nothing can be explained.
        """
        if decision.status != "ok":
            raise NotFoundError(f"decision {decision.id!r} failed: it has no prediction to "
                                "explain")
        job = ExplanationJob(decision.id, self.name, decision.routed, decision_rows(decision),
                             "requested", decision.time)
        here = self._has_room() and decision.id not in self.running
        job.attempts = int(here)
        lease = time.time() + LEASE_S if here else 0.0
        outcome = await self.store.request_explanation_job(job, self.owner if here else None,
                                                           lease)
        if outcome == "queued" and here:
            self._launch(job, durable=True)
        elif outcome == "queued":
            self._owed = True
        return outcome

    def _store(self, job: ExplanationJob) -> asyncio.Task | None:
        """Queue a durable job; run it here when there is room."""
        here = self._has_room() or (self.inline and self.worker is not None)
        job.attempts = int(here)
        self.store.queue_explanation_job(job, self.owner if here else None,
                                         time.time() + LEASE_S if here else 0.0)
        if not here:
            self._owed = True
            return None
        return self._launch(job, durable=True)

    def _has_room(self) -> bool:
        return self.worker is not None and not self._closing and len(self.durable) < self.room

    def _shed(self, decision: Decision, reason: str) -> None:
        decision.explanation = {"status": "skipped", "reason": reason}
        self.metrics.explanations_shed.labels(self.name, reason).inc()
        self.metrics.explanations.labels(self.name, "skipped").inc()

    def _deadline(self, request: InferenceRequest) -> float:
        value = request.parameters.get(DEADLINE_PARAMETER)
        if value is None:
            return self.deadline_s
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0 <= seconds <= self.spec.timeout_s:
            raise InvalidRequestError(f"parameter {DEADLINE_PARAMETER!r} must be a number of "
                                      f"seconds from 0 to {self.spec.timeout_s:g}, got {value!r}")
        return seconds

    # -- running -----------------------------------------------------------------------
    def _launch(self, job: ExplanationJob, durable: bool) -> asyncio.Task:
        if durable:
            self.durable.add(job.decision_id)
        task = asyncio.create_task(self._explain(job, durable), name=f"explain-{job.decision_id}")
        self.running[job.decision_id] = task
        self.metrics.explanation_queue.labels(self.name).set(len(self.running))
        return task

    async def _explain(self, job: ExplanationJob, durable: bool) -> dict[str, Any]:
        try:
            futures = [await self.worker.submit(job.decision_id, job.model,
                                                np.asarray(row, np.float32))
                       for row in job.rows]
            results = [(await future).to_dict() for future in futures]
            document = results[0] if len(results) == 1 else _combine(results)
            document.update(decision_id=job.decision_id, kind=job.kind, attempts=job.attempts,
                            decided_at=job.created, explained_at=time.time())
            for result in results:
                if result.get("latency_s") is not None:
                    self.metrics.explanation_duration.labels(self.name).observe(
                        result["latency_s"])
            await self._record(job, durable, document)
            return document
        except Exception as exc:  # never raised into a response; a stored job stays owed
            log.exception("%s: explanation of %s failed", self.name, job.decision_id)
            return {"status": "failed", "reason": "explainer error", "detail": repr(exc)}
        finally:
            self.running.pop(job.decision_id, None)
            self.durable.discard(job.decision_id)
            self.metrics.explanation_queue.labels(self.name).set(len(self.running))
            if self._owed:  # room freed for jobs known to wait; others are polled
                self._wake.set()

    async def _record(self, job: ExplanationJob, durable: bool, document: dict) -> None:
        status = document["status"]
        if not durable:
            self.store.attach_explanation(job.decision_id, document)
            self.metrics.explanations.labels(self.name, status).inc()
            return
        reason = _reason(document)
        if status != "done" and (self._closing or reason == "closed"):
            return  # released when the queue closes: another process takes it up
        if status == "done" or reason in PERMANENT or job.attempts >= MAX_ATTEMPTS:
            self.store.finish_explanation_job(job.decision_id, document)
            self.metrics.explanations.labels(self.name, status).inc()
            return
        self.metrics.explanation_retries.labels(self.name, reason or status).inc()
        retry_at = time.time() + RETRY_S * 2 ** (job.attempts - 1)
        try:
            await self.store.release_explanation_jobs(self.owner, [job.decision_id], retry_at)
        except Exception:  # the lease expires anyway
            log.exception("%s: releasing the explanation job of %s failed", self.name,
                          job.decision_id)

    # -- claiming ----------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except TimeoutError:
                pass
            self._wake.clear()
            free = self.room - len(self.durable)
            if free <= 0 or self._closing:
                continue
            try:
                await self._claim(free)
            except Exception as exc:  # a store outage: the jobs wait in the store
                log.warning("%s: claiming explanation jobs failed (%s); retrying in %.0f s",
                            self.name, exc, POLL_S)
                await asyncio.sleep(POLL_S)

    async def _claim(self, free: int) -> None:
        if not await self.store.claimable_explanation_jobs(self.name):
            self._owed = False
            return
        jobs = await self.store.claim_explanation_jobs(self.name, self.owner, LEASE_S, free)
        self._owed = len(jobs) >= free
        for job in jobs:
            if job.decision_id in self.running:  # a lease of ours that expired
                continue
            self._launch(job, durable=True)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, worker: Any) -> None:
        """Explain with ``worker`` (started) from now on, and claim waiting jobs."""
        self.worker = worker
        self._claims = asyncio.create_task(self._claim_loop(), name=f"claims-{self.name}")

    async def close(self, grace_s: float) -> None:
        """Stop claiming, let running explanations finish for up to ``grace_s`` seconds
        (best-effort ones end ``failed``/``closed``; stored jobs stay owed, released by
        the caller), stop the worker."""
        self._closing = True
        if self._claims is not None:
            self._claims.cancel()
            await asyncio.gather(self._claims, return_exceptions=True)
        if self.worker is not None:
            await self.worker.close(grace_s=grace_s)
        if self.running:
            await asyncio.wait(set(self.running.values()), timeout=5)


async def _within(task: asyncio.Task, deadline_s: float, decision_id: str) -> dict[str, Any]:
    """The task's document, or ``{"status": "pending"}`` after ``deadline_s`` seconds
    (the explanation goes on)."""
    try:
        return await asyncio.wait_for(asyncio.shield(task), deadline_s)
    except TimeoutError:
        return {"status": "pending", "decision_id": decision_id}


def _request_rows(request: InferenceRequest) -> list[list[float]] | None:
    """The first input as float rows ``[rows][features]``, or None when not numeric."""
    try:
        rows = np.asarray(request.inputs[0].data, dtype=np.float32)
    except (TypeError, ValueError, IndexError):
        return None
    return (rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows.reshape(1, -1)).tolist()


def decision_rows(decision: Decision) -> list[list[float]]:
    """The recorded first input of ``decision`` as float rows ``[rows][features]``.

    Raises:
        NotFoundError: the record keeps no input data (``store.inputs: hash`` or
            ``drop``, or an input too large to record).
    """
    doc = next(iter(decision.inputs.values()), None)
    if not doc or "data" not in doc:
        raise NotFoundError(f"decision {decision.id!r} has no explanation and its inputs "
                            "were not kept (store.inputs), so none can be computed")
    rows = np.asarray(doc["data"], dtype=np.float32).reshape(doc.get("shape") or [1, -1])
    return (rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows.reshape(1, -1)).tolist()


def _combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = {r["status"] for r in results}
    status = "done" if statuses == {"done"} else "failed" if "failed" in statuses else "skipped"
    return {"status": status, "rows": results}


def _reason(document: dict[str, Any]) -> str | None:
    """The reason of a failed or skipped document (of its first such row)."""
    if document.get("reason"):
        return document["reason"]
    return next((r.get("reason") for r in document.get("rows", ()) if r["status"] != "done"),
                None)
