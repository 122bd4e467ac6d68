"""The decision store on SQL: one writer thread with group commit, readers beside it.

Every write is an operation queued to one writer thread per process
(``gateway.decisions.writer``), which owns one connection and commits every operation
waiting in one transaction (group commit; savepoints isolate a failing operation).

Decision writes may stay queued (write-behind, ``decision_writes: behind``): the
queue is bounded by ``write_queue``; a full queue makes the next decision wait for its
commit. Everything else (feedback, corrections, promotions, keyed decisions) is
awaited until committed. Reads run on other threads and connections, so they never
wait for the writer (except for the in-memory backend, whose one connection serves
both).

**Health.** While the database cannot be written (an outage, see the writer), the
store is unhealthy (:attr:`SQLDecisionStore.healthy`, reported through
``StoreMetrics.health``): new decisions, feedback, keyed decisions and reads fail at
once with :class:`~gateway.decisions.dialect.StoreUnavailableError` (503 with
Retry-After, gRPC UNAVAILABLE), callers waiting for a commit are released with it,
and the decisions already answered stay queued (at most ``write_queue`` of them, the
bound of what an answered decision may wait for) until the writer's probes find the
database again; then the store is healthy by itself. A process that stops during an
outage drops what it kept after ``CLOSE_GRACE_S`` seconds, each drop counted by
``StoreMetrics.write_errors``; one killed (SIGKILL, OOM) loses them uncounted.

The SQL is written once, with ``?`` placeholders, and adapted by a :class:`Dialect`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.config import StoreSpec
from gateway.decisions import explanation_jobs as jobs
from gateway.decisions.dialect import Dialect, StoreError, StoreUnavailableError
from gateway.decisions.operations import (
    correct_feedback,
    create_schema,
    decision_row,
    dumps,
    find_holder,
    insert_decision,
    insert_feedback,
    nothing,
    probe,
    promote_router,
    purge_before,
    put_value,
    select_decisions,
    state_of_all,
    upsert_doc,
)
from gateway.decisions.record import Decision
from gateway.decisions.state import CachedState
from gateway.decisions.store import DecisionStore, FeedbackRecorded, StoreMetrics
from gateway.decisions.writer import Dropped, Op, Writer
from protos.errors import DecisionNotFoundError
from routers.state import Learning

__all__ = ["SQLDecisionStore"]

log = logging.getLogger("arbiter.decisions")

PURGE_INTERVAL_S = 3600.0
"""How often decisions past ``store.retention_days`` are deleted."""

PROBE_AFTER_S = 1.0
"""Least time between two probes asked for by failed reads."""


class SQLDecisionStore(DecisionStore):
    """:class:`DecisionStore` on a SQL database (see the module docstring).

    Args:
        spec: the ``store:`` block of the gateway config.
        dialect: the backend.
        metrics: where write errors, queue depth and batch sizes are reported.
    """

    def __init__(self, spec: StoreSpec, dialect: Dialect, metrics: StoreMetrics | None = None):
        self.spec = spec
        self.dialect = dialect
        self.metrics = metrics or StoreMetrics()
        self.state = CachedState()
        self._writer: Writer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._healthy = True
        self._down_since = 0.0
        self._outage: asyncio.Future | None = None
        self._probed = 0.0
        self._opened = False
        self._stale_readers = False
        self._behind = 0
        self._queued: dict[str, asyncio.Future] = {}
        self._recent: OrderedDict[str, Decision] = OrderedDict()
        self._keys: list[str] = []
        self._readers: ThreadPoolExecutor | None = None
        self._reader: Callable | None = None
        self._refresher: asyncio.Task | None = None
        self._purger: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------
    async def open(self, router_keys: list[str]) -> None:
        """See :meth:`DecisionStore.open`.

        Raises:
            StoreError: one line naming the database (a path, or the DSN with its
                password masked) and why it cannot be opened or written.
        """
        self._loop = asyncio.get_running_loop()
        self._keys = list(router_keys)
        self._writer = Writer(self.dialect, self._loop, self.spec.flush_interval_ms / 1000,
                              self._health_changed, self.metrics.batch_size)
        try:
            await self._writer.start()
        except Exception as exc:
            raise self._open_error(exc) from None
        try:
            await self._call(create_schema, self.dialect)
            await self._call(jobs.create_jobs_schema)
        except StoreError:
            await self._writer.stop()
            raise
        except Exception as exc:
            await self._writer.stop()
            raise self._open_error(exc.__cause__ or exc) from None
        try:
            if not self.dialect.reads_through_writer:
                self._readers = ThreadPoolExecutor(2, thread_name_prefix="arbiter-store-reader")
                self._reader = self.dialect.reader()
            await self.refresh()
        except Exception as exc:
            await self.close()
            raise self._open_error(exc.__cause__ or exc) from None
        self._opened = True
        self._refresher = asyncio.create_task(self._refresh_loop(), name="store-refresh")
        if self.spec.retention_days is not None:
            self._purger = asyncio.create_task(self._purge_loop(), name="store-purge")
        origin = self.spec.origin
        log.log(logging.WARNING if origin else logging.INFO,
                "decision store: %s at %s (decision_writes: %s, write_queue: %d)%s",
                self.dialect.name, self.dialect.where, self.spec.decision_writes,
                self.spec.write_queue, f"; {origin}" if origin else "")

    async def close(self) -> None:
        """See :meth:`DecisionStore.close`."""
        for task in (self._refresher, self._purger):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._writer is not None:
            await self._writer.stop()
        readers, reader = self._readers, self._reader
        self._readers = self._reader = None
        if readers is not None:
            if reader is not None:
                await asyncio.get_running_loop().run_in_executor(
                    readers, self.dialect.close_reader, reader)
            readers.shutdown(wait=True)

    @property
    def pending_writes(self) -> int:
        """See :meth:`DecisionStore.pending_writes`."""
        return self._behind

    @property
    def healthy(self) -> bool:
        """See :meth:`DecisionStore.healthy`."""
        return self._healthy

    def check_writable(self) -> None:
        """See :meth:`DecisionStore.check_writable`."""
        if not self._healthy:
            raise self._unavailable()

    def _open_error(self, exc: BaseException) -> StoreError:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(f"cannot open the {self.dialect.name} decision store at "
                          f"{self.dialect.where}: {cause}")

    def _unavailable(self) -> StoreUnavailableError:
        error = StoreUnavailableError(
            f"the decision store ({self.dialect.name}) cannot be written now; retry later")
        if self._writer is not None:
            error.retry_after_s = max(1, round(self._writer.backoff_s))
        return error

    def _health_changed(self, healthy: bool, cause: str) -> None:
        """Called on the event loop by the writer when an outage starts or ends."""
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if not self._opened:  # open() reports it, as a StoreError
            return
        self.metrics.health(healthy)
        if healthy:
            self._stale_readers = True  # pooled connections may date from before
            log.warning("the %s decision store at %s can be written again after %.1f s; "
                        "%d queued writes are being committed", self.dialect.name,
                        self.dialect.where, time.monotonic() - self._down_since, self._behind)
            return
        self._down_since = time.monotonic()
        log.error("the %s decision store at %s cannot be written (%s): decisions and "
                  "feedback are refused with 503 and the gateway is not ready until it "
                  "returns; %d queued writes are kept and retried", self.dialect.name,
                  self.dialect.where, cause, self._behind)
        if self._outage is not None and not self._outage.done():
            self._outage.set_result(None)
        self._outage = None

    async def _committed(self, future: asyncio.Future) -> Any:
        """The result of a write-behind operation once committed.

        Raises:
            StoreUnavailableError: an outage started (or was on) first; the operation
                stays queued and is committed when the database returns.
        """
        if future.done():
            return future.result()
        self.check_writable()
        if self._outage is None:
            assert self._loop is not None
            self._outage = self._loop.create_future()
        outage = self._outage
        await asyncio.wait((future, outage), return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        raise self._unavailable()

    # -- writes ----------------------------------------------------------------------
    async def create(
        self, decision: Decision, *, idempotency_key: str | None = None,
        window_s: float = 0.0, wait: bool = False, request_hash: str | None = None,
    ) -> Decision:
        """See :meth:`DecisionStore.create`."""
        self.check_writable()
        key = idempotency_key or None
        row = decision_row(decision, key, self.spec.inputs, request_hash)
        args = (row, key, decision.time - window_s)
        self._remember(decision)
        if wait or key:
            try:
                holder = await self._call(insert_decision, *args)
            except BaseException:
                self._recent.pop(decision.id, None)
                raise
        else:
            full = self._behind >= self.spec.write_queue
            future = self._submit(insert_decision, args, behind=True)
            self._queued[decision.id] = future
            future.add_done_callback(lambda _: self._queued.pop(decision.id, None))
            if not full:
                return decision
            holder = await self._committed(future)  # backpressure: room, or 503
        if holder == decision.id:
            return decision
        self._recent.pop(decision.id, None)
        return await self.get(holder)

    def add_shadow_output(
        self, decision_id: str, model: str, outputs: Mapping[str, Any] | None,
        latency_ms: float | None = None, error: str | None = None,
    ) -> None:
        """See :meth:`DecisionStore.add_shadow_output`."""
        doc: dict[str, Any] = (
            {"error": error} if error is not None
            else {"outputs": outputs, "latency_ms": latency_ms}
        )
        recent = self._recent.get(decision_id)
        if recent is not None:
            if error is not None:
                recent.errors[model] = error
            else:
                recent.outputs[model] = dict(outputs or {})
                recent.latency_ms[model] = latency_ms or 0.0
        self._submit(upsert_doc, ("shadow_outputs", ("decision_id", "model"),
                               (decision_id, model, dumps(doc))), behind=True)

    def attach_explanation(self, decision_id: str, explanation: dict[str, Any]) -> None:
        """See :meth:`DecisionStore.attach_explanation`."""
        recent = self._recent.get(decision_id)
        if recent is not None:
            recent.explanation = explanation
        self._submit(upsert_doc, ("explanations", ("decision_id",),
                               (decision_id, dumps(explanation))), behind=True)

    async def record_feedback(
        self, decision: Decision, feedback: dict[str, Any], rewards: dict[str, float],
        learning: Learning | None,
    ) -> FeedbackRecorded:
        """See :meth:`DecisionStore.record_feedback`."""
        return await self._feedback(insert_feedback, decision, feedback, rewards, learning)

    async def correct_feedback(
        self, decision: Decision, feedback: dict[str, Any], rewards: dict[str, float],
        learning: Learning | None,
    ) -> FeedbackRecorded:
        """See :meth:`DecisionStore.correct_feedback`."""
        return await self._feedback(correct_feedback, decision, feedback, rewards, learning)

    async def _feedback(self, handler, decision, feedback, rewards, learning):
        self.check_writable()
        await self._written(decision.id)
        key = learning.key if learning is not None else None
        row = (decision.id, decision.deployment, float(feedback["time"]), dumps(feedback),
               dumps(rewards))
        result, snapshot = await self._call(handler, row, rewards, learning, lock=key)
        if key is not None:
            self.state.replace(key, snapshot)
        return result

    async def promote(self, key: str, expected: Any, record: Mapping[str, Any]) -> bool:
        """See :meth:`DecisionStore.promote`."""
        done, snapshot = await self._call(promote_router, key, expected, dict(record), lock=key)
        self.state.replace(key, snapshot)
        return done

    async def put_value(self, key: str, name: str, value: Any) -> None:
        """See :meth:`DecisionStore.put_value`."""
        snapshot = await self._call(put_value, key, name, value, lock=key)
        self.state.replace(key, snapshot)

    async def purge(self, before: float) -> int:
        """See :meth:`DecisionStore.purge`."""
        purged = await self._call(purge_before, before)
        await self._call(jobs.purge_jobs, before)
        for decision_id in [i for i, d in self._recent.items() if d.time < before]:
            del self._recent[decision_id]
        return purged

    async def _purge_loop(self) -> None:
        assert self.spec.retention_days is not None
        while True:
            try:
                cutoff = time.time() - self.spec.retention_days * 86_400
                purged = await self.purge(cutoff)
                if purged:
                    log.info("deleted %d decisions older than %g days", purged,
                             self.spec.retention_days)
            except Exception:
                log.exception("deleting expired decisions failed; retrying in %.0f s",
                              PURGE_INTERVAL_S)
            await asyncio.sleep(PURGE_INTERVAL_S)

    # -- reads -----------------------------------------------------------------------
    def cached(self, decision_id: str) -> Decision | None:
        """The decision as this process made it and saw its shadows answer, or None
        (another process's, or evicted)."""
        return self._recent.get(decision_id)

    async def get(self, decision_id: str) -> Decision:
        """See :meth:`DecisionStore.get`; every write this process queued before the
        call (shadow outputs, explanations) is committed first."""
        await self._flush()
        found = await self._read(select_decisions, "d.id = ?", (decision_id,), None)
        if not found:
            raise DecisionNotFoundError(f"decision {decision_id!r} not found")
        return found[0]

    async def list(
        self, deployment: str, since: float | None = None, until: float | None = None,
        limit: int | None = None,
    ) -> list[Decision]:
        """See :meth:`DecisionStore.list`."""
        await self._flush()
        where, params = "d.deployment = ?", [deployment]
        if since is not None:
            where, params = where + " AND d.time >= ?", [*params, since]
        if until is not None:
            where, params = where + " AND d.time < ?", [*params, until]
        return await self._read(select_decisions, where, tuple(params), limit)

    async def find(self, deployment: str, idempotency_key: str, since: float,
                   request_hash: str | None = None) -> Decision | None:
        """See :meth:`DecisionStore.find`."""
        return await self._read(find_holder, deployment, idempotency_key, since, request_hash)

    async def refresh(self) -> None:
        """Reload every router's state from the database now."""
        generation = self.state.generation
        snapshots = await self._read(state_of_all, self._keys)
        self.state.load(snapshots, generation)

    async def _refresh_loop(self) -> None:
        interval = self.spec.refresh_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except StoreUnavailableError:
                pass  # the outage is logged once, by the writer's report
            except Exception:
                log.exception("reloading router state failed; retrying in %.2f s", interval)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a read; during an outage, or when the read finds the database gone
        (which has the writer probe it), fail with StoreUnavailableError. After either,
        the next read first replaces the read connections the outage broke."""
        self.check_writable()
        if self.dialect.reads_through_writer:
            return await self._call(fn, *args)
        assert self._readers is not None and self._reader is not None
        reader, loop = self._reader, asyncio.get_running_loop()
        if self._stale_readers:
            self._stale_readers = False
            await loop.run_in_executor(self._readers, self._renew_reader, reader)
        try:
            return await loop.run_in_executor(
                self._readers, lambda: reader(lambda tx: fn(tx, *args))
            )
        except Exception as exc:
            if not self.dialect.unavailable(exc):
                raise
            self._stale_readers = True
            self._probe()
            log.warning("a read of the %s decision store failed: %s", self.dialect.name, exc)
            raise self._unavailable() from None

    def _renew_reader(self, reader: Callable) -> None:
        try:
            self.dialect.renew_reader(reader)
        except Exception as exc:  # the database is still away: the next read says so
            log.debug("renewing the store's read connections failed: %s", exc)

    def _probe(self) -> None:
        """Have the writer check the database now (at most every PROBE_AFTER_S)."""
        now = time.monotonic()
        if self._writer is not None and now - self._probed >= PROBE_AFTER_S:
            self._probed = now
            self._writer.put(Op(probe, (), None, None))

    async def _written(self, decision_id: str) -> None:
        """Wait until a queued write of this decision is committed.

        Raises:
            StoreUnavailableError: an outage holds it back.
        """
        queued = self._queued.get(decision_id)
        if queued is not None:
            await self._committed(queued)

    async def _flush(self) -> None:
        """Wait until every write queued so far is committed."""
        await self._call(nothing)

    # -- the writer --------------------------------------------------------------------
    def _remember(self, decision: Decision) -> None:
        self._recent[decision.id] = decision
        if len(self._recent) > self.spec.memory_size:
            self._recent.popitem(last=False)

    def _submit(self, handler, args: tuple, *, lock: str | None = None,
                behind: bool = False) -> asyncio.Future:
        assert self._loop is not None and self._writer is not None, "store not open"
        future = self._loop.create_future()
        if behind:
            self._behind += 1
            self.metrics.queue_depth(self._behind)
            future.add_done_callback(self._written_behind)
        self._writer.put(Op(handler, args, lock, future, behind))
        return future

    def _written_behind(self, future: asyncio.Future) -> None:
        self._behind -= 1
        self.metrics.queue_depth(self._behind)
        if future.cancelled() or future.exception() is None:
            return
        self.metrics.write_errors(1)
        if self._behind == 0 or not isinstance(future.exception(), Dropped):
            log.error("a queued decision write failed: %s", future.exception())

    async def _call(self, handler, *args, lock: str | None = None):
        """Run an operation on the writer and wait for its commit.

        Raises:
            StoreUnavailableError: during an outage (at once).
        """
        self.check_writable()
        return await self._submit(handler, args, lock=lock)

    # -- explanation jobs (gateway.decisions.explanation_jobs) -------------------------
    def queue_explanation_job(self, job: jobs.ExplanationJob, owner: str | None,
                              lease_until: float) -> asyncio.Future:
        """Queue ``job`` (leased to ``owner`` until ``lease_until``, Unix seconds; 0:
        free) on the writer; queued just before its decision, it commits with it or
        before it. Never awaits."""
        return self._submit(jobs.insert_job, (job, owner, lease_until), behind=True)

    async def request_explanation_job(self, job: jobs.ExplanationJob, owner: str | None,
                                      lease_until: float) -> str:
        """Queue ``job`` unless the explanation is final or owed (committed before
        returning): ``queued``, ``pending`` or ``final``."""
        return await self._call(jobs.request_job, job, owner, lease_until)

    async def claim_explanation_jobs(self, deployment: str, owner: str, lease_s: float,
                                     limit: int) -> list[jobs.ExplanationJob]:
        """Lease up to ``limit`` free or expired jobs of ``deployment`` to ``owner``."""
        return await self._call(jobs.claim_jobs, deployment, owner, time.time(), lease_s, limit)

    async def renew_explanation_leases(self, owner: str, until: float) -> int:
        """Extend ``owner``'s leases to ``until`` (Unix seconds)."""
        return await self._call(jobs.renew_leases, owner, until)

    def finish_explanation_job(self, decision_id: str, document: dict[str, Any]) -> asyncio.Future:
        """Record a final explanation and delete its job, in one transaction (queued)."""
        recent = self._recent.get(decision_id)
        if recent is not None:
            recent.explanation = document
        return self._submit(jobs.finish_job, (decision_id, dumps(document)), behind=True)

    async def release_explanation_jobs(self, owner: str, decision_ids: list[str] | None = None,
                                       retry_at: float = 0.0, refund: bool = False) -> int:
        """Give up ``owner``'s leases; see :func:`explanation_jobs.release_jobs`."""
        return await self._call(jobs.release_jobs, owner, decision_ids, retry_at, refund)

    async def explanation_state(self, decision_id: str) -> jobs.JobState:
        """The stored explanation and the job owed of a decision (writes queued by this
        process committed first)."""
        await self._flush()
        return await self._read(jobs.job_state, decision_id)

    async def explanation_backlog(self) -> dict[str, tuple[int, float]]:
        """Deployment -> (jobs owed, decision time of the oldest, Unix seconds)."""
        return await self._read(jobs.backlog)

    async def claimable_explanation_jobs(self, deployment: str) -> int:
        """How many jobs of ``deployment`` no live lease holds (a read)."""
        return await self._read(jobs.claimable, deployment, time.time())
