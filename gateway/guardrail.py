"""The promotion guardrail: a challenger less fair than the champion is not promoted.

For each held attribute, each model's *worst group* on the guardrail's measure (window
``all``). A group with some rows but fewer than ``min_decisions`` (or its reference
group) holds the promotion back until it has enough to tell; a group with none is
left out.

* disparate impact: the smallest ``min(r, 1/r)`` over the groups (1 is parity, either
  way); the challenger is refused when its worst is lower than the champion's by more
  than the tolerance;
* equal-opportunity and average-odds differences: the largest ``|d|`` (0 is parity);
  refused when the challenger's is larger by more than the tolerance.

The verdict is the evidence: both models' value and interval per group, their worst
groups and the margin, recorded with the promotion or the refusal. On
champion-challenger deployments every model sees every request, so the two models are
compared on the same applicants.
"""

from __future__ import annotations

from typing import Any

from gateway.fairness import Counts, Estimate, group_fairness
from gateway.groups import GroupAttribute, GuardrailSpec
from gateway.tally import Tally

__all__ = ["verdict"]


def _denominator(metric: str, counts: Counts) -> int:
    if metric == "disparate_impact":
        return counts.decisions
    if metric == "equal_opportunity_difference":
        return counts.positives
    return min(counts.positives, counts.negatives)


def _score(metric: str, estimate: Estimate) -> float | None:
    """Distance from parity: min(r, 1/r) for the ratio (lower is worse), |d| else."""
    value = estimate.value
    if value is None:
        return None
    if metric == "disparate_impact":
        return min(value, 1 / value) if value > 0 else 0.0
    return abs(value)


def _side(spec: GuardrailSpec, attribute: GroupAttribute, tally: Tally, model: str,
          group: str, confidence: float) -> tuple[Estimate, int] | None:
    """The model's estimate for ``group`` and the smallest denominator involved."""
    mine = tally.total((model, attribute.name, group))
    reference = tally.total((model, attribute.name, attribute.reference))
    smallest = min(_denominator(spec.metric, mine), _denominator(spec.metric, reference))
    return group_fairness(mine, reference, confidence)[spec.metric], smallest


def _attribute(spec: GuardrailSpec, attribute: GroupAttribute, tally: Tally,
               champion: str, challenger: str, confidence: float) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    worst: dict[str, tuple[float, str] | None] = {champion: None, challenger: None}
    lower_is_worse = spec.metric == "disparate_impact"
    waiting: list[str] = []
    for group in attribute.groups[:-1]:
        if group == attribute.reference:
            continue
        sides = {m: _side(spec, attribute, tally, m, group, confidence)
                 for m in (champion, challenger)}
        doc = {m: {**s[0].as_dict(), "rows": s[1]} for m, s in sides.items() if s}
        scores = {m: _score(spec.metric, s[0]) for m, s in sides.items() if s}
        rows = min(s[1] for s in sides.values())
        if rows == 0 or None in scores.values():  # no such applicants (yet): nothing to hold
            groups[group] = {**doc, "counted": False}
            continue
        counted = rows >= spec.min_decisions
        groups[group] = {**doc, "counted": counted}
        if not counted:
            waiting.append(group)
            continue
        for model, score in scores.items():
            assert score is not None
            held = worst[model]
            if held is None or (score < held[0] if lower_is_worse else score > held[0]):
                worst[model] = (score, group)
    champ, chall = worst[champion], worst[challenger]
    if waiting:
        return {"allowed": False, "groups": groups,
                "reason": f"groups {waiting} (or their reference) have fewer than "
                f"{spec.min_decisions} rows: not enough to tell"}
    if champ is None or chall is None:
        return {"allowed": True, "groups": groups,
                "reason": f"no group with {spec.min_decisions} rows on both sides"}
    worse_by = champ[0] - chall[0] if lower_is_worse else chall[0] - champ[0]
    return {"allowed": worse_by <= spec.tolerance, "worse_by": worse_by,
            "champion": {"model": champion, "worst_group": champ[1], "distance": champ[0]},
            "challenger": {"model": challenger, "worst_group": chall[1],
                           "distance": chall[0]},
            "groups": groups}


def verdict(spec: GuardrailSpec, attributes: list[GroupAttribute], tally: Tally,
            champion: str, challenger: str, confidence: float = 0.95) -> dict[str, Any]:
    """Whether ``challenger`` may replace ``champion`` on ``spec``'s measure, with the
    evidence (see the module docstring): ``{"allowed", "metric", "tolerance",
    "min_decisions", "attributes": {name: {"allowed", "worse_by", "champion",
    "challenger", "groups"}}}``."""
    held = [a for a in attributes if spec.attributes is None or a.name in spec.attributes]
    per = {a.name: _attribute(spec, a, tally, champion, challenger, confidence) for a in held}
    return {"allowed": all(v["allowed"] for v in per.values()), "metric": spec.metric,
            "tolerance": spec.tolerance, "min_decisions": spec.min_decisions,
            "window": "all", "attributes": per}
