"""Explanations off the event loop: a process pool with a queue bound, a deadline and sampling.

The gateway hands each decision to :meth:`ExplanationWorker.submit` and gets back a future
that always resolves to an :class:`ExplanationResult` (never an exception), and every
result is also passed to the ``on_result`` hook. Explanations run in ``spec.workers``
spawned processes; each process fits its explainers ONCE, in the pool initializer, and
keeps them for every request. A result is one of:

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

Deadlines are enforced twice: the event loop stops waiting after ``timeout_s``, and the
worker process stops the explainer at its next model call after the deadline (the batch
``predict_fn`` raises), so a late explanation does not keep occupying a process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from explain.base import ExplainerError, Explanation, FeatureSchema, PredictFn
from explain.predictors import PredictorFactory
from explain.results import ExplanationResult, ExplanationStats, ExplanationStatus, ResultHook
from explain.settings import ExplainSpec

__all__ = [
    "ExplanationStatus",
    "ExplanationResult",
    "ExplanationStats",
    "ExplanationTimeoutError",
    "ExplanationWorker",
]

logger = logging.getLogger(__name__)


class ExplanationTimeoutError(ExplainerError):
    """The explanation's deadline passed (raised inside the worker process)."""


# --- worker-process side -------------------------------------------------------------


@dataclass(slots=True)
class _ProcessState:
    explainers: dict[str, Any]
    predict: dict[str, PredictFn]
    errors: dict[str, str]


_STATE: _ProcessState | None = None
"""Explainers of THIS worker process, set once by the pool initializer."""


WORKER_NICENESS = 10
"""Explanation processes run this much below the gateway's CPU priority, so that on a
busy machine predictions are scheduled first and keep their latency."""


def _die_with_parent() -> None:
    """Lower this worker's CPU priority and ask Linux to send it SIGTERM when its parent
    dies, so a gateway that is killed leaves no explanation process behind."""
    try:
        import os

        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    import signal

    # Ctrl-C in a terminal reaches the whole process group; the gateway stops its
    # workers itself (pending explanations end as failed/closed), so they ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_process(
    spec: ExplainSpec,
    schema: FeatureSchema,
    reference: np.ndarray,
    predictors: Mapping[str, PredictorFactory],
) -> None:
    """Pool initializer: fit one explainer per model key; record, never raise, errors."""
    from explain.alibi import explainer_for

    _die_with_parent()

    global _STATE
    state = _ProcessState({}, {}, {})
    for key in sorted(set(predictors) | set(spec.model_artifact)):
        try:
            explainer = explainer_for(spec, key, schema)
            explainer.fit(reference)
            if key in predictors:
                state.predict[key] = predictors[key]()
            state.explainers[key] = explainer
        except Exception as exc:  # reported per request, so the pool stays usable
            state.errors[key] = f"{type(exc).__name__}: {exc}"
    _STATE = state


def _ping() -> dict[str, str]:
    """Warm-up task: returns the process's fitting errors."""
    return dict(_STATE.errors) if _STATE is not None else {"*": "process not initialised"}


class _DeadlinePredictor:
    """``predict_fn`` that refuses to start a batch after the deadline (wall clock)."""

    def __init__(self, fn: PredictFn, deadline: float) -> None:
        self._fn, self._deadline = fn, deadline

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if time.time() > self._deadline:
            raise ExplanationTimeoutError("deadline passed during the explanation")
        return self._fn(X)


def _run(model: str, row: np.ndarray, deadline: float) -> Explanation:
    """Pool task: explain ``row`` for ``model`` unless the deadline has passed."""
    if _STATE is None:
        raise ExplainerError("worker process not initialised")
    if model in _STATE.errors:
        raise ExplainerError(f"fitting failed: {_STATE.errors[model]}")
    if time.time() > deadline:
        raise ExplanationTimeoutError("deadline passed while queued")
    fn = _STATE.predict.get(model)
    predict = _DeadlinePredictor(fn, deadline) if fn is not None else None
    return _STATE.explainers[model].explain(row, predict)


# --- event-loop side -----------------------------------------------------------------


@dataclass(slots=True)
class _Pool:
    executor: concurrent.futures.ProcessPoolExecutor
    models: frozenset[str]
    broken: bool = False


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
            tree_shap, whose models come from ``spec.model_artifact``.
        on_result: called on the event loop with every final result (done, skipped or
            failed); exceptions it raises are logged and dropped.
        rng: source of the sampling decisions (``spec.sample_rate``).
        clock: monotonic clock for latencies, seconds.
        mp_context: multiprocessing start method; ``spawn`` (default) is safe with
            threads and event loops in the parent.

    Raises:
        OSError, ValueError: the encoding or reference data cannot be read.
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
        self._tasks: set[asyncio.Task[ExplanationResult]] = set()
        self._retired: list[_Pool] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
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
        """Counters (live object; read, do not modify)."""
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
        """Queue the explanation of one decision; never raises.

        Args:
            decision_id: id of the decision record the result belongs to.
            model: key of the model that made the decision.
            row: the model's input, float32 ``[1, n_features]`` (copied).

        Returns:
            A future resolving to the final :class:`ExplanationResult` (already resolved
            when skipped). Cancelling it does not cancel the explanation.
        """
        try:
            reason = self._skip_reason(model)
            if reason is not None:
                return self._resolved(ExplanationResult(decision_id, model, "skipped", reason))
            if model not in self._models():
                unknown = ExplanationResult(decision_id, model, "failed", "unknown model")
                return self._resolved(unknown)
            row = np.array(row, dtype=np.float32, copy=True).reshape(1, -1)
            self._stats.queue_depth += 1
            task = asyncio.create_task(self._explain(decision_id, model, row, self._clock()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return asyncio.shield(task)
        except Exception as exc:  # the caller's prediction path must not see this
            logger.exception("explanation of decision %s not submitted", decision_id)
            detail = f"{type(exc).__name__}: {exc}"
            return self._resolved(
                ExplanationResult(decision_id, model, "failed", "explainer error", detail)
            )

    async def refit(
        self,
        spec: ExplainSpec | None = None,
        predictors: Mapping[str, PredictorFactory] | None = None,
    ) -> dict[str, str]:
        """Replace the settings and/or predictors (a promotion changed the champion).

        When the explainers change (anything but the budget fields ``mode``,
        ``sample_rate``, ``max_queue`` and ``timeout_s``, or the predictors), a new pool
        is spawned and fitted before it takes new submissions; explanations already
        submitted finish on the old pool, which is then shut down. A budget-only change
        keeps the pool.

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
        return errors

    async def close(self, grace_s: float | None = None) -> None:
        """Stop taking explanations, let pending ones finish for up to ``grace_s``
        (default ``spec.timeout_s``), fail the rest with ``closed``, and stop every
        worker process (terminating those still busy). Idempotent."""
        self._closed = True
        pending = list(self._tasks)
        if pending:
            grace = self._spec.timeout_s if grace_s is None else grace_s
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._retiring, return_exceptions=True)
        pools = [p for p in (self._pool, *self._retired) if p is not None]
        self._pool, self._retired = None, []
        for pool in pools:
            await asyncio.to_thread(_stop_executor, pool.executor)

    # -- internals ---------------------------------------------------------------------

    def _configure(self, spec: ExplainSpec, predictors: Mapping[str, PredictorFactory]) -> None:
        schema = spec.schema()
        n = len(schema.feature_names)
        reference = spec.load_reference() if spec.reference_data else np.zeros((0, n), np.float32)
        if reference.shape[0] and reference.shape[1] != n:
            raise ValueError(f"reference_data has {reference.shape[1]} columns, schema has {n}")
        self._spec, self._schema, self._reference = spec, schema, reference
        self._predictors = dict(predictors)

    def _models(self) -> frozenset[str]:
        if self._spec.method == "tree_shap":
            return frozenset(self._spec.model_artifact)
        return frozenset(self._predictors)

    def _skip_reason(self, model: str) -> str | None:
        if self._closed:
            return "closed"
        if self._spec.mode == "off":
            return "off"
        rate = self._spec.sample_rate
        if rate < 1.0 and not self._rng.random() < rate:
            return "not sampled"
        if self._stats.queue_depth >= self._spec.max_queue:
            return "queue full"
        return None

    def _current_pool(self) -> _Pool:
        if self._pool is not None and self._pool.broken:
            self._retire(self._pool)
            self._pool = None
        if self._pool is None:
            executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._spec.workers,
                mp_context=self._mp,
                initializer=_init_process,
                initargs=(self._spec, self._schema, self._reference, self._predictors),
            )
            self._pool = _Pool(executor, self._models())
        return self._pool

    async def _warm(self, pool: _Pool) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        errors: dict[str, str] = {}
        try:
            pings = [
                asyncio.wrap_future(pool.executor.submit(_ping), loop=loop)
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

    async def _explain(
        self, decision_id: str, model: str, row: np.ndarray, started: float
    ) -> ExplanationResult:
        timeout_s = self._spec.timeout_s
        future: concurrent.futures.Future[Explanation] | None = None
        try:
            pool = self._current_pool()
            future = pool.executor.submit(_run, model, row, time.time() + timeout_s)
            explanation = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
            result = ExplanationResult(decision_id, model, "done", explanation=explanation)
        except (TimeoutError, ExplanationTimeoutError):
            result = ExplanationResult(decision_id, model, "failed", "timeout")
        except asyncio.CancelledError:
            result = ExplanationResult(decision_id, model, "failed", "closed")
        except BrokenProcessPool as exc:
            self._mark_broken()
            result = ExplanationResult(decision_id, model, "failed", "worker crashed", str(exc))
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            result = ExplanationResult(decision_id, model, "failed", "explainer error", detail)
        finally:
            if future is not None:
                future.cancel()
            self._stats.queue_depth -= 1
        result.latency_s = self._clock() - started
        self._record(result)
        return result

    def _mark_broken(self) -> None:
        if self._pool is not None:
            self._pool.broken = True

    def _retire(self, pool: _Pool) -> None:
        """Shut ``pool`` down in the background once its running tasks end."""
        self._retired.append(pool)
        task = asyncio.create_task(asyncio.to_thread(pool.executor.shutdown, True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

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


def _fit_inputs(spec: ExplainSpec) -> dict[str, Any]:
    """The settings the worker processes depend on (all but the budget fields)."""
    return spec.model_dump(exclude={"mode", "sample_rate", "max_queue", "timeout_s"})


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
