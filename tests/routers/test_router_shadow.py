"""Shadow router: the primary always answers; shadows sampled by their own fraction."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from protos.protocol import InferenceRequest
from routers.base import RouteDecision
from routers.shadow import ShadowRouter


def test_fractions_within_tolerance_and_zero_never(request_: InferenceRequest) -> None:
    """10,000 routes with gbm 1.0, mlp 0.25, xgb 0: gbm on all, mlp within 4 sigma of
    25 %, xgb on none; lr answers every time."""
    router = ShadowRouter(
        "credit-shadow", "lr", {"gbm": 1.0, "mlp": 0.25, "xgb": 0.0}, rng=random.Random(9)
    )
    routed: Counter[str] = Counter()
    shadowed: Counter[str] = Counter()
    for _ in range(10_000):
        decision = router.route(request_)
        routed[decision.routed] += 1
        shadowed.update(decision.shadows)
    assert routed == {"lr": 10_000}
    assert shadowed["gbm"] == 10_000 and shadowed["xgb"] == 0
    assert abs(shadowed["mlp"] / 10_000 - 0.25) <= 4 * (0.25 * 0.75 / 10_000) ** 0.5


def test_shadows_are_sampled_independently(request_: InferenceRequest) -> None:
    """Two shadows at 0.5 each: both on about 25 % of 10,000 routes (4 sigma)."""
    router = ShadowRouter("s", "lr", {"gbm": 0.5, "mlp": 0.5}, rng=random.Random(3))
    both = sum(len(router.route(request_).shadows) == 2 for _ in range(10_000))
    assert abs(both / 10_000 - 0.25) <= 4 * (0.25 * 0.75 / 10_000) ** 0.5


def test_fixed_fractions_draw_no_random_numbers(request_: InferenceRequest) -> None:
    rng = random.Random(0)
    router = ShadowRouter("s", "lr", {"gbm": 1.0, "mlp": 0.0}, rng=rng)
    state = rng.getstate()
    assert router.route(request_) == RouteDecision("lr", ("gbm",))
    assert rng.getstate() == state
    assert router.models == ("lr", "gbm", "mlp") and router.primary == "lr"
    assert router.snapshot()["shadows"] == {"gbm": 1.0, "mlp": 0.0}


@pytest.mark.parametrize("shadows", [{"lr": 1.0}, {"gbm": 1.5}, {"gbm": -0.1}])
def test_bad_shadows_are_rejected(shadows: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ShadowRouter("s", "lr", shadows)
