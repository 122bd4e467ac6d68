"""The decision store's intent-level operations, on every backend (memory, a SQLite
file, a real PostgreSQL database): records read back whole, time ranges, feedback
once, corrections by the difference, compare-and-set promotion, idempotency keys and
write-behind."""

from __future__ import annotations

import asyncio
import copy
import time

import pytest

from gateway.decisions import SQLDecisionStore, build_store
from protos.errors import DecisionNotFoundError
from protos.protocol import new_id
from routers.base import Outcome
from routers.champion_challenger import ChampionChallengerRouter, PromotionRule
from routers.state import CHAMPION, PROMOTIONS, ArmStats, Learning
from tests.gateway.stores import KINDS, decision, eventually, feedback_doc, store_spec


@pytest.fixture(params=KINDS)
async def store(request, tmp_path):
    """An open store of each backend, its router keys ``dep`` and ``cc``."""
    opened = build_store(store_spec(request.param, request, tmp_path))
    await opened.open(["dep", "cc"])
    yield opened
    await opened.close()


@pytest.fixture(params=KINDS)
async def behind_store(request, tmp_path):
    """A store whose queued decisions wait up to 1 s for their commit."""
    spec = store_spec(request.param, request, tmp_path, decision_writes="behind",
                      flush_interval_ms=1000)
    opened = build_store(spec)
    await opened.open(["dep"])
    yield opened
    await opened.close()


def _full_decision():
    return decision(
        routed="lr", propensity=0.25, request_id="client-7", shadows=["gbm", "mlp"],
        inputs={"input": {"datatype": "FP32", "shape": [1, 3], "data": [0.5, -1.25, "NaN"]}},
        outputs={"lr": {
            "probabilities": {"datatype": "FP32", "shape": [1, 2], "data": [0.75, 0.25]},
            "label": {"datatype": "INT64", "shape": [1], "data": [0]},
        }},
        latency_ms={"lr": 3.5}, parameters={"priority": 2, "tags": {"team": ["risk", 1]}},
    )


async def test_create_then_get_returns_every_field(store: SQLDecisionStore) -> None:
    made = _full_decision()
    expected = copy.deepcopy(made)
    assert await store.create(made, wait=True) is made
    got = await store.get(made.id)
    assert got == expected
    assert got.propensity == 0.25 and got.request_id == "client-7"


async def test_shadow_outputs_errors_and_explanation_appear_on_get(store) -> None:
    made = _full_decision()
    expected = copy.deepcopy(made)
    await store.create(made, wait=True)
    gbm = {"probabilities": {"datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]}}
    store.add_shadow_output(made.id, "gbm", gbm, latency_ms=4.5)
    store.add_shadow_output(made.id, "mlp", None, error="deadline exceeded")
    explanation = {"status": "done", "method": "kernel_shap", "values": [[0.1, -0.2, 0.0]]}
    store.attach_explanation(made.id, explanation)
    expected.outputs["gbm"], expected.latency_ms["gbm"] = gbm, 4.5
    expected.errors["mlp"], expected.explanation = "deadline exceeded", explanation

    async def complete():
        got = await store.get(made.id)
        return got if got.settled() and got.explanation is not None else None

    assert await eventually(complete, timeout_s=2.0) == expected


async def test_get_of_an_unknown_id_raises(store) -> None:
    await store.create(decision(), wait=True)
    with pytest.raises(DecisionNotFoundError, match="not found"):
        await store.get(new_id())


async def test_list_by_deployment_and_time_range_oldest_first(store) -> None:
    t0 = 1_700_000_000.0
    made = {i: decision(at=t0 + i) for i in (3, 0, 4, 1, 2)}  # created out of order
    for d in made.values():
        await store.create(d)
    await store.create(decision("other", at=t0 + 2), wait=True)

    async def ids(**query) -> list[str]:
        return [d.id for d in await store.list("dep", **query)]

    assert await ids() == [made[i].id for i in range(5)]
    assert await ids(since=t0 + 1, until=t0 + 4) == [made[i].id for i in (1, 2, 3)]
    assert await ids(since=t0 + 4) == [made[4].id]
    assert await ids(until=t0) == []
    assert await ids(limit=2) == [made[0].id, made[1].id]
    assert [d.deployment for d in await store.list("other")] == ["other"]


async def test_feedback_is_recorded_once(store) -> None:
    made = decision()
    await store.create(made)
    rewards = {"lr": 1.0, "gbm": 0.25}
    first = await store.record_feedback(made, feedback_doc(None, ["gbm", "lr"], [1]), rewards,
                                        Learning("dep", rewards))
    assert first.new and first.rewards == rewards and first.promotion is None
    again = await store.record_feedback(made, feedback_doc(0.0, ["lr"]), {"lr": 0.0},
                                        Learning("dep", {"lr": 0.0}))
    assert not again.new and again.rewards == rewards
    assert store.state.arm_stats("dep") == {"lr": ArmStats(1, 1.0), "gbm": ArmStats(1, 0.25)}
    got = await store.get(made.id)
    assert got.rewards == rewards and got.feedback["truth"] == [1]
    assert got.feedback_history == []


async def test_correction_adjusts_the_counts_by_the_difference(store) -> None:
    made, other = decision(), decision()
    for d in (made, other):
        await store.create(d)
    await store.record_feedback(other, feedback_doc(1.0, ["lr"]), {"lr": 1.0},
                                Learning("dep", {"lr": 1.0}))
    old = {"lr": 1.0, "gbm": 0.5}
    first_doc = feedback_doc(None, ["gbm", "lr"], [1])
    await store.record_feedback(made, first_doc, old, Learning("dep", old))
    assert store.state.arm_stats("dep") == {"lr": ArmStats(2, 2.0), "gbm": ArmStats(1, 0.5)}
    new = {"lr": 0.0, "mlp": 0.75}  # gbm only in the old rewards, mlp only in the new
    fixed = await store.correct_feedback(made, feedback_doc(None, ["lr", "mlp"], [0]), new,
                                         Learning("dep", new))
    assert fixed.new and fixed.rewards == new
    assert store.state.arm_stats("dep") == {
        "lr": ArmStats(2, 1.0), "gbm": ArmStats(0, 0.0), "mlp": ArmStats(1, 0.75)}
    got = await store.get(made.id)
    assert got.rewards == new and got.feedback["truth"] == [0]
    assert got.feedback_history == [{**first_doc, "rewards": old}]


async def test_correction_without_earlier_feedback_is_the_first(store) -> None:
    made = decision()
    await store.create(made)
    result = await store.correct_feedback(made, feedback_doc(0.5, ["lr"]), {"lr": 0.5},
                                          Learning("dep", {"lr": 0.5}))
    assert result.new and result.rewards == {"lr": 0.5}
    assert store.state.arm_stats("dep") == {"lr": ArmStats(1, 0.5)}
    got = await store.get(made.id)
    assert got.rewards == {"lr": 0.5} and got.feedback_history == []


async def test_promote_is_a_compare_and_set(store) -> None:
    first = {"time": 1.0, "champion": "gbm", "previous": "lr", "reason": "manual"}
    stale = {"time": 2.0, "champion": "mlp", "previous": "lr", "reason": "manual"}
    assert await store.promote("cc", None, first) is True
    assert await store.promote("cc", None, stale) is False
    assert store.state.get_value("cc", CHAMPION) == "gbm"
    assert store.state.get_value("cc", PROMOTIONS) == [first]
    assert await store.promote("cc", "gbm", stale) is True
    assert store.state.get_value("cc", PROMOTIONS) == [first, stale]


async def test_automatic_promotion_happens_once_under_concurrent_feedback(store) -> None:
    router = ChampionChallengerRouter("cc", "lr", ["gbm"], store=store.state,
                                      rule=PromotionRule(auto=True, min_samples=20))
    made = [decision("cc") for _ in range(50)]
    for d in made:
        await store.create(d)
    rewards = {"lr": 0.0, "gbm": 1.0}
    results = await asyncio.gather(*(
        store.record_feedback(d, feedback_doc(None, ["gbm", "lr"], [1]), rewards,
                              router.learning(Outcome("lr", rewards)))
        for d in made
    ))
    promotions = [r.promotion for r in results if r.promotion is not None]
    assert len(promotions) == 1
    assert promotions[0]["champion"] == "gbm" and promotions[0]["previous"] == "lr"
    assert store.state.get_value("cc", PROMOTIONS) == promotions
    assert router.champion == "gbm"
    assert store.state.arm_stats("cc") == {"lr": ArmStats(50, 0.0), "gbm": ArmStats(50, 50.0)}


async def test_a_repeated_idempotency_key_returns_the_first_decision(store) -> None:
    first, second = decision(), decision()
    assert await store.create(first, idempotency_key="k-1", window_s=60) is first
    held = await store.create(second, idempotency_key="k-1", window_s=60)
    assert held.id == first.id and held.time == first.time
    assert [d.id for d in await store.list("dep")] == [first.id]
    elsewhere = decision("other")  # keys are per deployment
    assert (await store.create(elsewhere, idempotency_key="k-1", window_s=60)).id == elsewhere.id
    assert (await store.find("dep", "k-1", since=0.0)).id == first.id


async def test_an_expired_idempotency_key_goes_to_the_new_decision(store) -> None:
    old = decision(at=time.time() - 10)
    await store.create(old, idempotency_key="k-2", window_s=1)
    new = decision()
    assert (await store.create(new, idempotency_key="k-2", window_s=1)).id == new.id
    assert (await store.find("dep", "k-2", since=0.0)).id == new.id
    assert [d.id for d in await store.list("dep")] == [old.id, new.id]
    again = decision()
    assert (await store.create(again, idempotency_key="k-2", window_s=1)).id == new.id


async def test_get_waits_for_a_queued_decision(behind_store) -> None:
    t0 = time.time()
    made = [decision(at=t0 + i) for i in range(3)]
    for d in made:
        assert await behind_store.create(d) is d
    assert behind_store.pending_writes == 3
    got = await behind_store.get(made[1].id)
    assert got.id == made[1].id and got.time == t0 + 1
    assert behind_store.pending_writes == 0
    assert [d.id for d in await behind_store.list("dep")] == [d.id for d in made]
