"""Timing of model executions, for Triton's statistics extension.

:class:`TimedWrapper` sits between the batcher and the framework wrapper
(``BatchingWrapper(TimedWrapper(framework))``): it times every predict call in the
worker thread that runs it, records the call as one execution of its batch size in the
model's :class:`~protos.statistics.ModelStatistics`, and returns the outputs as
:class:`TimedArrays`, which carry the call's duration.

A request that ran alone (or alone in its batch) gets those very outputs back, so its
``compute_infer`` is exact and its ``queue`` is the rest of its wait. A request of a
merged batch gets a slice, without the timing; it is charged :attr:`TimedWrapper.last_ns`,
the duration of the latest call to finish, which is its own batch's unless another
batch finished in between (possible only with ``max_concurrency`` > 1, or a next batch
that completes before the request resumes).
"""

from __future__ import annotations

import time

import numpy as np

from protos.protocol import ModelMetadata
from protos.statistics import ModelStatistics
from wrappers.base import ModelWrapper

__all__ = ["TimedArrays", "TimedWrapper"]


class TimedArrays(dict):
    """Output name -> array, with the duration of the predict call that made them.

    Attributes:
        infer_ns: nanoseconds the predict call took.
    """

    infer_ns: int = 0


class TimedWrapper(ModelWrapper):
    """Delegates to ``inner``, timing every ``predict`` call.

    Args:
        inner: the framework wrapper.
        statistics: where each call is recorded as an execution (batch size = rows).
    """

    def __init__(self, inner: ModelWrapper, statistics: ModelStatistics) -> None:
        self.inner = inner
        self.statistics = statistics
        self.last_ns = 0
        """Duration of the latest predict call to finish, in nanoseconds."""

    @property
    def platform(self) -> str:  # type: ignore[override]
        """The inner wrapper's platform."""
        return self.inner.platform

    def load(self) -> None:
        """Load the inner wrapper."""
        self.inner.load()

    def unload(self) -> None:
        """Unload the inner wrapper."""
        self.inner.unload()

    def metadata(self) -> ModelMetadata:
        """The inner wrapper's metadata."""
        return self.inner.metadata()

    def predict(self, inputs: dict[str, np.ndarray]) -> TimedArrays:
        """The inner prediction, timed and recorded (blocking; runs in a worker thread).

        Raises:
            whatever the inner wrapper raises (not recorded as an execution).
        """
        start = time.perf_counter_ns()
        outputs = TimedArrays(self.inner.predict(inputs))
        outputs.infer_ns = time.perf_counter_ns() - start
        self.last_ns = outputs.infer_ns
        rows = next((int(a.shape[0]) for a in inputs.values() if a.ndim), 1)
        self.statistics.record_execution(rows, infer_ns=outputs.infer_ns)
        return outputs
