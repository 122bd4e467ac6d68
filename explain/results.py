"""What became of a decision's explanation, and the counters the gateway exports.

Statuses: ``pending`` (recorded by the caller until the result arrives), ``done``,
``skipped`` and ``failed``; reasons are a bounded set (see :mod:`explain.worker`), fit
for metric labels.

The result document (:meth:`ExplanationResult.to_dict`)::

    {"decision_id", "model", "status", "reason"?, "detail"?, "latency_s"?, "method"?,
     "reasons": [{"feature", "code", "sentence", "contribution", "value"}, ...],
     "withheld_reasons"?: [...], "contrary_reasons"?: [...], "provenance": {...},
     "explanation": {the method's own output: shap_values / anchor, summary, ...}}

``reasons`` and ``provenance`` are present when done, ``withheld_reasons`` and
``contrary_reasons`` when the explanation has any.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from explain.base import Explanation

__all__ = ["ExplanationStatus", "ExplanationResult", "ExplanationStats", "ResultHook"]

ExplanationStatus = Literal["pending", "done", "skipped", "failed"]
ResultHook = Callable[["ExplanationResult"], None]
"""Receives every final result (done, skipped, failed) on the event loop."""


@dataclass(slots=True)
class ExplanationResult:
    """What became of one decision's explanation.

    Attributes:
        decision_id: the decision explained.
        model: key of the model that made the decision.
        status: ``pending``, ``done``, ``skipped`` or ``failed``.
        reason: why skipped or failed (bounded set, see the module docstring).
        detail: free text for ``explainer error`` (exception type and message).
        explanation: the explanation when done.
        latency_s: seconds from submission to the result (done and failed).
        method: the explanation method of the model (when known).
    """

    decision_id: str
    model: str
    status: ExplanationStatus
    reason: str | None = None
    detail: str | None = None
    explanation: Explanation | None = None
    latency_s: float | None = None
    method: str | None = None

    @classmethod
    def pending(cls, decision_id: str, model: str) -> ExplanationResult:
        """The placeholder a decision record holds until the result arrives."""
        return cls(decision_id, model, "pending")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (see the module docstring): the explanation via
        :meth:`Explanation.to_dict`, its reasons and provenance lifted beside the status."""
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "explanation"}
        if self.explanation is not None:
            doc = self.explanation.to_dict()
            for key in ("reasons", "withheld_reasons", "contrary_reasons", "provenance"):
                if key in doc:
                    out[key] = doc.pop(key)
            out["explanation"] = doc
        return out


@dataclass(slots=True)
class ExplanationStats:
    """Counters for metrics (monotonic except the backlog gauges).

    Attributes:
        done, skipped, failed: results by status.
        reasons: ``"<status>/<reason>"`` -> count, e.g. ``"skipped/queue full"``.
        queue_depth: explanations pending now (waiting for a process or running).
        backlog: explanations waiting for a process now (not yet started).
        oldest_pending_age_s: seconds since the oldest pending explanation was submitted
            (0 when none is pending); measured when ``ExplanationWorker.stats`` is read.
        batches: worker tasks started (each explains up to ``max_batch`` decisions).
        latency_s_sum, latency_count: sum and count of latencies of done explanations.
    """

    done: int = 0
    skipped: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    queue_depth: int = 0
    backlog: int = 0
    oldest_pending_age_s: float = 0.0
    batches: int = 0
    latency_s_sum: float = 0.0
    latency_count: int = 0
