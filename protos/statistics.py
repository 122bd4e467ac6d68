"""Per-model inference statistics, as Triton's statistics extension reports them.

Every served model has one :class:`ModelStatistics`. The registry records each request's
outcome (success or failure, its duration, its rows); the phases of a successful request
(queue, compute_input, compute_infer, compute_output) and the model executions (batches)
are recorded by the target when it can measure them (a wrapper pod's model), otherwise
by the registry (a gateway deployment: one execution per request, its whole duration
spent in compute_infer).

Definitions (Triton ``docs/protocol/extension_statistics.md``):

* ``success`` / ``fail``: count and cumulative duration (ns) of successful / failed
  requests, from arrival to response.
* ``queue``: time a successful request waited for its batch to start.
* ``compute_input`` / ``compute_infer`` / ``compute_output``: time preparing the
  inputs, running the model, and building the outputs, per successful request (a
  request of a merged batch is charged the batch's compute time).
* ``inference_count``: inferences (rows) of successful requests;
  ``execution_count``: model executions (a merged batch is one execution).
* ``batch_stats``: per batch size, count and compute durations of the executions.
* ``last_inference``: ms since the epoch of the last successful request (0: none).

Recording is thread-safe (model executions are recorded from worker threads).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Duration", "ModelStatistics", "MeasuredTarget", "statistics_doc"]

_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(slots=True)
class Duration:
    """A count and a cumulative duration in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        """Count one more, lasting ``ns`` nanoseconds (negative values count as 0)."""
        self.count += 1
        self.ns += max(0, int(ns))

    def as_doc(self) -> dict[str, int]:
        """``{"count": n, "ns": total}``."""
        return {"count": self.count, "ns": self.ns}


class _BatchDurations:
    __slots__ = ("compute_input", "compute_infer", "compute_output")

    def __init__(self) -> None:
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()


class ModelStatistics:
    """Cumulative statistics of one model (one version).

    Args:
        clock_ms: wall clock in ms since the epoch (injected for tests).
    """

    def __init__(self, clock_ms=lambda: int(time.time() * 1000)) -> None:
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self.success = Duration()
        self.fail = Duration()
        self.phases = {name: Duration() for name in _PHASES}
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self._batches: dict[int, _BatchDurations] = {}

    def record_success(self, rows: int, total_ns: int) -> None:
        """One successful request of ``rows`` inferences that took ``total_ns``."""
        with self._lock:
            self.success.add(total_ns)
            self.inference_count += rows
            self.last_inference_ms = self._clock_ms()

    def record_failure(self, total_ns: int) -> None:
        """One failed request that took ``total_ns``."""
        with self._lock:
            self.fail.add(total_ns)

    def record_phases(
        self, *, queue_ns: int = 0, input_ns: int = 0, infer_ns: int = 0, output_ns: int = 0
    ) -> None:
        """The phases of one successful request, in nanoseconds."""
        with self._lock:
            for name, ns in zip(_PHASES, (queue_ns, input_ns, infer_ns, output_ns), strict=True):
                self.phases[name].add(ns)

    def record_execution(
        self, batch_size: int, *, input_ns: int = 0, infer_ns: int = 0, output_ns: int = 0
    ) -> None:
        """One model execution over ``batch_size`` rows, in nanoseconds per phase."""
        with self._lock:
            self.execution_count += 1
            batch = self._batches.get(batch_size)
            if batch is None:
                batch = self._batches[batch_size] = _BatchDurations()
            batch.compute_input.add(input_ns)
            batch.compute_infer.add(infer_ns)
            batch.compute_output.add(output_ns)

    def as_doc(self, name: str, version: str) -> dict[str, Any]:
        """Triton's ``ModelStatistics`` JSON object for this model."""
        with self._lock:
            inference_stats = {
                "success": self.success.as_doc(),
                "fail": self.fail.as_doc(),
                **{name: d.as_doc() for name, d in self.phases.items()},
                "cache_hit": Duration().as_doc(),
                "cache_miss": Duration().as_doc(),
            }
            batch_stats = [
                {"batch_size": size,
                 "compute_input": b.compute_input.as_doc(),
                 "compute_infer": b.compute_infer.as_doc(),
                 "compute_output": b.compute_output.as_doc()}
                for size, b in sorted(self._batches.items())
            ]
            return {
                "name": name, "version": version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": inference_stats,
                "batch_stats": batch_stats,
            }


@runtime_checkable
class MeasuredTarget(Protocol):
    """A target that records its own phases and executions into ``statistics`` (the
    registry then records only each request's outcome there)."""

    statistics: ModelStatistics


def statistics_doc(model_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of ``GET /v2/models[/{m}[/versions/{v}]]/stats``."""
    return {"model_stats": model_stats}
