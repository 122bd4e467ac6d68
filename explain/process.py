"""What runs inside an explanation worker process.

The pool initializer (:func:`init_process`) fits one explainer per model key ONCE, from
the :class:`FitInputs` the parent prepared, and keeps them with each model's prediction
function and provenance record; :func:`run_batch` then explains batches of rows of one
model. Processes run at a lower CPU priority than the gateway, with one compute thread
each, and die with it.

Deadlines: the batch prediction function refuses to start a model call after the
batch's deadline, so a late explanation stops at its next model call instead of keeping
the process busy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explain.base import Explainer, ExplainerError, Explanation, FeatureSchema, PredictFn
from explain.predictors import PredictorFactory
from explain.provenance import provenance_record
from explain.registry import explainer_for, reason_writer
from explain.settings import LOCAL_METHODS, ExplainSpec

__all__ = [
    "FitInputs",
    "ExplanationTimeoutError",
    "WORKER_NICENESS",
    "init_process",
    "ping",
    "run_batch",
]

WORKER_NICENESS = 10
"""Explanation processes run this much below the gateway's CPU priority, so that on a
busy machine predictions are scheduled first and keep their latency."""


class ExplanationTimeoutError(ExplainerError):
    """The explanation's deadline passed (raised inside the worker process)."""


@dataclass(frozen=True, slots=True)
class FitInputs:
    """Everything a worker process needs to fit its explainers (picklable).

    Attributes:
        spec: the deployment's settings.
        schema: the encoding and its wording.
        reference: float32 ``[rows, n_features]`` reference rows (no rows for tree_shap
            without reference data).
        outcomes: int64 ``[rows]`` reference outcomes, or ``None``.
        predictors: model key -> factory of its batch ``predict_fn``.
        models: the model keys to fit.
        model_info: model key -> ``{"model_version", "model_sha256"}`` for provenance.
    """

    spec: ExplainSpec
    schema: FeatureSchema
    reference: np.ndarray
    outcomes: np.ndarray | None
    predictors: Mapping[str, PredictorFactory]
    models: frozenset[str]
    model_info: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)


@dataclass(slots=True)
class _ProcessState:
    explainers: dict[str, Explainer]
    predict: dict[str, PredictFn]
    provenance: dict[str, dict[str, Any]]
    errors: dict[str, str]


_STATE: _ProcessState | None = None
"""Explainers of THIS worker process, set once by the pool initializer."""


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


def init_process(inputs: FitInputs) -> None:
    """Pool initializer: fit one explainer per model key; record, never raise, errors."""
    _die_with_parent()
    global _STATE
    state = _ProcessState({}, {}, {}, {})
    spec, schema = inputs.spec, inputs.schema
    try:
        writer = reason_writer(spec, schema, inputs.reference, inputs.outcomes)
    except Exception as exc:
        state.errors = {key: f"{type(exc).__name__}: {exc}" for key in inputs.models}
        _STATE = state
        return
    for key in sorted(inputs.models):
        try:
            explainer = explainer_for(spec, key, schema, writer)
            explainer.fit(inputs.reference)
            if spec.method_for(key) not in LOCAL_METHODS:
                state.predict[key] = inputs.predictors[key]()
            info = inputs.model_info.get(key, {})
            state.provenance[key] = provenance_record(
                spec, key, explainer, reference=inputs.reference, outcomes=inputs.outcomes,
                schema=schema, model_version=info.get("model_version"),
                model_sha256=info.get("model_sha256"),
            )
            state.explainers[key] = explainer
        except Exception as exc:  # reported per request, so the pool stays usable
            state.errors[key] = f"{type(exc).__name__}: {exc}"
    _one_thread()
    _STATE = state


def _one_thread() -> None:
    """One BLAS / OpenMP / torch thread in this process, for the libraries loaded by now:
    explanations run in parallel across processes (``spec.workers``), and a
    multi-threaded BLAS in a low-priority process would contend with predictions for
    the cores (and spin: on a busy machine tiny solves then take milliseconds)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def ping() -> dict[str, str]:
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


def run_batch(model: str, rows: np.ndarray, deadline: float) -> list[Explanation]:
    """Pool task: explain ``rows`` (float32 ``[k, n_features]``) for ``model``, each with
    its provenance record, unless the deadline (wall clock, seconds) has passed.

    Raises:
        ExplainerError: the process or the model's explainer could not be set up, or
            the explainer failed.
        ExplanationTimeoutError: the deadline passed before or during the work.
    """
    if _STATE is None:
        raise ExplainerError("worker process not initialised")
    if model in _STATE.errors:
        raise ExplainerError(f"fitting failed: {_STATE.errors[model]}")
    if time.time() > deadline:
        raise ExplanationTimeoutError("deadline passed while queued")
    fn = _STATE.predict.get(model)
    predict = _DeadlinePredictor(fn, deadline) if fn is not None else None
    explanations = _STATE.explainers[model].explain_batch(rows, predict)
    record = _STATE.provenance[model]
    for explanation, row in zip(explanations, rows, strict=True):
        explanation.provenance = {**record, "input": [float(v) for v in row]}
    return explanations
