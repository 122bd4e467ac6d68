"""Many asyncio tasks interleaving route() and feedback() lose no update."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from protos.protocol import InferenceRequest
from routers.bandit import EpsilonGreedyRouter, ThompsonRouter
from routers.base import Outcome, Router
from routers.champion_challenger import ChampionChallengerRouter, PromotionRule
from routers.state import StateStore

TASKS, ROUNDS = 50, 40


def make(kind: str, store: StateStore) -> Router:
    rng = random.Random(0)
    if kind == "thompson":
        return ThompsonRouter("c", ["lr", "gbm", "mlp"], store=store, rng=rng)
    if kind == "epsilon_greedy":
        return EpsilonGreedyRouter("c", ["lr", "gbm", "mlp"], epsilon=0.2, store=store, rng=rng)
    rule = PromotionRule(auto=True, min_samples=50, probability=0.95)
    return ChampionChallengerRouter(
        "c", "lr", ["gbm", "mlp"], traffic={"gbm": 0.3}, rule=rule, store=store, rng=rng
    )


@pytest.mark.parametrize("kind", ["thompson", "epsilon_greedy", "champion_challenger"])
async def test_50_tasks_interleaving_route_and_feedback_keep_exact_counts(
    kind: str, store: StateStore, request_: InferenceRequest
) -> None:
    """50 tasks x 40 rounds, yielding between route() and feedback(): each arm's n
    equals the number of feedbacks that scored it, and reward sums match exactly."""
    router = make(kind, store)
    scored: Counter[str] = Counter()
    reward_sums: Counter[str] = Counter()

    async def client(seed: int) -> None:
        env = random.Random(seed)
        for _ in range(ROUNDS):
            decision = router.route(request_)
            await asyncio.sleep(0)
            models = (decision.routed, *decision.shadows)
            rewards = {m: env.choice((0.0, 0.5, 1.0)) for m in models}
            router.feedback(Outcome(decision.routed, rewards))
            scored.update(list(rewards))
            reward_sums.update(rewards)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(client(i)) for i in range(TASKS)]
    await asyncio.gather(*tasks)
    assert all(t.done() and t.exception() is None for t in tasks)
    stats = store.arm_stats("c")
    assert {m: s.n for m, s in stats.items()} == dict(scored)
    assert {m: s.reward_sum for m, s in stats.items()} == dict(reward_sums)
    assert sum(scored.values()) >= TASKS * ROUNDS
