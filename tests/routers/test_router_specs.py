"""Router specs: the documented YAML parses, bad configs fail, build_router builds."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

import routers
from routers import build_router
from routers.specs import (
    BetaPriorSpec,
    ChampionChallengerSpec,
    EpsilonGreedySpec,
    PromotionSpec,
    RouterSpec,
    ShadowSpec,
    ShadowTargetSpec,
    ThompsonSpec,
    WeightedSpec,
)
from routers.state import InMemoryStateStore

ADAPTER: TypeAdapter[Any] = TypeAdapter(RouterSpec)

EXAMPLE = """
credit:      {kind: thompson, arms: [lr, gbm, mlp], prior: {alpha: 1, beta: 1}}
credit-eg:   {kind: epsilon_greedy, arms: [lr, gbm], epsilon: 0.1}
credit-cc:   {kind: champion_challenger, champion: lr, challengers: [gbm, mlp], traffic: {gbm: 0.0},
              promotion: {auto: true, min_samples: 200, probability: 0.95}}
credit-shadow: {kind: shadow, primary: lr, shadows: [{model: gbm, fraction: 1.0},
                                                     {model: mlp, fraction: 0.25}]}
credit-ab:   {kind: weighted, weights: {lr: 100, gbm: 0}}
"""


def test_documented_example_parses_and_builds() -> None:
    config = yaml.safe_load(EXAMPLE)
    built = {
        name: build_router(
            name,
            ADAPTER.validate_python(raw),
            rng=random.Random(0),
            clock=lambda: 0.0,
            store=InMemoryStateStore(),
        )
        for name, raw in config.items()
    }
    assert {n: type(r).__name__ for n, r in built.items()} == {
        "credit": "ThompsonRouter",
        "credit-eg": "EpsilonGreedyRouter",
        "credit-cc": "ChampionChallengerRouter",
        "credit-shadow": "ShadowRouter",
        "credit-ab": "WeightedRouter",
    }
    for name, router in built.items():
        assert router.kind == config[name]["kind"] and router.name == name
    cc = built["credit-cc"]
    assert isinstance(cc, routers.ChampionChallengerRouter)
    assert cc.rule == routers.PromotionRule(True, 200, 0.95, 1)
    assert built["credit-shadow"].models == ("lr", "gbm", "mlp")


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "thompson", "arms": []},
        {"kind": "thompson", "arms": ["lr", "lr"]},
        {"kind": "thompson", "arms": ["lr"], "prior": {"alpha": 0}},
        {"kind": "thompson", "arms": ["lr"], "extra": 1},
        {"kind": "thompson", "arms": ["bad name"]},
        {"kind": "epsilon_greedy", "arms": ["lr"], "epsilon": 1.5},
        {"kind": "weighted", "weights": {"lr": 0, "gbm": 0}},
        {"kind": "weighted", "weights": {"lr": -1, "gbm": 2}},
        {"kind": "weighted", "weights": {}},
        {"kind": "shadow", "primary": "lr", "shadows": [{"model": "lr"}]},
        {"kind": "shadow", "primary": "lr", "shadows": [{"model": "gbm"}, {"model": "gbm"}]},
        {"kind": "shadow", "primary": "lr", "shadows": [{"model": "gbm", "fraction": 1.1}]},
        {"kind": "champion_challenger", "champion": "lr", "challengers": ["lr"]},
        {"kind": "champion_challenger", "champion": "lr", "challengers": []},
        {"kind": "champion_challenger", "champion": "lr", "challengers": ["gbm", "gbm"]},
        {
            "kind": "champion_challenger",
            "champion": "lr",
            "challengers": ["gbm"],
            "traffic": {"mlp": 0.1},
        },
        {
            "kind": "champion_challenger",
            "champion": "lr",
            "challengers": ["gbm", "mlp"],
            "traffic": {"gbm": 0.7, "mlp": 0.4},
        },
        {
            "kind": "champion_challenger",
            "champion": "lr",
            "challengers": ["gbm"],
            "promotion": {"probability": 0.5},
        },
        {
            "kind": "champion_challenger",
            "champion": "lr",
            "challengers": ["gbm"],
            "promotion": {"min_samples": 0},
        },
        {"kind": "round_robin", "arms": ["lr"]},
        {"arms": ["lr"]},
    ],
)
def test_bad_specs_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ADAPTER.validate_python(raw)


def test_defaults() -> None:
    spec = ADAPTER.validate_python(
        {"kind": "champion_challenger", "champion": "lr", "challengers": ["gbm"]}
    )
    assert spec.traffic == {} and spec.promotion == PromotionSpec()
    assert spec.promotion.auto is False and spec.prior == BetaPriorSpec(alpha=1, beta=1)
    assert ADAPTER.validate_python({"kind": "epsilon_greedy", "arms": ["lr"]}).epsilon == 0.1
    shadow = ADAPTER.validate_python(
        {"kind": "shadow", "primary": "lr", "shadows": [{"model": "gbm"}]}
    )
    assert shadow.shadows[0].fraction == 1.0


@pytest.mark.parametrize(
    "model",
    [
        BetaPriorSpec,
        ThompsonSpec,
        EpsilonGreedySpec,
        WeightedSpec,
        ShadowTargetSpec,
        ShadowSpec,
        PromotionSpec,
        ChampionChallengerSpec,
    ],
)
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    missing = [n for n, f in model.model_fields.items() if not f.description]
    assert missing == []


def test_build_router_rejects_a_raw_dict() -> None:
    with pytest.raises(TypeError):
        build_router("credit", {"kind": "thompson", "arms": ["lr"]})  # type: ignore[arg-type]


def test_build_router_passes_the_store_to_learning_routers() -> None:
    store = InMemoryStateStore()
    spec = ADAPTER.validate_python({"kind": "thompson", "arms": ["lr", "gbm"]})
    router = build_router("credit", spec, rng=random.Random(0), clock=lambda: 0.0, store=store)
    router.feedback(routers.Outcome("lr", {"lr": 1.0}))
    assert store.arm_stats("credit") == {"lr": routers.ArmStats(1, 1.0)}
