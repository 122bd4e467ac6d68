"""The routing policy interface.

A router decides, for each request to a deployment, which model answers and which
models see the request in the background (shadows), and learns from feedback. Both
methods are synchronous and never await, so under asyncio each state update is atomic
without locks; the gateway's data plane does all the awaiting (calling models, shadows,
explainers). Randomness and the clock are constructor arguments so tests are exact.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from protos.protocol import InferenceRequest
from routers.state import Learning, StateStore

__all__ = ["RouteDecision", "Outcome", "Router", "Clock", "NoHealthyArmError"]

Clock = Callable[[], float]
"""Returns seconds (wall-clock, ``time.time`` by default)."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """What the router chose for one request.

    Attributes:
        routed: key of the model whose output is the response.
        shadows: keys of models that get the same request in the background; their
            outputs are recorded on the decision, never returned.
        propensity: the probability, in (0, 1], with which the policy chose ``routed``
            for this request, given its state at decision time (logged with every
            decision for off-policy evaluation: inverse propensity scoring needs it).
            When some models are unhealthy it is computed over the healthy ones (the
            policy renormalised over them).
        fallback: ``(from, reason)`` when ``routed`` stands in for the model the policy
            would have chosen (a champion that is down), else None.
    """

    routed: str
    shadows: tuple[str, ...] = ()
    propensity: float = 1.0
    fallback: tuple[str, str] | None = None


class NoHealthyArmError(Exception):
    """No model this router may route a request to is healthy.

    Attributes:
        router: the router's name (its deployment).
        models: the models that could have answered, all unhealthy.
    """

    def __init__(self, router: str, models: tuple[str, ...]) -> None:
        super().__init__(f"{router!r}: no healthy model among {list(models)}")
        self.router = router
        self.models = models


@dataclass(frozen=True, slots=True)
class Outcome:
    """Feedback on one decision, as rewards per model.

    Attributes:
        routed: the model that answered the decision.
        rewards: model key -> reward in [0, 1]. A scalar reward sent by the client
            scores ``routed`` only; a ground truth scores every model whose output the
            decision recorded (routed and shadows).
    """

    routed: str
    rewards: Mapping[str, float] = field(default_factory=dict)


class Router(ABC):
    """A routing policy for one deployment.

    Subclasses set :attr:`kind` (the config's ``router.kind``) and implement
    :meth:`route`; learning policies also implement :meth:`learning`, which says what a
    feedback teaches them without writing it, so that a store can apply it in the same
    transaction as the feedback record (see ``routers.state``).

    Args:
        name: deployment name (used as the state-store key).
        rng: random source; seed it for reproducible routing.
        clock: time source in seconds.
        store: where learned state lives (None for policies that do not learn).
    """

    kind: ClassVar[str]

    def __init__(
        self,
        name: str,
        *,
        rng: random.Random | None = None,
        clock: Clock = time.time,
        store: StateStore | None = None,
    ) -> None:
        self.name = name
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self.store = store

    @property
    @abstractmethod
    def models(self) -> tuple[str, ...]:
        """Every model key this router may route or mirror to."""

    @property
    def routable(self) -> tuple[str, ...]:
        """The models that may answer a request (default: :attr:`models`); a
        deployment whose routable models are all unhealthy cannot answer."""
        return self.models

    @abstractmethod
    def route(
        self, request: InferenceRequest, healthy: frozenset[str] | None = None
    ) -> RouteDecision:
        """Choose the answering model and the shadows for ``request``. Never awaits.

        Args:
            request: the request.
            healthy: the models that may be called now (their circuit breakers are
                closed); None: every model. A policy chooses among the healthy ones
                only and renormalises over them (propensities included), and leaves
                unhealthy models out of the shadows.

        Raises:
            NoHealthyArmError: none of :attr:`routable` is healthy.
        """

    def _healthy(self, candidates: tuple[str, ...],
                 healthy: frozenset[str]) -> tuple[str, ...]:
        """The ``candidates`` in ``healthy``, in order.

        Raises:
            NoHealthyArmError: none is.
        """
        available = tuple(m for m in candidates if m in healthy)
        if not available:
            raise NoHealthyArmError(self.name, candidates)
        return available

    def learning(self, outcome: Outcome) -> Learning | None:
        """What ``outcome`` teaches this policy (checked rewards, and the promotion
        rule to evaluate on the counts that result), or None when it learns nothing.
        Pure: writes nothing. Default: None.

        Raises:
            ValueError: a reward outside [0, 1] or for a model the router does not have.
        """
        return None

    def feedback(self, outcome: Outcome) -> dict[str, Any] | None:
        """Learn from the rewards of one decision through :attr:`store`. Never awaits.

        Returns:
            The promotion record when the feedback caused one, else None.

        Raises:
            ValueError: as :meth:`learning` (nothing is stored then).
        """
        learning = self.learning(outcome)
        if learning is None or self.store is None:
            return None
        return self.store.apply(learning)

    @property
    def primary(self) -> str:
        """The model whose metadata the deployment advertises (champion, first arm)."""
        return self.models[0]

    def snapshot(self) -> dict[str, Any]:
        """JSON-able view of the router's state (arms, posteriors, champion,
        promotions), for ``GET /v2/deployments/{name}`` and the metrics."""
        return {"kind": self.kind, "models": list(self.models)}
