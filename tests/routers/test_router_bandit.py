"""Thompson sampling and epsilon-greedy: convergence, exact posterior updates, errors."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from protos.protocol import InferenceRequest
from routers.bandit import EpsilonGreedyRouter, ThompsonRouter
from routers.base import Outcome, Router
from routers.state import InMemoryStateStore, StateStore

P_SUCCESS = {"lr": 0.3, "gbm": 0.5, "mlp": 0.8}


def simulate(router: Router, request: InferenceRequest, rounds: int, seed: int) -> list[str]:
    """Route ``rounds`` requests, reward each with Bernoulli(P_SUCCESS[arm]) drawn
    from a separate seeded RNG, and return the routed arms in order."""
    env = random.Random(seed)
    routed = []
    for _ in range(rounds):
        arm = router.route(request).routed
        reward = 1.0 if env.random() < P_SUCCESS[arm] else 0.0
        router.feedback(Outcome(arm, {arm: reward}))
        routed.append(arm)
    return routed


def test_thompson_sends_over_80pct_of_last_500_of_2000_rounds_to_best_arm(
    request_: InferenceRequest,
) -> None:
    """p = 0.3 / 0.5 / 0.8, uniform prior, 2000 rounds, seeds 7 (router) and 11 (env)."""
    router = ThompsonRouter("credit", list(P_SUCCESS), rng=random.Random(7))
    routed = simulate(router, request_, 2000, seed=11)
    share = Counter(routed[-500:])["mlp"] / 500
    assert share > 0.80
    assert sum(s.n for s in router.stats().values()) == 2000


@pytest.mark.parametrize("seed", range(5))
def test_thompson_converges_for_several_seeds(request_: InferenceRequest, seed: int) -> None:
    """Same 2000-round experiment for five router / environment seeds."""
    router = ThompsonRouter("credit", list(P_SUCCESS), rng=random.Random(seed))
    routed = simulate(router, request_, 2000, seed=100 + seed)
    assert Counter(routed[-500:])["mlp"] / 500 > 0.80


def test_thompson_fractional_rewards_update_alpha_beta_exactly() -> None:
    """Prior Beta(2, 3); rewards 0.25, 1, 0.5 on lr: alpha = 2 + 1.75 = 3.75,
    beta = 3 + (3 - 1.75) = 4.25."""
    router = ThompsonRouter("credit", ["lr", "gbm"], alpha0=2.0, beta0=3.0)
    for r in (0.25, 1.0, 0.5):
        router.feedback(Outcome("lr", {"lr": r}))
    post = router.posteriors()
    assert (post["lr"].alpha, post["lr"].beta) == (3.75, 4.25)
    assert (post["gbm"].alpha, post["gbm"].beta) == (2.0, 3.0)
    arms = router.snapshot()["arms"]
    assert arms["lr"] == {
        "n": 3,
        "reward_sum": 1.75,
        "alpha": 3.75,
        "beta": 4.25,
        "mean": 3.75 / 8.0,
    }
    assert router.snapshot()["prior"] == {"alpha": 2.0, "beta": 3.0}


@pytest.mark.parametrize("reward", [-0.01, 1.01, float("nan"), float("inf")])
@pytest.mark.parametrize("cls", [ThompsonRouter, EpsilonGreedyRouter])
def test_reward_outside_unit_interval_is_rejected_and_not_stored(
    cls: type[ThompsonRouter], reward: float
) -> None:
    router = cls("credit", ["lr", "gbm"])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        router.feedback(Outcome("lr", {"gbm": 1.0, "lr": reward}))
    assert router.store.arm_stats("credit") == {}


@pytest.mark.parametrize("cls", [ThompsonRouter, EpsilonGreedyRouter])
def test_reward_for_unknown_arm_is_rejected(cls: type[ThompsonRouter]) -> None:
    router = cls("credit", ["lr", "gbm"])
    with pytest.raises(ValueError, match="unknown model"):
        router.feedback(Outcome("xgb", {"xgb": 1.0}))


@pytest.mark.parametrize("arms", [[], ["lr", "lr"]])
def test_bad_arms_are_rejected(arms: list[str]) -> None:
    with pytest.raises(ValueError):
        ThompsonRouter("credit", arms)
    with pytest.raises(ValueError):
        EpsilonGreedyRouter("credit", arms)


def test_epsilon_greedy_best_arm_share_matches_1_minus_eps_plus_eps_over_k(
    request_: InferenceRequest,
) -> None:
    """epsilon 0.1, k = 3, p = 0.3 / 0.5 / 0.8, 2000 rounds: the best arm's share of
    the last 500 is within 4 binomial standard deviations of 1 - 0.1 + 0.1 / 3."""
    eps, k = 0.1, 3
    router = EpsilonGreedyRouter("credit", list(P_SUCCESS), epsilon=eps, rng=random.Random(3))
    routed = simulate(router, request_, 2000, seed=5)
    expected = 1 - eps + eps / k
    tolerance = 4 * (expected * (1 - expected) / 500) ** 0.5
    share = Counter(routed[-500:])["mlp"] / 500
    assert abs(share - expected) <= tolerance


def test_epsilon_greedy_tries_unplayed_arms_first(request_: InferenceRequest) -> None:
    """epsilon 0: unplayed arms count as best, so the first three routes cover all
    three arms even though the first arm always earns reward 1."""
    router = EpsilonGreedyRouter("credit", ["lr", "gbm", "mlp"], epsilon=0.0, rng=random.Random(0))
    seen = []
    for _ in range(3):
        arm = router.route(request_).routed
        router.feedback(Outcome(arm, {arm: 1.0}))
        seen.append(arm)
    assert sorted(seen) == ["gbm", "lr", "mlp"]


def test_epsilon_greedy_breaks_ties_at_random(request_: InferenceRequest) -> None:
    """Two arms with equal means (0.5 each) and epsilon 0: both are chosen, roughly
    half each over 2000 routes (4-sigma band)."""
    store = InMemoryStateStore()
    store.add_rewards("credit", {"lr": 0.5, "gbm": 0.5})
    router = EpsilonGreedyRouter(
        "credit", ["lr", "gbm"], epsilon=0.0, store=store, rng=random.Random(1)
    )
    counts = Counter(router.route(request_).routed for _ in range(2000))
    assert abs(counts["lr"] / 2000 - 0.5) <= 4 * (0.25 / 2000) ** 0.5


def test_epsilon_greedy_snapshot_reports_empirical_means() -> None:
    router = EpsilonGreedyRouter("credit", ["lr", "gbm"], epsilon=0.2)
    router.feedback(Outcome("lr", {"lr": 0.25}))
    snap = router.snapshot()
    assert snap["kind"] == "epsilon_greedy" and snap["epsilon"] == 0.2
    assert snap["arms"] == {
        "lr": {"n": 1, "reward_sum": 0.25, "mean": 0.25},
        "gbm": {"n": 0, "reward_sum": 0.0, "mean": None},
    }


def test_epsilon_greedy_epsilon_one_is_uniform(request_: InferenceRequest) -> None:
    """epsilon 1 ignores the means: 3 arms over 3000 routes, each within 4 sigma of 1/3."""
    store = InMemoryStateStore()
    store.add_reward("credit", "mlp", 1.0)
    router = EpsilonGreedyRouter(
        "credit", ["lr", "gbm", "mlp"], epsilon=1.0, store=store, rng=random.Random(2)
    )
    counts = Counter(router.route(request_).routed for _ in range(3000))
    tol = 4 * ((1 / 3) * (2 / 3) / 3000) ** 0.5
    assert all(abs(counts[a] / 3000 - 1 / 3) <= tol for a in ("lr", "gbm", "mlp"))


def test_thompson_reads_state_written_directly_to_the_store(
    request_: InferenceRequest, store: StateStore
) -> None:
    """1000 successes on gbm and 1000 failures on lr in the store: every one of 200
    routes goes to gbm (the posteriors barely overlap)."""
    for _ in range(1000):
        store.add_rewards("credit", {"gbm": 1.0, "lr": 0.0})
    router = ThompsonRouter("credit", ["lr", "gbm"], store=store, rng=random.Random(0))
    assert {router.route(request_).routed for _ in range(200)} == {"gbm"}
