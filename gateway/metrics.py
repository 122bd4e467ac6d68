"""Prometheus metrics, built on an injected registry.

Names use base units; labels are bounded (model and deployment names come from the
configuration, never from a raw path or an id: an unknown name is recorded as
``"_unknown"``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: they double every counter's cardinality

__all__ = ["ServerMetrics", "GatewayMetrics", "UNKNOWN"]

UNKNOWN = "_unknown"
_LATENCY_BUCKETS = (
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
            ["model", "protocol"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "arbiter_batch_rows", "Rows per model invocation after adaptive batching.",
            ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple] = {}

    def observe(self, model: str, protocol: str, code: str, seconds: float) -> None:
        """Count one request and its latency."""
        key = (model, protocol, code)
        children = self._children.get(key)
        if children is None:
            label = model if self._known(model) else UNKNOWN
            children = (
                self.requests.labels(label, protocol, code),
                self.duration.labels(label, protocol),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class GatewayMetrics:
    """Metrics of the gateway's routing, feedback, shadows and explanations."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.upstream = Counter(
            "arbiter_upstream_requests", "Calls to model pods by deployment, model and outcome.",
            ["deployment", "model", "code"], registry=r,
        )
        self.upstream_duration = Histogram(
            "arbiter_upstream_duration_seconds", "Latency of calls to model pods in seconds.",
            ["deployment", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.route_decisions = Counter(
            "arbiter_route_decisions", "Routing decisions by deployment, router and arm.",
            ["deployment", "router", "arm"], registry=r,
        )
        self.feedback = Counter(
            "arbiter_feedback", "Feedback received by deployment and status.",
            ["deployment", "status"], registry=r,
        )
        self.rewards = Counter(
            "arbiter_reward", "Sum of rewards credited per deployment and model.",
            ["deployment", "model"], registry=r,
        )
        self.scored = Counter(
            "arbiter_scored_decisions", "Decisions scored per deployment and model.",
            ["deployment", "model"], registry=r,
        )
        self.posterior_mean = Gauge(
            "arbiter_posterior_mean", "Posterior mean reward rate of each arm.",
            ["deployment", "arm"], registry=r,
        )
        self.shadow = Counter(
            "arbiter_shadow_requests", "Shadow calls by deployment, model and outcome "
            "(ok, error, shed).", ["deployment", "model", "outcome"], registry=r,
        )
        self.shadow_agreement = Gauge(
            "arbiter_shadow_agreement_ratio",
            "Share of shadow outputs equal to the primary's (argmax for probabilities).",
            ["deployment", "model"], registry=r,
        )
        self.shadow_abs_diff = Gauge(
            "arbiter_shadow_mean_abs_difference",
            "Mean absolute difference between shadow and primary outputs.",
            ["deployment", "model"], registry=r,
        )
        self.promotions = Counter(
            "arbiter_promotions", "Champion promotions per deployment.", ["deployment"],
            registry=r,
        )
        self.decisions_dropped = Counter(
            "arbiter_decision_log_errors", "Decision-log writes that failed.", registry=r,
        )
        self.explanations = Counter(
            "arbiter_explanations", "Explanations by deployment and status "
            "(done, skipped, failed).", ["deployment", "status"], registry=r,
        )
        self.explanation_queue = Gauge(
            "arbiter_explanation_queue_depth", "Explanations waiting or running.",
            ["deployment"], registry=r,
        )
        self.explanation_duration = Histogram(
            "arbiter_explanation_duration_seconds", "Explanation latency in seconds.",
            ["deployment"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r,
        )
