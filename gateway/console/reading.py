"""What the console reads, from the same store and deployment state as the API, so
that every replica shows the same decisions, learning and fairness.

* :func:`newest`: a deployment's most recent decisions (the store lists oldest first
  within a time range, so this reads back in time in widening windows).
* :func:`traffic`: each arm's share of those decisions per time bucket.
* :func:`stored_agreement`: how often each shadow's output equalled the routed
  model's, over those decisions (every replica's, unlike the process-local running
  figures of ``GET /v2/deployments/{d}``).
* :func:`arm_rows`: each arm's posterior mean with its 95 % interval: the Beta
  posterior's equal-tailed interval for Thompson sampling and champion-challenger, the
  Wilson interval of the empirical mean for epsilon-greedy.
* :class:`Encoding`: a deployment's feature names, category names and class names
  (``explain`` settings or ``monitoring.encoding``), to show inputs in the data's terms.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scipy import special

from gateway.config import DeploymentSpec
from gateway.decisions import Decision, DecisionStore
from gateway.fairness import wilson_interval
from gateway.groups import ApprovalSpec

__all__ = [
    "OUTCOMES", "Encoding", "approval_of", "arm_rows", "decision_filter", "newest",
    "outcome_of", "refused", "stored_agreement", "traffic",
]

log = logging.getLogger("arbiter.console")

READ_LIMIT = 5000
"""Most decisions one store read returns."""
MAX_READS = 24
"""Most store reads one search for recent decisions makes."""
FIRST_SPAN_S = 60.0

OUTCOMES = {
    "failed": "the routed model failed",
    "awaiting": "no feedback yet",
    "scored": "feedback received",
    "right": "the routed model's reward is 1",
    "wrong": "the routed model's reward is below 1",
}
"""Outcome filters of the decision list."""


async def newest(store: DecisionStore, deployment: str, count: int,
                 keep: Callable[[Decision], bool] | None = None,
                 now: float | None = None) -> list[Decision]:
    """The ``count`` most recent decisions of ``deployment`` that ``keep`` accepts,
    newest first.

    Reads windows ending where the previous one began, first one minute long, four
    times longer after each sparse read; a window holding more than twice ``count``
    (at least 100, at most :data:`READ_LIMIT`) is read again eight times shorter, so a
    read never returns many more decisions than asked for; when ``keep`` turns most of
    a read down, the next reads are four times larger. At most :data:`MAX_READS` reads:
    a rare filter over a long history may find fewer than there are.
    """
    limit = min(max(2 * count, 100), READ_LIMIT)
    found: list[Decision] = []
    until = (time.time() if now is None else now) + 1.0
    span, reads = FIRST_SPAN_S, 0
    while len(found) < count and until > 0 and reads < MAX_READS:
        since = max(0.0, until - span)
        batch = await store.list(deployment, since, until, limit)
        reads += 1
        if len(batch) >= limit and span > 1e-3:
            span /= 8
            continue
        kept = [d for d in reversed(batch) if keep is None or keep(d)]
        found.extend(kept)
        until = since
        if len(batch) < limit // 4:
            span *= 4
        if 2 * len(kept) < len(batch):  # a rare filter: read more at once
            limit, span = min(4 * limit, READ_LIMIT), 4 * span
    return found[:count]


def traffic(decisions: list[Decision], arms: list[str], buckets: int | None = None
            ) -> dict[str, Any]:
    """Each arm's share of ``decisions`` (any order) in equal time buckets (by default
    one per 20 decisions, from 2 to 24; one when they all came within a second).

    Returns:
        ``{"x": [bucket middle, Unix s], "series": [{"label": arm, "values": [share in
        [0, 1] or None for an empty bucket]}], "total": {arm: share of all},
        "decisions": n, "since", "until"}``; ``x`` is empty without decisions.
    """
    times = sorted(d.time for d in decisions)
    doc: dict[str, Any] = {"x": [], "series": [], "total": {}, "decisions": len(times),
                           "since": times[0] if times else None,
                           "until": times[-1] if times else None}
    if not times:
        return doc
    names = list(arms) + sorted({d.routed for d in decisions} - set(arms))
    if not buckets:  # one per 20 decisions, at least 2 unless they came within a second
        buckets = 1 if times[-1] - times[0] < 1.0 else max(2, min(24, len(times) // 20))
    start, width = times[0], max((times[-1] - times[0]) / buckets, 1e-6)
    counts = [dict.fromkeys(names, 0) for _ in range(buckets)]
    for d in decisions:
        counts[min(int((d.time - start) / width), buckets - 1)][d.routed] += 1
    totals = [sum(c.values()) for c in counts]
    doc["x"] = [start + (i + 0.5) * width for i in range(buckets)]
    doc["series"] = [{"label": arm, "values": [c[arm] / t if t else None
                                               for c, t in zip(counts, totals, strict=True)]}
                     for arm in names]
    doc["total"] = {arm: sum(c[arm] for c in counts) / len(times) for arm in names}
    return doc


def stored_agreement(decisions: list[Decision], output: str) -> dict[str, dict[str, Any]]:
    """Per shadow model: decisions where both it and the routed model recorded
    ``output``, and the share where they were equal."""
    tally: dict[str, list[int]] = {}
    for d in decisions:
        routed = (d.outputs.get(d.routed) or {}).get(output, {}).get("data")
        if routed is None:
            continue
        for model in d.shadows:
            theirs = (d.outputs.get(model) or {}).get(output, {}).get("data")
            if theirs is not None:
                cell = tally.setdefault(model, [0, 0])
                cell[0] += 1
                cell[1] += int(theirs == routed)
    return {m: {"compared": n, "agreement": agreed / n}
            for m, (n, agreed) in sorted(tally.items())}


def arm_rows(router: dict[str, Any], confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per arm of a router snapshot: ``arm``, ``n``, ``reward_sum``, ``mean``,
    ``low``, ``high`` (None when unknown) and, for challengers, ``p_beats_champion``."""
    rows = []
    for arm, info in (router.get("arms") or {}).items():
        mean = info.get("mean")
        low = high = None
        if "alpha" in info and "beta" in info:
            low, high = _beta_interval(info["alpha"], info["beta"], confidence)
        elif info.get("n"):
            low, high = wilson_interval(info["reward_sum"], info["n"], confidence)
        rows.append({"arm": arm, "n": info.get("n"), "reward_sum": info.get("reward_sum"),
                     "mean": mean, "low": low, "high": high,
                     "p_beats_champion": info.get("p_beats_champion")})
    return rows


def _beta_interval(alpha: float, beta: float, confidence: float) -> tuple[float, float]:
    """Equal-tailed interval of Beta(alpha, beta): the inverse regularised incomplete
    beta function at both tails."""
    tail = (1 - confidence) / 2
    return (float(special.betaincinv(alpha, beta, tail)),
            float(special.betaincinv(alpha, beta, 1 - tail)))


# -- a decision in the data's terms ------------------------------------------------

@dataclass(frozen=True, slots=True)
class Encoding:
    """How a deployment's first input is encoded.

    Attributes:
        feature_names: one name per column.
        categories: column -> category names (the column holds the code).
        class_names: name of each class of a label output, or None.
    """

    feature_names: list[str]
    categories: dict[int, list[str]] = field(default_factory=dict)
    class_names: list[str] | None = None

    @classmethod
    def of(cls, spec: DeploymentSpec) -> Encoding | None:
        """The encoding ``spec`` names (explain settings first, then
        ``monitoring.encoding``), or None; an unreadable file is logged."""
        try:
            if spec.explain is not None:
                schema = spec.explain.schema()
                return cls(schema.feature_names, schema.category_map, schema.class_names)
            if spec.monitoring is not None and spec.monitoring.encoding is not None:
                raw = json.loads(spec.monitoring.encoding.read_text())
                return cls([str(n) for n in raw["feature_names"]],
                           {int(k): [str(c) for c in v]
                            for k, v in (raw.get("categorical") or {}).items()},
                           [str(c) for c in raw["class_names"]]
                           if raw.get("class_names") else None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("console: encoding unreadable (%s); inputs shown as numbers", exc)
        return None

    def value(self, column: int, code: Any) -> Any:
        """A column's value in the data's terms: its category name, else the number."""
        names = self.categories.get(column)
        if names is None or isinstance(code, bool) or not isinstance(code, int | float):
            return code
        index = int(round(code))
        if 0 <= index < len(names) and index == code:
            return names[index]
        return f"{code} (no such category)"

    def rows(self, doc: dict[str, Any]) -> list[list[Any]] | None:
        """The rows of an input tensor document in the data's terms, or None when its
        shape does not match the feature names (or it kept no data)."""
        data, shape = doc.get("data"), doc.get("shape") or []
        width = len(self.feature_names)
        if data is None or not shape or len(data) % width or \
                (len(shape) > 1 and shape[-1] != width):
            return None
        return [[self.value(c, data[r * width + c]) for c in range(width)]
                for r in range(len(data) // width)]

    def label(self, value: Any) -> str:
        """A class output's value with its class name, e.g. ``0 (bad)``."""
        if self.class_names and isinstance(value, int) and not isinstance(value, bool) \
                and 0 <= value < len(self.class_names):
            return f"{value} ({self.class_names[value]})"
        return str(value)


def approval_of(spec: DeploymentSpec) -> ApprovalSpec:
    """What approves a decision: ``monitoring.approval``, else output ``label`` 1."""
    return spec.monitoring.approval if spec.monitoring is not None else ApprovalSpec()


def refused(decision: Decision, approval: ApprovalSpec) -> bool:
    """Whether the routed model refused some row of ``decision`` (its approval output
    holds another value than the approving one)."""
    output = (decision.outputs.get(decision.routed) or {}).get(approval.output) or {}
    data = output.get("data")
    if decision.status != "ok" or not data:
        return False
    return any(v != approval.value and str(v) != str(approval.value) for v in data)


def outcome_of(decision: Decision) -> str:
    """``failed``, ``awaiting`` (no feedback), ``right`` or ``wrong`` (the routed model's
    reward is 1 or below), or ``scored`` (feedback without a reward for it)."""
    if decision.status != "ok":
        return "failed"
    if decision.feedback is None:
        return "awaiting"
    reward = (decision.rewards or {}).get(decision.routed)
    if reward is None:
        return "scored"
    return "right" if reward >= 1.0 else "wrong"


def decision_filter(model: str | None, outcome: str | None, refusals: bool,
                    approval: ApprovalSpec) -> Callable[[Decision], bool]:
    """A predicate keeping decisions routed to ``model`` (None: any), of ``outcome``
    (one of :data:`OUTCOMES`; ``scored`` takes ``right`` and ``wrong`` too), refused
    ones only when ``refusals``."""

    def keep(decision: Decision) -> bool:
        if model and decision.routed != model:
            return False
        if outcome:
            mine = outcome_of(decision)
            if mine != outcome and not (outcome == "scored" and mine in ("right", "wrong")):
                return False
        return not refusals or refused(decision, approval)

    return keep
