"""Prometheus metrics, built on an injected registry.

Names use base units; labels are bounded (model and deployment names come from the
configuration, never from a raw path or an id: an unknown name is recorded as
``"_unknown"``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: they double every counter's cardinality

__all__ = ["ServerMetrics", "MetricsBound", "UNKNOWN", "LATENCY_BUCKETS"]

UNKNOWN = "_unknown"
LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class ServerMetrics:
    """Request metrics every Arbiter server exports.

    Args:
        registry: where the metrics are registered (one per server).
        known: returns whether a model name is served (bounds the label values).
    """

    def __init__(self, registry: CollectorRegistry, known) -> None:
        self.registry = registry
        self._known = known
        self.requests = Counter(
            "arbiter_requests", "Inference requests by model, protocol and status code.",
            ["model", "protocol", "code"], registry=registry,
        )
        self.duration = Histogram(
            "arbiter_request_duration_seconds", "Inference request latency in seconds.",
            ["model", "protocol"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "arbiter_batch_rows", "Rows per model invocation after adaptive batching.",
            ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=registry,
        )
        self.queue_rejections = Counter(
            "arbiter_batch_queue_rejected_requests",
            "Requests refused with 429 / RESOURCE_EXHAUSTED because the model's batching "
            "queue was full.",
            ["model"], registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple] = {}

    def observe(self, model: str, protocol: str, code: str, seconds: float) -> None:
        """Count one request and its latency. Only served names are cached as given;
        names clients make up share the ``_unknown`` entry, so the cache stays
        bounded."""
        children = self._children.get((model, protocol, code))
        if children is None:
            label = model if self._known(model) else UNKNOWN
            key = (label, protocol, code)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self.requests.labels(label, protocol, code),
                    self.duration.labels(label, protocol),
                )
        children[0].inc()
        children[1].observe(seconds)


@runtime_checkable
class MetricsBound(Protocol):
    """A target that exports metrics of its own (a local model's batching) through the
    server serving it; the server calls :meth:`bind_metrics` once, when it is built."""

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        """Attach the target's counters to ``metrics``."""
        ...
