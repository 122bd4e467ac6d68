"""Multi-armed bandit routers: Thompson sampling and epsilon-greedy.

Each request goes to one arm (no shadows); feedback scores the arms named in the
outcome's rewards (normally just the routed one). Learned state lives in a
:class:`~routers.state.StateStore` under the router's name, so routers in several
processes sharing a store learn together.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from protos.protocol import InferenceRequest
from routers.base import Clock, Outcome, RouteDecision, Router
from routers.posterior import BetaPosterior, checked_rewards, prob_max
from routers.state import ArmStats, InMemoryStateStore, Learning, StateStore

__all__ = ["ThompsonRouter", "EpsilonGreedyRouter"]

_EMPTY = ArmStats()


class _BanditRouter(Router):
    """Arms, a store, per-arm decisions and the shared feedback path."""

    def __init__(
        self,
        name: str,
        arms: Sequence[str],
        *,
        store: StateStore | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(
            name, rng=rng, clock=clock,
            store=store if store is not None else InMemoryStateStore(),
        )
        if not arms or len(set(arms)) != len(arms):
            raise ValueError(f"arms must be non-empty and unique, got {list(arms)}")
        self._arms = tuple(arms)
        self._arm_set = frozenset(arms)
        self.store: StateStore

    @property
    def models(self) -> tuple[str, ...]:
        """The arms, in config order."""
        return self._arms

    def learning(self, outcome: Outcome) -> Learning | None:
        """Score every arm in ``outcome.rewards`` (n += 1, reward_sum += reward).

        Raises:
            ValueError: a reward is outside [0, 1] or names an unknown arm.
        """
        rewards = checked_rewards(outcome.rewards, self._arm_set)
        return Learning(self.name, rewards) if rewards else None

    def stats(self) -> dict[str, ArmStats]:
        """Current stats of every arm (zeros for arms never scored)."""
        stored = self.store.arm_stats(self.name)
        return {arm: stored.get(arm, _EMPTY) for arm in self._arms}


class ThompsonRouter(_BanditRouter):
    """Beta-Bernoulli Thompson sampling.

    Each arm's success probability has a Beta(alpha0, beta0) prior; a reward r in
    [0, 1] adds r to alpha and 1 - r to beta, so fractional rewards count as partial
    successes (Agrawal & Goyal, COLT 2012, Algorithm 2). Per request, one value is drawn
    from each arm's posterior and the arm with the largest draw answers (Chapelle & Li,
    "An Empirical Evaluation of Thompson Sampling", NIPS 2011, Algorithm 2).

    Args:
        name: deployment name; the state-store key.
        arms: model keys, unique; the first is :attr:`primary`.
        alpha0: prior alpha (> 0).
        beta0: prior beta (> 0).
        store: where counts live (default: a new in-memory store).
        rng: random source; seed it for reproducible routing.
        clock: time source in seconds (unused by this policy).

    Raises:
        ValueError: empty or repeated arms, or a non-positive prior parameter.
    """

    kind: ClassVar[str] = "thompson"

    def __init__(
        self,
        name: str,
        arms: Sequence[str],
        *,
        alpha0: float = 1.0,
        beta0: float = 1.0,
        store: StateStore | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(name, arms, store=store, rng=rng, clock=clock)
        if not (alpha0 > 0 and beta0 > 0):
            raise ValueError(f"prior alpha and beta must be > 0, got {alpha0}, {beta0}")
        self.alpha0 = float(alpha0)
        self.beta0 = float(beta0)
        self._memo_key: tuple = ()
        self._memo_routes: tuple[RouteDecision, ...] = ()

    def route(
        self, request: InferenceRequest, healthy: frozenset[str] | None = None
    ) -> RouteDecision:
        """Send ``request`` to the healthy arm with the largest posterior draw; the
        propensity is that arm's probability of the largest draw among the healthy
        arms (:func:`prob_max`), computed once per change of the posteriors or of
        the healthy set.

        Raises:
            NoHealthyArmError: no arm is healthy.
        """
        arms = self._arms
        if healthy is not None and not self._arm_set <= healthy:
            arms = self._healthy(arms, healthy)
        stats = self.store.arm_stats(self.name)
        betavariate = self.rng.betavariate
        best, best_draw = 0, -1.0
        shapes = []
        for i, arm in enumerate(arms):
            s = stats.get(arm, _EMPTY)
            shape = (self.alpha0 + s.reward_sum, self.beta0 + max(s.n - s.reward_sum, 0.0))
            shapes.append(shape)
            draw = betavariate(*shape)
            if draw > best_draw:
                best, best_draw = i, draw
        return self._routes(arms, tuple(shapes))[best]

    def _routes(
        self, arms: tuple[str, ...], shapes: tuple[tuple[float, float], ...]
    ) -> tuple[RouteDecision, ...]:
        """One decision per arm of ``arms``, with its propensity under these
        posteriors."""
        key = (arms, shapes)
        if key != self._memo_key:
            probs = prob_max([BetaPosterior(a, b) for a, b in shapes])
            self._memo_routes = tuple(
                RouteDecision(arm, propensity=p) for arm, p in zip(arms, probs, strict=True)
            )
            self._memo_key = key
        return self._memo_routes

    def posteriors(self) -> dict[str, BetaPosterior]:
        """Each arm's Beta posterior, in arm order."""
        return {
            arm: BetaPosterior.from_stats(s, self.alpha0, self.beta0)
            for arm, s in self.stats().items()
        }

    def snapshot(self) -> dict[str, Any]:
        """Kind, models, prior and per arm ``n``, ``reward_sum``, ``alpha``, ``beta``
        and posterior ``mean``."""
        stats = self.stats()
        arms = {
            arm: {"n": stats[arm].n, "reward_sum": stats[arm].reward_sum, **post.as_dict()}
            for arm, post in self.posteriors().items()
        }
        prior = {"alpha": self.alpha0, "beta": self.beta0}
        return {**super().snapshot(), "prior": prior, "arms": arms}


class EpsilonGreedyRouter(_BanditRouter):
    """Epsilon-greedy (Sutton & Barto, "Reinforcement Learning", 2nd ed., section 2.2).

    With probability ``epsilon`` the request goes to an arm drawn uniformly among ALL
    arms (the best included); otherwise to the arm with the best empirical mean reward.
    Arms never scored count as best (optimistic: mean +inf), so every arm is tried
    before exploitation settles. Ties are broken uniformly at random.

    Args:
        name: deployment name; the state-store key.
        arms: model keys, unique; the first is :attr:`primary`.
        epsilon: exploration probability in [0, 1].
        store: where counts live (default: a new in-memory store).
        rng: random source; seed it for reproducible routing.
        clock: time source in seconds (unused by this policy).

    Raises:
        ValueError: empty or repeated arms, or ``epsilon`` outside [0, 1].
    """

    kind: ClassVar[str] = "epsilon_greedy"

    def __init__(
        self,
        name: str,
        arms: Sequence[str],
        *,
        epsilon: float = 0.1,
        store: StateStore | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(name, arms, store=store, rng=rng, clock=clock)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)

    def route(
        self, request: InferenceRequest, healthy: frozenset[str] | None = None
    ) -> RouteDecision:
        """Explore with probability epsilon, else exploit the best empirical mean,
        both among the healthy arms.

        The propensity is exact: ``(1 - epsilon) / |G| + epsilon / k`` for an arm in
        the greedy set G (ties included), ``epsilon / k`` for any other arm, with k
        the number of healthy arms and G taken among them.

        Raises:
            NoHealthyArmError: no arm is healthy.
        """
        arms = self._arms
        if healthy is not None and not self._arm_set <= healthy:
            arms = self._healthy(arms, healthy)
        greedy = self._greedy_arms(arms)
        if self.epsilon > 0.0 and self.rng.random() < self.epsilon:
            arm = self.rng.choice(arms)
        else:
            arm = greedy[0] if len(greedy) == 1 else self.rng.choice(greedy)
        explore = self.epsilon / len(arms)
        exploit = (1.0 - self.epsilon) / len(greedy) if arm in greedy else 0.0
        return RouteDecision(arm, propensity=exploit + explore)

    def _greedy_arms(self, arms: tuple[str, ...]) -> list[str]:
        """The arms of ``arms`` with the best empirical mean (never-scored arms count
        as best)."""
        stats = self.store.arm_stats(self.name)
        best: list[str] = []
        best_mean = -math.inf
        for arm in arms:
            s = stats.get(arm)
            mean = s.reward_sum / s.n if s is not None and s.n else math.inf
            if mean > best_mean:
                best, best_mean = [arm], mean
            elif mean == best_mean:
                best.append(arm)
        return best

    def snapshot(self) -> dict[str, Any]:
        """Kind, models, epsilon and per arm ``n``, ``reward_sum`` and empirical
        ``mean`` (``None`` for an arm never scored)."""
        arms = {
            arm: {"n": s.n, "reward_sum": s.reward_sum, "mean": s.mean}
            for arm, s in self.stats().items()
        }
        return {**super().snapshot(), "epsilon": self.epsilon, "arms": arms}
