"""Shadow deployment: the primary answers, shadows see copies in the background.

Shadow (mirrored / "dark launch") traffic as in Seldon Core's shadow deployments and
Istio traffic mirroring (``mirrorPercentage``), with an independent sampling fraction
per shadow.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from protos.protocol import InferenceRequest
from routers.base import Clock, NoHealthyArmError, RouteDecision, Router

__all__ = ["ShadowRouter"]


class ShadowRouter(Router):
    """The primary answers every request; each shadow is mirrored independently with
    probability equal to its fraction. No learning; feedback is ignored.

    A fraction of 1 always mirrors and 0 never does, without drawing a random number;
    any other fraction costs one uniform draw per request.

    Args:
        name: deployment name.
        primary: model key that answers.
        shadows: shadow model key -> fraction in [0, 1], in config order.
        rng: random source; seed it for reproducible sampling.
        clock: time source in seconds (unused).

    Raises:
        ValueError: a fraction outside [0, 1], or the primary listed as a shadow.
    """

    kind: ClassVar[str] = "shadow"

    def __init__(
        self,
        name: str,
        primary: str,
        shadows: Mapping[str, float],
        *,
        rng: random.Random | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(name, rng=rng, clock=clock)
        if primary in shadows:
            raise ValueError(f"primary {primary!r} cannot also be a shadow")
        bad = {m: f for m, f in shadows.items() if not 0.0 <= f <= 1.0}
        if bad:
            raise ValueError(f"shadow fractions must be in [0, 1], got {bad}")
        self._primary = primary
        self.fractions = {m: float(f) for m, f in shadows.items()}
        self._ordered = tuple(self.fractions.items())
        self._sampled = any(0.0 < f < 1.0 for f in self.fractions.values())
        self._fixed = RouteDecision(primary, tuple(m for m, f in self._ordered if f >= 1.0))

    @property
    def models(self) -> tuple[str, ...]:
        """The primary, then every shadow in config order."""
        return (self._primary, *self.fractions)

    @property
    def primary(self) -> str:
        """The model that answers."""
        return self._primary

    @property
    def routable(self) -> tuple[str, ...]:
        """The primary: shadows never answer."""
        return (self._primary,)

    def route(
        self, request: InferenceRequest, healthy: frozenset[str] | None = None
    ) -> RouteDecision:
        """The primary, plus each healthy shadow sampled with its own fraction.

        Raises:
            NoHealthyArmError: the primary is unhealthy.
        """
        if healthy is not None and self._primary not in healthy:
            raise NoHealthyArmError(self.name, (self._primary,))
        if not self._sampled:
            decision = self._fixed
        else:
            rand = self.rng.random
            decision = RouteDecision(self._primary, tuple(
                m for m, f in self._ordered if f >= 1.0 or (f > 0.0 and rand() < f)))
        if healthy is not None and any(m not in healthy for m in decision.shadows):
            decision = RouteDecision(self._primary, tuple(
                m for m in decision.shadows if m in healthy))
        return decision

    def snapshot(self) -> dict[str, Any]:
        """Kind, models, primary and the shadow fractions."""
        return {**super().snapshot(), "primary": self._primary, "shadows": dict(self.fractions)}
