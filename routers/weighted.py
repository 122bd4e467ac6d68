"""Fixed random split between models: A/B tests and canaries.

Like Seldon Core's ``RANDOM_ABTEST`` router or a KServe canary rollout
(``canaryTrafficPercent``), but over any number of models with explicit weights.
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from protos.protocol import InferenceRequest
from routers.base import Clock, RouteDecision, Router

__all__ = ["WeightedRouter"]


class WeightedRouter(Router):
    """Each request goes to model m with probability weight[m] / sum(weights).

    Weights are honoured exactly: a model of weight 0 is never chosen, and when only
    one weight is positive no random number is drawn at all (100/0 sends every request
    to the first). Sampling is inverse-CDF over the positive weights: one uniform draw
    and a binary search, O(log k). When some models are unhealthy the weights of the
    healthy ones are renormalised (90/10 with the first down sends everything to the
    second, propensity 1). No learning; feedback is ignored.

    Args:
        name: deployment name.
        weights: model key -> relative weight (>= 0, finite, any scale, sum > 0), in
            config order; the first key is :attr:`primary`.
        rng: random source; seed it for reproducible routing.
        clock: time source in seconds (unused).

    Raises:
        ValueError: empty weights, a negative or non-finite weight, or sum 0.
    """

    kind: ClassVar[str] = "weighted"

    def __init__(
        self,
        name: str,
        weights: Mapping[str, float],
        *,
        rng: random.Random | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(name, rng=rng, clock=clock)
        self.weights = {m: float(w) for m, w in weights.items()}
        if any(not (0.0 <= w < float("inf")) for w in self.weights.values()):
            raise ValueError(f"weights must be finite and >= 0, got {self.weights}")
        positive = [(m, w) for m, w in self.weights.items() if w > 0.0]
        if not positive:
            raise ValueError("weights must sum to more than 0")
        self._positive = frozenset(m for m, _ in positive)
        self._cumulative, self._total, self._decisions = _table(positive)
        self._memo: tuple[frozenset[str], tuple] | None = None

    @property
    def models(self) -> tuple[str, ...]:
        """Every configured model, zero-weight ones included, in config order."""
        return tuple(self.weights)

    @property
    def routable(self) -> tuple[str, ...]:
        """The models of positive weight."""
        return tuple(m for m in self.weights if m in self._positive)

    def route(
        self, request: InferenceRequest, healthy: frozenset[str] | None = None
    ) -> RouteDecision:
        """Pick a healthy model in proportion to its weight; the propensity is exactly
        its weight normalised over the healthy models of positive weight.

        Raises:
            NoHealthyArmError: no model of positive weight is healthy.
        """
        cumulative, total, decisions = self._cumulative, self._total, self._decisions
        if healthy is not None and not self._positive <= healthy:
            cumulative, total, decisions = self._healthy_table(healthy)
        if len(decisions) == 1:
            return decisions[0]
        x = self.rng.random() * total  # in [0, total)
        i = bisect.bisect_right(cumulative, x)
        return decisions[min(i, len(decisions) - 1)]

    def _healthy_table(self, healthy: frozenset[str]) -> tuple:
        """The sampling table over the healthy models of positive weight (memoised for
        the last healthy set)."""
        available = frozenset(self._healthy(self.routable, healthy))
        if self._memo is None or self._memo[0] != available:
            positive = [(m, w) for m, w in self.weights.items() if m in available]
            self._memo = (available, _table(positive))
        return self._memo[1]

    def snapshot(self) -> dict[str, Any]:
        """Kind, models, and the weights with their normalised shares."""
        shares = {m: w / self._total for m, w in self.weights.items()}
        return {**super().snapshot(), "weights": dict(self.weights), "shares": shares}


def _table(positive: list[tuple[str, float]]) -> tuple[list[float], float, tuple]:
    """Cumulative weights, their total, and one decision per model (its share)."""
    cumulative: list[float] = []
    total = 0.0
    for _, w in positive:
        total += w
        cumulative.append(total)
    return cumulative, total, tuple(RouteDecision(m, propensity=w / total) for m, w in positive)
