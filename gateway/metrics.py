"""The gateway's own Prometheus metrics (routing, shadows, feedback, decisions,
explanations), built on an injected registry; request metrics are
:class:`protos.server.metrics.ServerMetrics`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from protos.server.metrics import LATENCY_BUCKETS

__all__ = ["GatewayMetrics"]


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
            ["deployment", "model"], buckets=LATENCY_BUCKETS, registry=r,
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
            "arbiter_decision_write_errors",
            "Queued decision-store writes (decisions, shadow outputs, explanations) lost "
            "after retries.", registry=r,
        )
        self.decision_queue = Gauge(
            "arbiter_decision_write_queue",
            "Decision-store writes waiting in the write-behind queue (what a crash would "
            "lose at most).", registry=r,
        )
        self.store_up = Gauge(
            "arbiter_decision_store_up",
            "1 while the decision store can be written, 0 during an outage (decisions and "
            "feedback then get 503 and the gateway is not ready).", registry=r,
        )
        self.explanations = Counter(
            "arbiter_explanations", "Explanations recorded by this process, per deployment "
            "and status: done, failed (final, after the retries) and skipped (shed or "
            "sampled out; see arbiter_explanations_shed_total).", ["deployment", "status"],
            registry=r,
        )
        self.explanation_queue = Gauge(
            "arbiter_explanation_queue_depth",
            "Explanations running or queued in this process's explainer pool.",
            ["deployment"], registry=r,
        )
        self.explanation_backlog = Gauge(
            "arbiter_explanation_backlog",
            "Explanations owed in the decision store (adverse or requested decisions not "
            "yet explained), over every process sharing the store: aggregate with max.",
            ["deployment"], registry=r,
        )
        self.explanation_oldest_age = Gauge(
            "arbiter_explanation_oldest_pending_age_seconds",
            "Age in seconds of the oldest decision whose explanation is owed in the store "
            "(0 when none is).", ["deployment"], registry=r,
        )
        self.explanations_shed = Counter(
            "arbiter_explanations_shed",
            "Non-adverse decisions left unexplained: not_sampled (explain.when: sample), "
            "queue_full (no room, or adverse ones waiting), not_started (no explainer yet). "
            "Adverse decisions are never shed.", ["deployment", "reason"], registry=r,
        )
        self.explanation_retries = Counter(
            "arbiter_explanation_retries",
            "Stored explanation jobs given back for another attempt, per failure reason.",
            ["deployment", "reason"], registry=r,
        )
        self.explanation_duration = Histogram(
            "arbiter_explanation_duration_seconds", "Explanation latency in seconds.",
            ["deployment"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r,
        )
        self.breaker_state = Gauge(
            "arbiter_upstream_breaker_state",
            "Circuit breaker of each model: 0 closed, 1 half-open, 2 open.",
            ["model"], registry=r,
        )
        self.failed_decisions = Counter(
            "arbiter_failed_decisions",
            "Decisions whose routed model failed (5xx after the retry), per deployment and "
            "model.", ["deployment", "model"], registry=r,
        )
        self.fallbacks = Counter(
            "arbiter_fallback_decisions",
            "Decisions answered by another model than the one chosen: reason unhealthy (a "
            "champion with an open breaker) or unreachable (the routed call failed to "
            "connect and was retried).", ["deployment", "model", "reason"], registry=r,
        )
        self.shed = Counter(
            "arbiter_shed_requests",
            "Requests refused by a deployment's backpressure: queue_full and "
            "queue_timeout (429), draining (503).", ["deployment", "reason"], registry=r,
        )
        self.fairness = Gauge(
            "arbiter_fairness",
            "Fairness monitoring per deployment, model, protected attribute and group, in "
            "the current bucket of each window (all, hour, day, day_of_week): decisions, "
            "approval_rate, accuracy, tpr, fpr, and against the reference group "
            "disparate_impact, equal_opportunity_difference, average_odds_difference "
            "(each with _ci_low and _ci_high); NaN where undefined.",
            ["deployment", "model", "attribute", "group", "metric", "window"], registry=r,
        )
        self.fairness_alert = Gauge(
            "arbiter_fairness_alert",
            "1 while a monitoring alert rule fires for a model, group and window (its "
            "whole confidence interval past the threshold), else 0.",
            ["deployment", "model", "attribute", "group", "metric", "window"], registry=r,
        )
        # (deployment, model, code) -> its call counter and duration histogram; the
        # names come from the config and the codes from the error tree: a small set
        self._upstream_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def upstream_call(self, deployment: str, model: str, code: str, seconds: float) -> None:
        """Count one call to a model pod (routed or shadow) and its latency in seconds,
        each label set looked up once."""
        children = self._upstream_children.get((deployment, model, code))
        if children is None:
            children = self._upstream_children[(deployment, model, code)] = (
                self.upstream.labels(deployment, model, code),
                self.upstream_duration.labels(deployment, model))
        children[0].inc()
        children[1].observe(seconds)
