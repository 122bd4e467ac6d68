"""Routing policies: which model answers a request, which shadow it, and learning.

Build a router from its config with :func:`build_router`::

    spec = TypeAdapter(RouterSpec).validate_python({"kind": "thompson", "arms": ["lr", "gbm"]})
    router = build_router("credit", spec, rng=random.Random(7), clock=time.time,
                          store=InMemoryStateStore())

Policies (``kind``): ``thompson`` and ``epsilon_greedy`` (``routers.bandit``),
``weighted`` (``routers.weighted``), ``shadow`` (``routers.shadow``),
``champion_challenger`` (``routers.champion_challenger``). The contract they implement
is ``routers.base.Router``; learned state lives in a ``routers.state.StateStore``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from routers.bandit import EpsilonGreedyRouter, ThompsonRouter
from routers.base import Clock, NoHealthyArmError, Outcome, RouteDecision, Router
from routers.champion_challenger import ChampionChallengerRouter, PromotionRule
from routers.shadow import ShadowRouter
from routers.specs import (
    ChampionChallengerSpec,
    EpsilonGreedySpec,
    RouterSpec,
    ShadowSpec,
    ThompsonSpec,
    WeightedSpec,
)
from routers.state import ArmStats, InMemoryStateStore, Learning, StateStore
from routers.weighted import WeightedRouter

__all__ = [
    "ArmStats",
    "ChampionChallengerRouter",
    "Clock",
    "EpsilonGreedyRouter",
    "InMemoryStateStore",
    "Learning",
    "NoHealthyArmError",
    "Outcome",
    "PromotionRule",
    "RouteDecision",
    "Router",
    "RouterSpec",
    "ShadowRouter",
    "StateStore",
    "ThompsonRouter",
    "WeightedRouter",
    "build_router",
]

_Builder = Callable[[str, Any, random.Random, Clock, StateStore], Router]


def _thompson(
    name: str, spec: ThompsonSpec, rng: random.Random, clock: Clock, store: StateStore
) -> Router:
    return ThompsonRouter(
        name,
        spec.arms,
        alpha0=spec.prior.alpha,
        beta0=spec.prior.beta,
        store=store,
        rng=rng,
        clock=clock,
    )


def _epsilon_greedy(
    name: str, spec: EpsilonGreedySpec, rng: random.Random, clock: Clock, store: StateStore
) -> Router:
    return EpsilonGreedyRouter(
        name, spec.arms, epsilon=spec.epsilon, store=store, rng=rng, clock=clock
    )


def _weighted(
    name: str, spec: WeightedSpec, rng: random.Random, clock: Clock, store: StateStore
) -> Router:
    return WeightedRouter(name, spec.weights, rng=rng, clock=clock)


def _shadow(
    name: str, spec: ShadowSpec, rng: random.Random, clock: Clock, store: StateStore
) -> Router:
    shadows = {s.model: s.fraction for s in spec.shadows}
    return ShadowRouter(name, spec.primary, shadows, rng=rng, clock=clock)


def _champion_challenger(
    name: str, spec: ChampionChallengerSpec, rng: random.Random, clock: Clock, store: StateStore
) -> Router:
    p = spec.promotion
    rule = PromotionRule(p.auto, p.min_samples, p.probability, p.check_every)
    return ChampionChallengerRouter(
        name,
        spec.champion,
        spec.challengers,
        traffic=spec.traffic,
        rule=rule,
        fallback=spec.fallback,
        alpha0=spec.prior.alpha,
        beta0=spec.prior.beta,
        store=store,
        rng=rng,
        clock=clock,
    )


_BUILDERS: dict[type, _Builder] = {
    ThompsonSpec: _thompson,
    EpsilonGreedySpec: _epsilon_greedy,
    WeightedSpec: _weighted,
    ShadowSpec: _shadow,
    ChampionChallengerSpec: _champion_challenger,
}


def build_router(
    name: str,
    spec: RouterSpec,
    *,
    rng: random.Random | None = None,
    clock: Clock = time.time,
    store: StateStore | None = None,
) -> Router:
    """Build the router a validated spec describes.

    Args:
        name: deployment name; the router's state-store key.
        spec: one of the :data:`RouterSpec` models (already validated).
        rng: random source (default: an unseeded ``random.Random``).
        clock: time source in seconds (default ``time.time``).
        store: state store for learning routers (default: a new
            :class:`InMemoryStateStore`); ignored by ``weighted`` and ``shadow``.

    Returns:
        The router; its class's ``kind`` equals ``spec.kind``.

    Raises:
        TypeError: ``spec`` is not a router spec (e.g. a raw dict; validate it first
            with ``pydantic.TypeAdapter(RouterSpec)``).
    """
    builder = _BUILDERS.get(type(spec))
    if builder is None:
        raise TypeError(f"not a router spec: {type(spec).__name__}")
    return builder(
        name,
        spec,
        rng if rng is not None else random.Random(),
        clock,
        store if store is not None else InMemoryStateStore(),
    )
