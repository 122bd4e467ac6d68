"""Routers choose among healthy models only: Thompson sampling and epsilon-greedy
renormalise over the healthy arms (propensities included), weighted renormalises its
weights, shadows that are down are left out, a champion that is down is replaced by
its fallback (or the best healthy challenger) with the fallback recorded, and no
healthy model is :class:`NoHealthyArmError`."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import TypeAdapter, ValidationError

from routers import (
    ChampionChallengerRouter,
    EpsilonGreedyRouter,
    InMemoryStateStore,
    NoHealthyArmError,
    RouterSpec,
    ShadowRouter,
    ThompsonRouter,
    WeightedRouter,
)
from routers.posterior import BetaPosterior, prob_max

ALL3 = ("lr", "gbm", "mlp")


def _scored(key: str, counts: dict[str, tuple[int, float]]) -> InMemoryStateStore:
    store = InMemoryStateStore()
    for arm, (n, total) in counts.items():
        for _ in range(n):
            store.add_reward(key, arm, total / n)
    return store


def test_thompson_propensities_are_renormalised_over_the_healthy_arms(request_) -> None:
    """gbm (the best arm) is down: 3,000 seeded decisions go to lr and mlp only, each
    logged with P(largest draw) among lr and mlp alone, within 0.03 of its frequency."""
    counts = {"lr": (40, 26.0), "gbm": (40, 34.0), "mlp": (40, 22.0)}
    router = ThompsonRouter("ts", ALL3, store=_scored("ts", counts), rng=random.Random(5))
    healthy = frozenset({"lr", "mlp"})
    decisions = [router.route(request_, healthy) for _ in range(3000)]
    frequency = Counter(d.routed for d in decisions)
    assert set(frequency) == {"lr", "mlp"}
    expected = prob_max([BetaPosterior(1 + 26.0, 1 + 14.0), BetaPosterior(1 + 22.0, 1 + 18.0)])
    for arm, p in zip(("lr", "mlp"), expected, strict=True):
        logged = {d.propensity for d in decisions if d.routed == arm}
        assert len(logged) == 1 and logged.pop() == pytest.approx(p, abs=1e-9)
        assert abs(frequency[arm] / 3000 - p) < 0.03, (arm, frequency, p)
    assert all(d.fallback is None for d in decisions)


def test_thompson_with_every_arm_healthy_is_unchanged(request_) -> None:
    counts = {"lr": (20, 12.0), "gbm": (20, 15.0)}
    a = ThompsonRouter("ts", ["lr", "gbm"], store=_scored("ts", counts), rng=random.Random(1))
    b = ThompsonRouter("ts", ["lr", "gbm"], store=_scored("ts", counts), rng=random.Random(1))
    assert [a.route(request_) for _ in range(200)] == [
        b.route(request_, frozenset({"lr", "gbm", "other"})) for _ in range(200)]


def test_thompson_one_healthy_arm_has_propensity_1(request_) -> None:
    router = ThompsonRouter("ts", ALL3, rng=random.Random(0))
    decisions = {router.route(request_, frozenset({"mlp"})) for _ in range(50)}
    assert {(d.routed, d.propensity) for d in decisions} == {("mlp", 1.0)}


def test_epsilon_greedy_renormalises_over_the_healthy_arms(request_) -> None:
    """lr is the greedy arm but down: gbm becomes greedy among {gbm, mlp}; k = 2."""
    store = _scored("eg", {"lr": (10, 9.0), "gbm": (10, 6.0), "mlp": (10, 2.0)})
    router = EpsilonGreedyRouter("eg", ALL3, epsilon=0.2, store=store, rng=random.Random(3))
    decisions = [router.route(request_, frozenset({"gbm", "mlp"})) for _ in range(5000)]
    logged = {d.routed: d.propensity for d in decisions}
    assert logged == pytest.approx({"gbm": 0.8 + 0.1, "mlp": 0.1})
    share = Counter(d.routed for d in decisions)["gbm"] / 5000
    assert abs(share - 0.9) < 4 * (0.9 * 0.1 / 5000) ** 0.5


def test_weighted_renormalises_its_weights(request_) -> None:
    router = WeightedRouter("ab", {"lr": 60, "gbm": 30, "mlp": 10}, rng=random.Random(2))
    decisions = [router.route(request_, frozenset({"gbm", "mlp"})) for _ in range(4000)]
    assert {d.routed: d.propensity for d in decisions} == pytest.approx(
        {"gbm": 0.75, "mlp": 0.25})
    share = Counter(d.routed for d in decisions)["gbm"] / 4000
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / 4000) ** 0.5
    assert router.route(request_, frozenset({"lr"})) == router.route(
        request_, frozenset({"lr"}))
    assert router.route(request_, frozenset({"lr"})).propensity == 1.0


def test_weighted_zero_weight_model_never_answers_even_alone(request_) -> None:
    router = WeightedRouter("ab", {"lr": 100, "gbm": 0}, rng=random.Random(0))
    assert router.routable == ("lr",)
    with pytest.raises(NoHealthyArmError, match="no healthy model among \\['lr'\\]"):
        router.route(request_, frozenset({"gbm"}))


def test_shadow_router_skips_unhealthy_shadows_and_needs_its_primary(request_) -> None:
    router = ShadowRouter("sh", "lr", {"gbm": 1.0, "mlp": 1.0}, rng=random.Random(0))
    assert router.route(request_, frozenset({"lr", "mlp"})).shadows == ("mlp",)
    assert router.route(request_).shadows == ("gbm", "mlp")
    assert router.routable == ("lr",)
    with pytest.raises(NoHealthyArmError):
        router.route(request_, frozenset({"gbm", "mlp"}))


def test_champion_down_falls_back_to_the_best_challenger(request_) -> None:
    store = _scored("cc", {"lr": (50, 40.0), "gbm": (50, 30.0), "mlp": (50, 35.0)})
    router = ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], store=store,
                                      rng=random.Random(0))
    decision = router.route(request_, frozenset({"gbm", "mlp"}))
    assert (decision.routed, decision.shadows, decision.propensity) == ("mlp", ("gbm",), 1.0)
    assert decision.fallback == ("lr", "champion 'lr' is unhealthy")
    healthy = router.route(request_, frozenset({"lr", "mlp"}))
    assert (healthy.routed, healthy.shadows, healthy.fallback) == ("lr", ("mlp",), None)


def test_champion_down_uses_the_configured_fallback_while_it_is_healthy(request_) -> None:
    store = _scored("cc", {"gbm": (50, 30.0), "mlp": (50, 45.0)})
    router = ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], fallback="gbm",
                                      store=store, rng=random.Random(0))
    assert router.route(request_, frozenset({"gbm", "mlp"})).routed == "gbm"
    assert router.route(request_, frozenset({"mlp"})).routed == "mlp"  # fallback down too
    with pytest.raises(NoHealthyArmError):
        router.route(request_, frozenset())


def test_champion_down_keeps_other_challengers_traffic_shares(request_) -> None:
    """gbm answers 20 % of traffic; lr (champion) is down, so its stand-in mlp answers
    the other 80 %, with exact propensities."""
    router = ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], traffic={"gbm": 0.2},
                                      fallback="mlp", rng=random.Random(4))
    decisions = [router.route(request_, frozenset({"gbm", "mlp"})) for _ in range(3000)]
    assert {d.routed: (d.propensity, d.fallback is not None) for d in decisions} == {
        "gbm": (0.2, False), "mlp": (pytest.approx(0.8), True)}
    share = Counter(d.routed for d in decisions)["gbm"] / 3000
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / 3000) ** 0.5


def test_fallback_must_be_a_challenger() -> None:
    with pytest.raises(ValueError, match="fallback 'xgb' is not a challenger"):
        ChampionChallengerRouter("cc", "lr", ["gbm"], fallback="xgb")
    adapter = TypeAdapter(RouterSpec)
    spec = adapter.validate_python({"kind": "champion_challenger", "champion": "lr",
                                    "challengers": ["gbm"], "fallback": "gbm"})
    assert spec.fallback == "gbm"
    with pytest.raises(ValidationError, match="fallback 'lr' is not a challenger"):
        adapter.validate_python({"kind": "champion_challenger", "champion": "lr",
                                 "challengers": ["gbm"], "fallback": "lr"})


@pytest.mark.parametrize("router", [
    ThompsonRouter("r", ALL3),
    EpsilonGreedyRouter("r", ALL3),
    WeightedRouter("r", {"lr": 1, "gbm": 1}),
    ChampionChallengerRouter("r", "lr", ["gbm"]),
])
def test_no_healthy_arm_is_an_error_naming_the_models(router, request_) -> None:
    with pytest.raises(NoHealthyArmError) as caught:
        router.route(request_, frozenset({"xgb"}))
    assert caught.value.router == "r"
    assert set(caught.value.models) == set(router.routable)

