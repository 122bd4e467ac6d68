"""Explanations off the event loop: a process pool with a queue bound, a deadline, batches.

The gateway hands each decision to :meth:`ExplanationWorker.submit` and gets back a future
that always resolves to an :class:`ExplanationResult` (never an exception), and every
result is also passed to the ``on_result`` hook. Explanations run in ``spec.workers``
spawned processes (see :mod:`explain.process`); each process fits its explainers ONCE,
in the pool initializer, and keeps them for every request.

Submissions wait on the event-loop side until a process is free; a free process takes
the pending decisions of one model, oldest first, up to ``spec.max_batch`` at once, and
explains them together (Kernel SHAP: one model call for the whole batch; linear and tree
SHAP: one vectorised computation). ``submit`` never waits: predictions do not queue
behind explanations, and the processes run at a lower CPU priority. A result is one of:

==========  ==============================================================================
status      reason
==========  ==============================================================================
done        (none)
skipped     ``off`` (mode off), ``not sampled`` (sample_rate), ``queue full`` (max_queue
            explanations already pending), ``closed`` (worker closing)
failed      ``timeout`` (not finished within timeout_s of submission), ``explainer error``
            (the method or the model call raised; ``detail`` says what), ``unknown model``
            (no predictor or artifact for the model key), ``worker crashed`` (a process
            died; the pool is rebuilt), ``closed`` (cancelled by close)
==========  ==============================================================================

``pending`` is the status a caller records before the result arrives
(:meth:`ExplanationResult.pending`). Reasons are a bounded set, fit for metric labels.

Deadlines are enforced twice: the event loop stops waiting for a batch at the earliest
deadline of its decisions (``timeout_s`` after each submission), and the worker process
stops the explainer at its next model call after that deadline. A decision whose
deadline passes while it waits for a process fails without being sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from explain.base import Explanation
from explain.predictors import PredictorFactory
from explain.process import ExplanationTimeoutError, FitInputs, init_process, ping, run_batch
from explain.provenance import file_sha256
from explain.registry import reason_writer
from explain.results import ExplanationResult, ExplanationStats, ExplanationStatus, ResultHook
from explain.settings import LOCAL_METHODS, ExplainSpec

__all__ = [
    "ExplanationStatus",
    "ExplanationResult",
    "ExplanationStats",
    "ExplanationTimeoutError",
    "ExplanationWorker",
]

logger = logging.getLogger(__name__)

_BUDGET_FIELDS = {"mode", "sample_rate", "max_queue", "timeout_s", "when", "max_batch"}
"""Settings the worker processes do not depend on (changing them keeps the pool)."""


@dataclass(slots=True)
class _Pool:
    executor: concurrent.futures.ProcessPoolExecutor
    models: frozenset[str]
    broken: bool = False


@dataclass(slots=True, eq=False)
class _Job:
    """One submitted decision until its result is set."""

    decision_id: str
    model: str
    row: np.ndarray
    submitted: float
    deadline: float
    future: asyncio.Future[ExplanationResult]


class ExplanationWorker:
    """Runs a deployment's explanations in a process pool, within a budget.

    Call :meth:`start` at startup (spawns and fits the processes), :meth:`submit` after
    each decision, :meth:`refit` when the champion or the models change, and
    :meth:`close` at shutdown. All methods run on the event loop; none blocks it.

    Args:
        spec: the deployment's explanation settings.
        predictors: model key -> picklable zero-argument factory of the model's batch
            ``predict_fn`` (:class:`~explain.client.ModelEndpoint` for a remote model,
            :class:`~explain.predictors.JoblibPredictor` for a local file). Not needed for
            models explained by tree_shap or linear_shap, whose models come from
            ``spec.model_artifact``.
        on_result: called on the event loop with every final result (done, skipped or
            failed); exceptions it raises are logged and dropped.
        rng: source of the sampling decisions (``spec.sample_rate``).
        clock: monotonic clock for latencies and ages, seconds.
        mp_context: multiprocessing start method; ``spawn`` (default) is safe with
            threads and event loops in the parent.

    Raises:
        OSError, ValueError: the encoding, reference data or reference outcomes cannot
            be read, or do not fit each other.
    """

    def __init__(
        self,
        spec: ExplainSpec,
        predictors: Mapping[str, PredictorFactory] | None = None,
        *,
        on_result: ResultHook | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        mp_context: str = "spawn",
    ) -> None:
        self._on_result = on_result
        self._rng = rng or random.Random(spec.seed)
        self._clock = clock
        self._mp = multiprocessing.get_context(mp_context)
        self._tasks: set[asyncio.Task[None]] = set()
        self._retired: list[_Pool] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, deque[_Job]] = {}
        self._open: dict[_Job, None] = {}  # unfinished jobs in submission order
        self._running = 0
        self._dispatch_scheduled = False
        self._closed = False
        self._stopping = False
        self._stats = ExplanationStats()
        self._configure(spec, predictors or {})
        self._pool: _Pool | None = None

    # -- public API --------------------------------------------------------------------

    @property
    def spec(self) -> ExplainSpec:
        """The settings in force."""
        return self._spec

    @property
    def stats(self) -> ExplanationStats:
        """Counters (live object; read, do not modify), with ``oldest_pending_age_s``
        measured now."""
        oldest = next(iter(self._open), None)
        self._stats.oldest_pending_age_s = self._clock() - oldest.submitted if oldest else 0.0
        return self._stats

    async def start(self) -> dict[str, str]:
        """Spawn the processes and fit their explainers now rather than on first use.

        Returns:
            Model key -> fitting error, for models whose explainer could not be fitted
            (their explanations will fail with ``explainer error``); empty when all fit.
        """
        if self._closed or self._spec.mode == "off":
            return {}
        return await self._warm(self._current_pool())

    async def submit(
        self, decision_id: str, model: str, row: np.ndarray
    ) -> asyncio.Future[ExplanationResult]:
        """Queue the explanation of one decision; never raises, never waits.

        Args:
            decision_id: id of the decision record the result belongs to.
            model: key of the model that made the decision.
            row: the model's input, float32 ``[1, n_features]`` (copied).

        Returns:
            A future resolving to the final :class:`ExplanationResult` (already resolved
            when skipped). Cancelling it does not cancel the explanation.
        """
        method = self._spec.method_for(model)
        try:
            reason = self._skip_reason(model)
            if reason is not None:
                return self._resolved(ExplanationResult(decision_id, model, "skipped", reason,
                                                        method=method))
            if model not in self._models():
                return self._resolved(ExplanationResult(decision_id, model, "failed",
                                                        "unknown model", method=method))
            row = np.array(row, dtype=np.float32, copy=True).reshape(1, -1)
            n = len(self._schema.feature_names)
            if row.shape[1] != n:
                detail = f"ExplainerError: expected {n} features, got {row.shape[1]}"
                return self._resolved(ExplanationResult(decision_id, model, "failed",
                                                        "explainer error", detail, method=method))
            job = _Job(decision_id, model, row, self._clock(),
                       time.time() + self._spec.timeout_s,
                       asyncio.get_running_loop().create_future())
            self._open[job] = None
            self._waiting.setdefault(model, deque()).append(job)
            self._sync_stats()
            self._schedule_dispatch()
            return asyncio.shield(job.future)
        except Exception as exc:  # the caller's prediction path must not see this
            logger.exception("explanation of decision %s not submitted", decision_id)
            detail = f"{type(exc).__name__}: {exc}"
            return self._resolved(
                ExplanationResult(decision_id, model, "failed", "explainer error", detail,
                                  method=method)
            )

    async def refit(
        self,
        spec: ExplainSpec | None = None,
        predictors: Mapping[str, PredictorFactory] | None = None,
    ) -> dict[str, str]:
        """Replace the settings and/or predictors (a promotion changed the champion).

        When the explainers change (anything but the budget fields ``mode``,
        ``sample_rate``, ``max_queue``, ``timeout_s``, ``when`` and ``max_batch``, or the
        predictors), a new pool is spawned and fitted before it takes new batches;
        batches already running finish on the old pool, which is then shut down. A
        budget-only change keeps the pool.

        Returns:
            Fitting errors of the new pool, as :meth:`start`.

        Raises:
            OSError, ValueError: the new encoding or reference data cannot be read (the
                old settings stay in force).
        """
        new_spec = spec or self._spec
        new_predictors = dict(self._predictors if predictors is None else predictors)
        same = (
            _fit_inputs(new_spec) == _fit_inputs(self._spec) and new_predictors == self._predictors
        )
        await asyncio.to_thread(self._configure, new_spec, new_predictors)
        if same and self._pool is not None and not self._pool.broken:
            return {}
        old, self._pool = self._pool, None
        errors = {} if self._closed or new_spec.mode == "off" else await self.start()
        if old is not None:
            self._retire(old)
        self._schedule_dispatch()
        return errors

    async def close(self, grace_s: float | None = None) -> None:
        """Stop taking explanations, let pending ones finish for up to ``grace_s``
        (default ``spec.timeout_s``), fail the rest with ``closed``, and stop every
        worker process (terminating those still busy). Idempotent."""
        self._closed = True
        pending = [job.future for job in self._open]
        if pending:
            grace = self._spec.timeout_s if grace_s is None else grace_s
            await asyncio.wait(pending, timeout=grace)
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for job in list(self._open):
            self._finish(job, ExplanationResult(job.decision_id, job.model, "failed", "closed"))
        self._waiting.clear()
        self._sync_stats()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        pools = [p for p in (self._pool, *self._retired) if p is not None]
        self._pool, self._retired = None, []
        for pool in pools:
            await asyncio.to_thread(_stop_executor, pool.executor)

    # -- configuration -----------------------------------------------------------------

    def _configure(self, spec: ExplainSpec, predictors: Mapping[str, PredictorFactory]) -> None:
        schema = spec.schema()
        n = len(schema.feature_names)
        reference = spec.load_reference() if spec.reference_data else np.zeros((0, n), np.float32)
        if reference.shape[0] and reference.shape[1] != n:
            raise ValueError(f"reference_data has {reference.shape[1]} columns, schema has {n}")
        outcomes = spec.load_outcomes()
        if outcomes is not None and len(outcomes) != len(reference):
            raise ValueError(f"reference_outcomes has {len(outcomes)} values for "
                             f"{len(reference)} reference rows")
        reason_writer(spec, schema, reference, outcomes)  # fails here, not in the processes
        models = _explained_models(spec, predictors)
        self._inputs = FitInputs(
            spec, schema, reference, outcomes, dict(predictors), models,
            {key: _model_info(spec, key, predictors.get(key)) for key in models},
        )
        self._spec, self._schema, self._predictors = spec, schema, dict(predictors)

    def _models(self) -> frozenset[str]:
        return self._inputs.models

    def _skip_reason(self, model: str) -> str | None:
        if self._closed:
            return "closed"
        if self._spec.mode == "off":
            return "off"
        rate = self._spec.sample_rate
        if rate < 1.0 and not self._rng.random() < rate:
            return "not sampled"
        if len(self._open) >= self._spec.max_queue:
            return "queue full"
        return None

    # -- pool --------------------------------------------------------------------------

    def _current_pool(self) -> _Pool:
        if self._pool is not None and self._pool.broken:
            self._retire(self._pool)
            self._pool = None
        if self._pool is None:
            executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._spec.workers,
                mp_context=self._mp,
                initializer=init_process,
                initargs=(self._inputs,),
            )
            self._pool = _Pool(executor, self._models())
        return self._pool

    async def _warm(self, pool: _Pool) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        errors: dict[str, str] = {}
        try:
            pings = [
                asyncio.wrap_future(pool.executor.submit(ping), loop=loop)
                for _ in range(self._spec.workers)
            ]
            for found in await asyncio.gather(*pings):
                errors.update(found)
        except Exception as exc:  # e.g. BrokenProcessPool: rebuilt on next use
            pool.broken = True
            errors["*"] = f"worker processes failed to start: {type(exc).__name__}: {exc}"
        for key, message in errors.items():
            logger.error("explainer for model %s not fitted: %s", key, message)
        return errors

    def _retire(self, pool: _Pool) -> None:
        """Shut ``pool`` down in the background once its running tasks end."""
        self._retired.append(pool)
        task = asyncio.create_task(asyncio.to_thread(pool.executor.shutdown, True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # -- batches -----------------------------------------------------------------------

    def _schedule_dispatch(self) -> None:
        """Dispatch on the next loop iteration, so that decisions submitted together
        (the rows of one request, a burst) leave in one batch."""
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        while not self._stopping and self._running < self._spec.workers:
            jobs = self._next_batch()
            if not jobs:
                break
            self._running += 1
            self._stats.batches += 1
            task = asyncio.create_task(self._run(jobs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._sync_stats()

    def _next_batch(self) -> list[_Job]:
        """Up to ``max_batch`` waiting jobs of the model whose oldest job is oldest;
        jobs already past their deadline fail with ``timeout`` instead."""
        while True:
            heads = [(queue[0].submitted, model) for model, queue in self._waiting.items() if queue]
            if not heads:
                return []
            queue = self._waiting[min(heads)[1]]
            jobs: list[_Job] = []
            now = time.time()
            while queue and len(jobs) < self._spec.max_batch:
                job = queue.popleft()
                if job.deadline <= now:
                    self._finish(job, ExplanationResult(job.decision_id, job.model, "failed",
                                                        "timeout"))
                else:
                    jobs.append(job)
            if jobs:
                return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        """Explain ``jobs`` (one model) in a worker process and set their results."""
        model = jobs[0].model
        deadline = min(job.deadline for job in jobs)
        future: concurrent.futures.Future[list[Explanation]] | None = None
        results: list[ExplanationResult]
        try:
            pool = self._current_pool()
            if model not in pool.models:
                raise _UnknownModel
            rows = np.concatenate([job.row for job in jobs])
            future = pool.executor.submit(run_batch, model, rows, deadline)
            wait_s = max(0.0, deadline - time.time())
            explanations = await asyncio.wait_for(asyncio.wrap_future(future), wait_s)
            results = [
                ExplanationResult(job.decision_id, model, "done", explanation=explanation)
                for job, explanation in zip(jobs, explanations, strict=True)
            ]
        except _UnknownModel:
            results = self._same(jobs, "failed", "unknown model")
        except (TimeoutError, ExplanationTimeoutError):
            results = self._same(jobs, "failed", "timeout")
        except asyncio.CancelledError:
            results = self._same(jobs, "failed", "closed")
        except BrokenProcessPool as exc:
            if self._pool is not None:
                self._pool.broken = True
            results = self._same(jobs, "failed", "worker crashed", str(exc))
        except Exception as exc:
            results = self._same(jobs, "failed", "explainer error",
                                 f"{type(exc).__name__}: {exc}")
        finally:
            if future is not None:
                future.cancel()
            self._running -= 1
        for job, result in zip(jobs, results, strict=True):
            self._finish(job, result)
        if not self._stopping:
            self._schedule_dispatch()

    @staticmethod
    def _same(jobs: list[_Job], status: ExplanationStatus, reason: str,
              detail: str | None = None) -> list[ExplanationResult]:
        return [ExplanationResult(job.decision_id, job.model, status, reason, detail)
                for job in jobs]

    # -- results -----------------------------------------------------------------------

    def _finish(self, job: _Job, result: ExplanationResult) -> None:
        result.latency_s = self._clock() - job.submitted
        result.method = self._spec.method_for(job.model)
        self._open.pop(job, None)
        self._sync_stats()
        self._record(result)
        if not job.future.done():
            job.future.set_result(result)

    def _sync_stats(self) -> None:
        self._stats.queue_depth = len(self._open)
        self._stats.backlog = sum(len(queue) for queue in self._waiting.values())

    def _resolved(self, result: ExplanationResult) -> asyncio.Future[ExplanationResult]:
        self._record(result)
        future: asyncio.Future[ExplanationResult] = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future

    def _record(self, result: ExplanationResult) -> None:
        stats = self._stats
        if result.status == "done":
            stats.done += 1
            stats.latency_count += 1
            stats.latency_s_sum += result.latency_s or 0.0
        elif result.status == "skipped":
            stats.skipped += 1
        else:
            stats.failed += 1
        if result.reason:
            stats.reasons[f"{result.status}/{result.reason}"] += 1
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:
                logger.exception("on_result hook failed for decision %s", result.decision_id)


class _UnknownModel(Exception):
    """A waiting job's model is not explained by the current pool (after a refit)."""


def _explained_models(
    spec: ExplainSpec, predictors: Mapping[str, PredictorFactory]
) -> frozenset[str]:
    """Keys whose method has what it needs: an artifact (local methods) or a predictor."""
    keys = set(predictors) | set(spec.model_artifact)
    return frozenset(
        key for key in keys
        if key in (spec.model_artifact if spec.method_for(key) in LOCAL_METHODS else predictors)
    )


def _model_info(
    spec: ExplainSpec, key: str, factory: PredictorFactory | None
) -> dict[str, str | None]:
    """Version and file hash of the model ``key`` for provenance (hash: None when the
    file cannot be read; fitting reports that)."""
    path = spec.model_artifact.get(key) if spec.method_for(key) in LOCAL_METHODS else None
    path = path or getattr(factory, "path", None)
    try:
        digest = file_sha256(path) if path is not None else None
    except OSError:
        digest = None
    return {"model_version": getattr(factory, "model_version", None), "model_sha256": digest}


def _fit_inputs(spec: ExplainSpec) -> dict[str, Any]:
    """The settings the worker processes depend on (all but the budget fields)."""
    return spec.model_dump(exclude=_BUDGET_FIELDS)


def _stop_executor(executor: concurrent.futures.ProcessPoolExecutor, join_s: float = 1.0) -> None:
    """Shut a pool down, terminating processes still busy after ``join_s`` (blocking)."""
    # ProcessPoolExecutor has no public way to stop a running task; its processes are
    # reached through the private ``_processes`` map, read before shutdown clears it.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + join_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        if process.is_alive():  # ignored SIGTERM (or starved of CPU at nice 10)
            process.kill()
            process.join()
    executor.shutdown(wait=True)
