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

__all__ = ["RouteDecision", "Outcome", "Router", "Clock"]

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
    """

    routed: str
    shadows: tuple[str, ...] = ()
    propensity: float = 1.0


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

    @abstractmethod
    def route(self, request: InferenceRequest) -> RouteDecision:
        """Choose the answering model and the shadows for ``request``. Never awaits."""

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
