"""Weighted split: zero weights are never chosen; shares match weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from protos.protocol import InferenceRequest
from routers.weighted import WeightedRouter


def shares(router: WeightedRouter, request: InferenceRequest, n: int) -> Counter[str]:
    return Counter(router.route(request).routed for _ in range(n))


def test_100_0_sends_all_of_10000_routes_to_the_first(request_: InferenceRequest) -> None:
    router = WeightedRouter("credit-ab", {"lr": 100, "gbm": 0}, rng=random.Random(0))
    counts = shares(router, request_, 10_000)
    assert counts == {"lr": 10_000}
    assert router.primary == "lr" and router.models == ("lr", "gbm")


def test_0_100_sends_nothing_to_the_zero_weight_first_arm(request_: InferenceRequest) -> None:
    router = WeightedRouter("credit-ab", {"lr": 0, "gbm": 100}, rng=random.Random(0))
    assert shares(router, request_, 10_000) == {"gbm": 10_000}


def test_zero_weight_in_the_middle_is_never_chosen(request_: InferenceRequest) -> None:
    router = WeightedRouter("credit-ab", {"lr": 1, "gbm": 0, "mlp": 1}, rng=random.Random(4))
    counts = shares(router, request_, 10_000)
    assert counts["gbm"] == 0 and counts["lr"] + counts["mlp"] == 10_000


def test_70_30_within_binomial_tolerance(request_: InferenceRequest) -> None:
    """10,000 routes: lr's share is within 4 sigma (sigma = sqrt(.7 * .3 / 10000))."""
    router = WeightedRouter("credit-ab", {"lr": 70, "gbm": 30}, rng=random.Random(1))
    counts = shares(router, request_, 10_000)
    assert abs(counts["lr"] / 10_000 - 0.7) <= 4 * (0.7 * 0.3 / 10_000) ** 0.5


def test_three_way_split_and_snapshot(request_: InferenceRequest) -> None:
    """Weights 2 / 1 / 1 over 12,000 routes: shares 1/2, 1/4, 1/4 within 4 sigma."""
    router = WeightedRouter("credit-ab", {"lr": 2, "gbm": 1, "mlp": 1}, rng=random.Random(2))
    counts = shares(router, request_, 12_000)
    for arm, p in {"lr": 0.5, "gbm": 0.25, "mlp": 0.25}.items():
        assert abs(counts[arm] / 12_000 - p) <= 4 * (p * (1 - p) / 12_000) ** 0.5
    assert router.snapshot()["shares"] == {"lr": 0.5, "gbm": 0.25, "mlp": 0.25}


@pytest.mark.parametrize(
    "weights", [{}, {"lr": 0}, {"lr": -1, "gbm": 2}, {"lr": float("inf")}, {"lr": float("nan")}]
)
def test_bad_weights_are_rejected(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WeightedRouter("credit-ab", weights)
