"""Champion / challenger: shadows, traffic shares, promotion rule and evidence."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scipy.special import betaln

from protos.protocol import InferenceRequest
from routers.base import Outcome, RouteDecision
from routers.champion_challenger import ChampionChallengerRouter, PromotionRule
from routers.posterior import BetaPosterior, prob_greater, prob_greater_upper_bound
from routers.state import InMemoryStateStore, StateStore

FakeClock = Any  # tests/routers/conftest.py:FakeClock (conftest is not importable)

AUTO = PromotionRule(auto=True, min_samples=200, probability=0.95)


def run(
    router: ChampionChallengerRouter,
    request: InferenceRequest,
    p: dict[str, float],
    rounds: int,
    seed: int,
    clock: FakeClock | None = None,
) -> None:
    """``rounds`` decisions, each scored with ground truth for every model:
    Bernoulli(p[model]) rewards from a seeded RNG; the clock advances 1 s each."""
    env = random.Random(seed)
    for _ in range(rounds):
        decision = router.route(request)
        rewards = {m: float(env.random() < p[m]) for m in router.models}
        router.feedback(Outcome(decision.routed, rewards))
        if clock is not None:
            clock.advance(1.0)


def test_champion_answers_and_every_challenger_shadows(request_: InferenceRequest) -> None:
    router = ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], traffic={"gbm": 0.0})
    assert router.route(request_) == RouteDecision("lr", ("gbm", "mlp"))
    assert router.champion == router.primary == "lr"
    assert router.challengers == ("gbm", "mlp")


def test_traffic_share_lets_a_challenger_answer(request_: InferenceRequest) -> None:
    """gbm gets 20 % of 10,000 routes (within 4 sigma), with lr and mlp as shadows."""
    router = ChampionChallengerRouter(
        "cc", "lr", ["gbm", "mlp"], traffic={"gbm": 0.2}, rng=random.Random(5)
    )
    decisions = Counter(router.route(request_) for _ in range(10_000))
    assert set(decisions) == {
        RouteDecision("lr", ("gbm", "mlp"), propensity=0.8),
        RouteDecision("gbm", ("lr", "mlp"), propensity=0.2),
    }
    share = decisions[RouteDecision("gbm", ("lr", "mlp"), propensity=0.2)] / 10_000
    assert abs(share - 0.2) <= 4 * (0.2 * 0.8 / 10_000) ** 0.5


def test_promotes_a_clearly_better_challenger_with_evidence(
    request_: InferenceRequest, clock: FakeClock, store: StateStore
) -> None:
    """p: lr 0.5 (champion), gbm 0.8, mlp 0.3; min_samples 200, threshold 0.95.
    gbm is promoted exactly at the 200th scored decision and stays champion over
    1000 more."""
    router = ChampionChallengerRouter(
        "cc", "lr", ["gbm", "mlp"], rule=AUTO, store=store, rng=random.Random(1), clock=clock
    )
    p = {"lr": 0.5, "gbm": 0.8, "mlp": 0.3}
    run(router, request_, p, 199, seed=2, clock=clock)
    assert router.champion == "lr" and router.promotions == []
    run(router, request_, p, 1, seed=3, clock=clock)
    assert router.champion == "gbm"
    [record] = router.promotions
    assert record["champion"] == "gbm" and record["previous"] == "lr"
    assert record["reason"] == "auto" and record["time"] == 1_700_000_000.0 + 199
    evidence = record["evidence"]
    assert evidence["probability"] >= 0.95
    assert evidence["champion"]["model"] == "lr" and evidence["challenger"]["model"] == "gbm"
    assert evidence["champion"]["n"] == evidence["challenger"]["n"] == 200
    champ, chall = evidence["champion"], evidence["challenger"]
    assert chall["alpha"] == 1 + chall["reward_sum"]
    assert chall["beta"] == 1 + 200 - chall["reward_sum"]
    assert evidence["probability"] == pytest.approx(
        prob_greater(
            BetaPosterior(chall["alpha"], chall["beta"]),
            BetaPosterior(champ["alpha"], champ["beta"]),
        )
    )
    assert router.route(request_) == RouteDecision("gbm", ("lr", "mlp"))
    assert router.challengers == ("lr", "mlp")
    run(router, request_, p, 1000, seed=4, clock=clock)
    assert router.champion == "gbm" and len(router.promotions) == 1
    assert router.snapshot()["promotions"] == router.promotions


@pytest.mark.parametrize("seed", range(3))
def test_never_promotes_a_worse_challenger(request_: InferenceRequest, seed: int) -> None:
    """p: lr 0.7 (champion), gbm 0.5, mlp 0.6; 5000 rounds checked after every
    feedback: no promotion."""
    router = ChampionChallengerRouter(
        "cc", "lr", ["gbm", "mlp"], rule=AUTO, rng=random.Random(seed)
    )
    run(router, request_, {"lr": 0.7, "gbm": 0.5, "mlp": 0.6}, 5000, seed=seed)
    assert router.champion == "lr" and router.promotions == []
    assert router.evidence("mlp")["probability"] < 0.01


def test_never_promotes_before_min_samples_on_each_side(request_: InferenceRequest) -> None:
    """Champion always 0, challenger always 1 (P(better) ~ 1): 199 rounds, no
    promotion; the 200th promotes."""
    router = ChampionChallengerRouter("cc", "lr", ["gbm"], rule=AUTO)
    for _ in range(199):
        router.feedback(Outcome("lr", {"lr": 0.0, "gbm": 1.0}))
    assert router.champion == "lr"
    assert router.evidence("gbm")["probability"] > 0.999999
    router.feedback(Outcome("lr", {"lr": 0.0, "gbm": 1.0}))
    assert router.champion == "gbm"


def test_a_huge_challenger_sample_does_not_stand_in_for_the_champion_s() -> None:
    """10,000 challenger successes against 199 champion failures: no promotion."""
    store = InMemoryStateStore()
    for _ in range(10_000):
        store.add_reward("cc", "gbm", 1.0)
    for _ in range(199):
        store.add_reward("cc", "lr", 0.0)
    router = ChampionChallengerRouter("cc", "lr", ["gbm"], rule=AUTO, store=store)
    assert router.maybe_promote() is None and router.champion == "lr"
    router.feedback(Outcome("lr", {"lr": 0.0}))
    assert router.champion == "gbm"


def test_auto_off_never_promotes() -> None:
    router = ChampionChallengerRouter(
        "cc", "lr", ["gbm"], rule=PromotionRule(auto=False, min_samples=1)
    )
    for _ in range(500):
        router.feedback(Outcome("lr", {"lr": 0.0, "gbm": 1.0}))
    assert router.champion == "lr"


def test_manual_promotion(request_: InferenceRequest, clock: FakeClock) -> None:
    router = ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], clock=clock)
    router.feedback(Outcome("lr", {"lr": 1.0, "mlp": 0.0}))
    record = router.promote("mlp")
    assert router.champion == "mlp" and router.primary == "mlp"
    assert router.route(request_) == RouteDecision("mlp", ("lr", "gbm"))
    assert record == router.promotions[0]
    assert record["reason"] == "manual" and record["previous"] == "lr"
    assert record["time"] == clock.now
    assert record["evidence"]["challenger"]["n"] == 1
    assert record["evidence"]["probability"] == pytest.approx(1 / 6)  # Beta(1,2) > Beta(2,1)
    router.promote("lr", reason="rollback", evidence={"ticket": "RISK-12"})
    assert router.champion == "lr"
    assert router.promotions[1]["evidence"] == {"ticket": "RISK-12"}
    assert router.promotions[1]["reason"] == "rollback"


@pytest.mark.parametrize("model", ["lr", "xgb"])
def test_promoting_the_champion_or_an_unknown_model_fails(model: str) -> None:
    router = ChampionChallengerRouter("cc", "lr", ["gbm"])
    with pytest.raises(ValueError):
        router.promote(model)


def test_champion_is_kept_in_the_store_and_survives_a_new_router(store: StateStore) -> None:
    ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], store=store).promote("gbm")
    again = ChampionChallengerRouter("cc", "lr", ["gbm", "mlp"], store=store)
    assert again.champion == "gbm"
    assert [p["champion"] for p in again.promotions] == ["gbm"]


def test_feedback_rejects_bad_rewards_atomically() -> None:
    router = ChampionChallengerRouter("cc", "lr", ["gbm"])
    with pytest.raises(ValueError):
        router.feedback(Outcome("lr", {"lr": 1.0, "gbm": 2.0}))
    with pytest.raises(ValueError):
        router.feedback(Outcome("lr", {"lr": 1.0, "xgb": 1.0}))
    assert router.store.arm_stats("cc") == {}


def test_traffic_share_of_a_promoted_model_is_ignored(request_: InferenceRequest) -> None:
    router = ChampionChallengerRouter(
        "cc", "lr", ["gbm"], traffic={"gbm": 0.5}, rng=random.Random(0)
    )
    router.promote("gbm")
    assert {router.route(request_) for _ in range(1000)} == {RouteDecision("gbm", ("lr",))}


@pytest.mark.parametrize(
    ("champion", "challengers", "traffic"),
    [
        ("lr", ["lr"], {}),
        ("lr", ["gbm", "gbm"], {}),
        ("lr", ["gbm"], {"mlp": 0.1}),
        ("lr", ["gbm", "mlp"], {"gbm": 0.6, "mlp": 0.6}),
        ("lr", [], {}),
    ],
)
def test_bad_configuration_is_rejected(
    champion: str, challengers: list[str], traffic: dict[str, float]
) -> None:
    with pytest.raises(ValueError):
        ChampionChallengerRouter("cc", champion, challengers, traffic=traffic)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ((3, 5), (2, 2)),
        ((101, 301), (90, 310)),
        ((0.5, 0.5), (0.5, 0.5)),
        ((161.0, 41.0), (99.5, 102.5)),
        ((1.0, 1.0), (900.0, 100.0)),
        ((20.3, 7.1), (1.2, 0.4)),
    ],
)
def test_probability_matches_monte_carlo_with_200k_samples(
    x: tuple[float, float], y: tuple[float, float]
) -> None:
    """prob_greater within 0.01 of a 200,000-sample Monte Carlo estimate (seed 0)."""
    rng = np.random.default_rng(0)
    xs, ys = rng.beta(*x, 200_000), rng.beta(*y, 200_000)
    assert prob_greater(BetaPosterior(*x), BetaPosterior(*y)) == pytest.approx(
        float(np.mean(xs > ys)), abs=0.01
    )


def _exact(ax: int, bx: float, ay: float, by: float) -> float:
    """P(X > Y) in closed form for integer ax (Evan Miller, "Formulas for Bayesian
    A/B Testing", 2015)."""
    i = np.arange(ax)
    terms = betaln(ay + i, by + bx) - np.log(bx + i) - betaln(1 + i, bx) - betaln(ay, by)
    return float(np.exp(terms).sum())


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ((1, 1), (1, 1)),
        ((3, 5), (2, 2)),
        ((161, 41), (100, 102)),
        ((250, 750), (240, 760)),
        ((1, 1), (1_000_000, 1)),
        ((40_001, 60_001), (39_501, 60_501)),
    ],
)
def test_probability_matches_the_closed_form_to_1e_9(
    x: tuple[int, int], y: tuple[int, int]
) -> None:
    assert prob_greater(BetaPosterior(*x), BetaPosterior(*y)) == pytest.approx(
        _exact(*x, *y), abs=1e-9
    )


def test_promotion_rule_validation() -> None:
    with pytest.raises(ValueError):
        PromotionRule(probability=0.5)
    with pytest.raises(ValueError):
        PromotionRule(min_samples=0)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ((3, 5), (2, 2)),
        ((101, 301), (90, 310)),
        ((0.5, 0.5), (0.5, 0.5)),
        ((1, 1), (1, 1)),
        ((161.0, 41.0), (99.5, 102.5)),
        ((99.5, 102.5), (161.0, 41.0)),
        ((20.3, 7.1), (1.2, 0.4)),
    ],
)
def test_upper_bound_is_never_below_the_probability(
    x: tuple[float, float], y: tuple[float, float]
) -> None:
    bx, by = BetaPosterior(*x), BetaPosterior(*y)
    assert prob_greater_upper_bound(bx, by) >= prob_greater(bx, by) - 1e-12


def test_guard_refuses_one_challenger_and_the_next_best_is_promoted(
        request_: InferenceRequest) -> None:
    asked: list[tuple[str, str]] = []

    def guard(champion: str, challenger: str) -> dict[str, Any]:
        asked.append((champion, challenger))
        return {"allowed": challenger != "best", "why": f"{challenger} held"}

    router = ChampionChallengerRouter("cc", "a", ["best", "good"], rule=AUTO,
                                      rng=random.Random(0), guard=guard)
    run(router, request_, {"a": 0.6, "best": 0.95, "good": 0.85}, 600, seed=3)
    assert router.champion == "good"
    promotion = router.promotions[0]
    assert promotion["evidence"]["guard"] == {"allowed": True, "why": "good held"}
    assert ("a", "best") in asked and asked.index(("a", "best")) < asked.index(("a", "good"))
    refusal = router.refusals["best"]
    assert (refusal["champion"], refusal["challenger"]) == ("good", "best")
    assert refusal["evidence"] == {"allowed": False, "why": "best held"}
    assert refusal["probability"] >= 0.95
    assert router.snapshot()["refusals"] == [refusal]
