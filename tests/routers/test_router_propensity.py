"""Every route carries the probability with which the policy chose the answering model:
exact for weighted, epsilon-greedy and champion-challenger, estimated from the
posteriors for Thompson sampling."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from protos.protocol import InferenceRequest
from routers import (
    ChampionChallengerRouter,
    EpsilonGreedyRouter,
    InMemoryStateStore,
    ShadowRouter,
    ThompsonRouter,
    WeightedRouter,
)
from routers.posterior import BetaPosterior, prob_max


def test_weighted_90_10_logs_exact_propensities(request_: InferenceRequest) -> None:
    router = WeightedRouter("ab", {"lr": 90, "gbm": 10}, rng=random.Random(1))
    seen = {d.routed: d.propensity for d in (router.route(request_) for _ in range(500))}
    assert seen == {"lr": 0.9, "gbm": 0.1}


def test_epsilon_greedy_propensity_is_exact(request_: InferenceRequest) -> None:
    store = InMemoryStateStore()
    store.add_rewards("eg", {"lr": 1.0, "gbm": 0.0, "mlp": 0.0})
    router = EpsilonGreedyRouter("eg", ["lr", "gbm", "mlp"], epsilon=0.3, store=store,
                                 rng=random.Random(3))
    decisions = [router.route(request_) for _ in range(6000)]
    logged = {d.routed: d.propensity for d in decisions}
    assert logged == pytest.approx({"lr": 0.7 + 0.1, "gbm": 0.1, "mlp": 0.1})
    share = Counter(d.routed for d in decisions)["lr"] / 6000
    assert abs(share - 0.8) < 4 * (0.8 * 0.2 / 6000) ** 0.5


def test_epsilon_greedy_ties_share_the_exploitation(request_: InferenceRequest) -> None:
    router = EpsilonGreedyRouter("eg", ["lr", "gbm"], epsilon=0.2, rng=random.Random(0))
    assert [router.route(request_).propensity for _ in range(100)] == [pytest.approx(0.5)] * 100


def test_champion_challenger_propensity_is_the_traffic_share(request_) -> None:
    router = ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], traffic={"gbm": 0.25},
                                      rng=random.Random(2))
    logged = {d.routed: d.propensity for d in (router.route(request_) for _ in range(400))}
    assert logged == {"lr": 0.75, "gbm": 0.25}


def test_shadow_primary_always_answers(request_: InferenceRequest) -> None:
    router = ShadowRouter("sh", "lr", {"gbm": 0.5}, rng=random.Random(0))
    assert {router.route(request_).propensity for _ in range(50)} == {1.0}


@pytest.mark.parametrize("counts", [
    {},
    {"lr": (30, 20.0), "gbm": (30, 18.0), "mlp": (12, 9.0)},
    {"lr": (400, 310.0), "gbm": (400, 300.0), "mlp": (400, 250.0)},
])
def test_thompson_propensities_match_choice_frequencies(request_, counts) -> None:
    """2,000 seeded decisions on fixed posteriors: each arm's logged propensity is
    within 0.05 of how often it was chosen."""
    store = InMemoryStateStore()
    for arm, (n, total) in counts.items():
        for _ in range(n):
            store.add_reward("ts", arm, total / n)
    router = ThompsonRouter("ts", ["lr", "gbm", "mlp"], store=store, rng=random.Random(11))
    decisions = [router.route(request_) for _ in range(2000)]
    frequency = Counter(d.routed for d in decisions)
    for arm in ("lr", "gbm", "mlp"):
        logged = [d.propensity for d in decisions if d.routed == arm]
        expected = logged[0] if logged else 0.0
        assert all(p == expected for p in logged)
        assert abs(frequency[arm] / 2000 - expected) < 0.05, (arm, frequency, expected)


@pytest.mark.parametrize("shapes", [
    [(1, 1), (1, 1), (1, 1)],
    [(30, 20), (28, 22), (10, 5)],
    [(7900, 2100), (7850, 2150), (7000, 3000)],
    [(0.5, 0.5), (3, 3)],
    [(2, 50), (1, 1)],
])
def test_prob_max_agrees_with_monte_carlo(shapes) -> None:
    rng = np.random.default_rng(0)
    draws = np.stack([rng.beta(a, b, 1_000_000) for a, b in shapes])
    empirical = np.bincount(draws.argmax(axis=0), minlength=len(shapes)) / 1_000_000
    exact = prob_max([BetaPosterior(a, b) for a, b in shapes])
    assert sum(exact) == pytest.approx(1.0)
    assert np.abs(np.asarray(exact) - empirical).max() < 3e-3
