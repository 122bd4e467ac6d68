"""Fairness and outcome figures of one group of decisions, and their intervals: pure
functions on counts (no state, no I/O).

A group's decisions are summarised by :class:`Counts` (rows, approvals, and for the rows
whose true outcome is known: correct, positives, true positives, negatives, false
positives). A *positive* truth is the outcome that deserves approval (for credit: the
applicant repaid). From those:

====================================  =====================================================
approval rate                         approved / decisions (the selection rate)
accuracy                              correct / scored
true positive rate (TPR)              approved among the positives
false positive rate (FPR)             approved among the negatives
disparate impact (ratio)              approval rate of a group / that of the reference
                                      group (Feldman et al., "Certifying and removing
                                      disparate impact", KDD 2015); the four-fifths rule
                                      flags a ratio below 0.8 (US Uniform Guidelines on
                                      Employee Selection Procedures, 29 CFR 1607.4(D))
equal-opportunity difference          TPR of a group - TPR of the reference (Hardt, Price
                                      & Srebro, "Equality of opportunity in supervised
                                      learning", NeurIPS 2016)
average-odds difference               ((FPR_g - FPR_ref) + (TPR_g - TPR_ref)) / 2 (Bellamy
                                      et al., "AI Fairness 360", arXiv:1810.01943, 2018)
====================================  =====================================================

Intervals (two-sided, at a given confidence):

* a rate: Wilson's score interval (Wilson, "Probable inference, the law of succession,
  and statistical inference", JASA 22, 1927), good at small counts and rates near 0 or 1;
* the ratio: Katz's log interval (Katz, Baptista, Azen & Pike, "Obtaining confidence
  intervals for the risk ratio in cohort studies", Biometrics 34, 1978), with 0.5 added
  to each cell of a group without approvals (Haldane's correction); it agrees with
  ``scipy.stats.contingency.relative_risk``;
* a difference of rates: Newcombe's hybrid score interval (method 10 of Newcombe,
  "Interval estimation for the difference between independent proportions", Statistics
  in Medicine 17, 1998), and for the average-odds difference the same construction on
  the sum of two differences: the MOVER of Zou & Donner ("Construction of confidence
  limits about effect measures: a general approach", Statistics in Medicine 27, 2008),
  of which Newcombe's interval is the special case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

__all__ = [
    "COUNT_FIELDS",
    "FAIRNESS_METRICS",
    "RATE_METRICS",
    "Counts",
    "Estimate",
    "average_odds_difference",
    "disparate_impact",
    "equal_opportunity_difference",
    "group_figures",
    "group_fairness",
    "group_rates",
    "katz_ratio_interval",
    "mover_sum",
    "newcombe_difference",
    "rate",
    "wilson_interval",
]

COUNT_FIELDS = ("decisions", "approved", "scored", "correct", "positives", "true_positives",
                "negatives", "false_positives")
"""The fields of :class:`Counts`, in the order of its list form."""

RATE_METRICS = ("approval_rate", "accuracy", "tpr", "fpr")
"""Per-group rates (Wilson intervals)."""

FAIRNESS_METRICS = ("disparate_impact", "equal_opportunity_difference",
                    "average_odds_difference")
"""Per-group comparisons with the reference group."""


@dataclass(frozen=True, slots=True)
class Counts:
    """What a group's decisions add up to (each a count of rows, >= 0).

    Attributes:
        decisions: rows decided.
        approved: rows approved.
        scored: rows whose true outcome is known.
        correct: scored rows whose decision matched the outcome.
        positives: scored rows whose outcome deserved approval.
        true_positives: positives approved.
        negatives: scored rows whose outcome did not deserve approval.
        false_positives: negatives approved.
    """

    decisions: int = 0
    approved: int = 0
    scored: int = 0
    correct: int = 0
    positives: int = 0
    true_positives: int = 0
    negatives: int = 0
    false_positives: int = 0

    @classmethod
    def of(cls, values: list[int] | tuple[int, ...]) -> Counts:
        """From the list form (:data:`COUNT_FIELDS` order)."""
        return cls(*(int(v) for v in values))


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its two-sided interval (None where undefined, such as a rate
    of no rows or a ratio over a reference that approves no one)."""

    value: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | None]:
        """``{"value", "ci_low", "ci_high"}``."""
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


_NONE = Estimate(None, None, None)


@lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a binomial rate (see the module docstring).

    Args:
        successes: count, 0 <= successes <= n.
        n: trials; 0 gives the whole range (0, 1).
        confidence: in (0, 1).

    Raises:
        ValueError: confidence outside (0, 1).
    """
    z = _z(confidence)
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """``successes / n`` with its Wilson interval; undefined (None) when ``n`` is 0."""
    if n <= 0:
        return _NONE
    low, high = wilson_interval(successes, n, confidence)
    return Estimate(successes / n, low, high)


def katz_ratio_interval(x1: int, n1: int, x2: int, n2: int,
                        confidence: float = 0.95) -> Estimate:
    """(x1/n1) / (x2/n2) with Katz's log interval (see the module docstring).

    Returns:
        The ratio and interval; None where the ratio is undefined (a group of no rows,
        or a reference rate of 0).
    """
    if n1 <= 0 or n2 <= 0 or x2 <= 0:
        return _NONE
    value = (x1 / n1) / (x2 / n2)
    if x1 == 0:  # Haldane: half a row more in each cell of the empty group
        x1c, n1c = 0.5, n1 + 1.0
    else:
        x1c, n1c = float(x1), float(n1)
    se = math.sqrt(1 / x1c - 1 / n1c + 1 / x2 - 1 / n2)
    centre = math.log((x1c / n1c) / (x2 / n2))
    z = _z(confidence)
    return Estimate(value, math.exp(centre - z * se), math.exp(centre + z * se))


def mover_sum(first: Estimate, second: Estimate) -> Estimate:
    """The interval of ``first + second`` from their own intervals (Zou & Donner's MOVER:
    each side's distances to its limits added in quadrature); None if either is None."""
    if None in (first.value, first.low, first.high, second.value, second.low, second.high):
        return _NONE
    a, b = first.value, second.value
    assert a is not None and b is not None and first.low is not None
    assert first.high is not None and second.low is not None and second.high is not None
    low = a + b - math.hypot(a - first.low, b - second.low)
    high = a + b + math.hypot(first.high - a, second.high - b)
    return Estimate(a + b, low, high)


def _negated(estimate: Estimate) -> Estimate:
    if estimate.value is None or estimate.low is None or estimate.high is None:
        return _NONE
    return Estimate(-estimate.value, -estimate.high, -estimate.low)


def newcombe_difference(x1: int, n1: int, x2: int, n2: int,
                        confidence: float = 0.95) -> Estimate:
    """x1/n1 - x2/n2 with Newcombe's hybrid score interval (Wilson limits combined by
    MOVER); None when either group has no rows."""
    return mover_sum(rate(x1, n1, confidence), _negated(rate(x2, n2, confidence)))


def _halved(estimate: Estimate) -> Estimate:
    if estimate.value is None or estimate.low is None or estimate.high is None:
        return _NONE
    return Estimate(estimate.value / 2, estimate.low / 2, estimate.high / 2)


def disparate_impact(group: Counts, reference: Counts, confidence: float = 0.95) -> Estimate:
    """Approval rate of ``group`` over that of ``reference`` (Katz interval)."""
    return katz_ratio_interval(group.approved, group.decisions, reference.approved,
                               reference.decisions, confidence)


def equal_opportunity_difference(group: Counts, reference: Counts,
                                 confidence: float = 0.95) -> Estimate:
    """TPR of ``group`` minus TPR of ``reference`` (Newcombe interval)."""
    return newcombe_difference(group.true_positives, group.positives,
                               reference.true_positives, reference.positives, confidence)


def average_odds_difference(group: Counts, reference: Counts,
                            confidence: float = 0.95) -> Estimate:
    """Half the sum of the FPR and TPR differences with ``reference`` (MOVER interval)."""
    fpr = newcombe_difference(group.false_positives, group.negatives,
                              reference.false_positives, reference.negatives, confidence)
    return _halved(mover_sum(fpr, equal_opportunity_difference(group, reference, confidence)))


def group_rates(counts: Counts, confidence: float = 0.95) -> dict[str, Estimate]:
    """Each rate of :data:`RATE_METRICS` of one group, with its Wilson interval."""
    return {
        "approval_rate": rate(counts.approved, counts.decisions, confidence),
        "accuracy": rate(counts.correct, counts.scored, confidence),
        "tpr": rate(counts.true_positives, counts.positives, confidence),
        "fpr": rate(counts.false_positives, counts.negatives, confidence),
    }


def group_figures(counts: Counts, confidence: float = 0.95) -> dict[str, Any]:
    """One group's counts, and each rate of :data:`RATE_METRICS` as a value with
    ``<metric>_ci: [low, high]`` (None when undefined)."""
    figures: dict[str, Any] = {"decisions": counts.decisions, "approved": counts.approved,
                               "scored": counts.scored, "positives": counts.positives,
                               "negatives": counts.negatives}
    for name, estimate in group_rates(counts, confidence).items():
        figures[name] = estimate.value
        figures[f"{name}_ci"] = [estimate.low, estimate.high]
    return figures


def group_fairness(group: Counts, reference: Counts,
                   confidence: float = 0.95) -> dict[str, Estimate]:
    """Each comparison of :data:`FAIRNESS_METRICS` of ``group`` with ``reference``."""
    return {
        "disparate_impact": disparate_impact(group, reference, confidence),
        "equal_opportunity_difference": equal_opportunity_difference(group, reference,
                                                                     confidence),
        "average_odds_difference": average_odds_difference(group, reference, confidence),
    }
