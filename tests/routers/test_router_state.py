"""The in-process state store: accumulation, atomic learning with promotion, and the
champion's compare-and-set. (The gateway's SQLite and PostgreSQL stores implement the
same intents in database transactions: tests/gateway/test_store_*.py.)"""

from __future__ import annotations

from routers.state import CHAMPION, PROMOTIONS, ArmStats, InMemoryStateStore, Learning, StateStore


def test_add_reward_accumulates_n_and_reward_sum(store: StateStore) -> None:
    store.add_reward("credit", "lr", 1.0)
    store.add_reward("credit", "lr", 0.25)
    store.add_rewards("credit", {"lr": 0.0, "gbm": 0.5})
    assert store.arm_stats("credit") == {"lr": ArmStats(3, 1.25), "gbm": ArmStats(1, 0.5)}
    assert store.arm_stats("other") == {}


def test_arm_stats_returns_a_fresh_dict(store: StateStore) -> None:
    store.add_reward("credit", "lr", 1.0)
    store.arm_stats("credit")["lr"] = ArmStats(99, 0.0)
    assert store.arm_stats("credit")["lr"] == ArmStats(1, 1.0)


def test_promote_is_a_compare_and_set(store: StateStore) -> None:
    assert store.get_value("credit", CHAMPION) is None
    assert store.get_value("credit", PROMOTIONS, []) == []
    first = {"champion": "gbm", "previous": "lr", "time": 1.5}
    assert store.promote("credit", None, first)
    assert not store.promote("credit", None, {"champion": "mlp", "previous": "lr"})
    assert store.get_value("credit", CHAMPION) == "gbm"
    assert store.get_value("credit", PROMOTIONS) == [first]
    assert store.get_value("credit-eg", CHAMPION) is None


def test_apply_evaluates_the_promotion_on_the_counts_that_result() -> None:
    store = InMemoryStateStore()
    seen = []

    def rule(counts, stored):
        seen.append((dict(counts), stored))
        return {"champion": "gbm", "previous": "lr"} if counts["gbm"].n >= 2 else None

    assert store.apply(Learning("cc", {"gbm": 1.0}, rule)) is None
    assert store.apply(Learning("cc", {"gbm": 1.0, "lr": 0.0}, rule)) == {
        "champion": "gbm", "previous": "lr"}
    assert seen == [({"gbm": ArmStats(1, 1.0)}, None),
                    ({"gbm": ArmStats(2, 2.0), "lr": ArmStats(1, 0.0)}, None)]
    assert store.get_value("cc", CHAMPION) == "gbm"


def test_values_are_copies() -> None:
    store = InMemoryStateStore()
    store.promote("cc", None, {"champion": "gbm", "previous": "lr"})
    store.get_value("cc", PROMOTIONS).append({"champion": "x"})
    assert len(store.get_value("cc", PROMOTIONS)) == 1


def test_arm_stats_mean() -> None:
    assert ArmStats().mean is None
    assert ArmStats(4, 1.0).mean == 0.25
