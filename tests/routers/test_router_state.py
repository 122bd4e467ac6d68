"""State stores: accumulation, named values, sharing across objects and processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from routers.state import ArmStats, SQLiteStateStore, StateStore


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


def test_values_round_trip_and_default(store: StateStore) -> None:
    assert store.get_value("credit", "champion") is None
    assert store.get_value("credit", "promotions", []) == []
    store.set_value("credit", "champion", "gbm")
    store.set_value("credit", "promotions", [{"champion": "gbm", "time": 1.5}])
    assert store.get_value("credit", "champion") == "gbm"
    assert store.get_value("credit", "promotions") == [{"champion": "gbm", "time": 1.5}]
    assert store.get_value("credit-eg", "champion") is None


def test_arm_stats_mean() -> None:
    assert ArmStats().mean is None
    assert ArmStats(4, 1.0).mean == 0.25


def test_sqlite_two_objects_on_one_file_see_each_others_updates(tmp_path: Path) -> None:
    a, b = SQLiteStateStore(tmp_path / "s.db"), SQLiteStateStore(tmp_path / "s.db")
    try:
        assert b.arm_stats("credit") == {}  # fills b's cache
        a.add_reward("credit", "lr", 1.0)
        assert b.arm_stats("credit") == {"lr": ArmStats(1, 1.0)}  # cache invalidated
        b.add_reward("credit", "lr", 0.5)
        b.set_value("credit", "champion", "lr")
        assert a.arm_stats("credit") == {"lr": ArmStats(2, 1.5)}
        assert a.get_value("credit", "champion") == "lr"
        a.set_value("credit", "champion", "gbm")
        assert b.get_value("credit", "champion") == "gbm"
    finally:
        a.close()
        b.close()


def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    s = SQLiteStateStore(tmp_path / "s.db")
    s.add_rewards("credit", {"lr": 1.0, "gbm": 0.0})
    s.set_value("credit", "champion", "gbm")
    s.close()
    reopened = SQLiteStateStore(tmp_path / "s.db")
    assert reopened.arm_stats("credit") == {"lr": ArmStats(1, 1.0), "gbm": ArmStats(1, 0.0)}
    assert reopened.get_value("credit", "champion") == "gbm"
    reopened.close()


def test_sqlite_rejects_non_json_value(tmp_path: Path) -> None:
    s = SQLiteStateStore(tmp_path / "s.db")
    with pytest.raises(TypeError):
        s.set_value("credit", "champion", object())
    s.close()


def test_sqlite_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    """Three processes each add 300 rewards of 0.5 to one arm at once: n is exactly
    900 and reward_sum exactly 450 (the upsert is atomic)."""
    path = tmp_path / "s.db"
    SQLiteStateStore(path).close()  # create the schema once
    script = textwrap.dedent(
        f"""
        from routers.state import SQLiteStateStore
        s = SQLiteStateStore({str(path)!r})
        for i in range(300):
            if i % 2:
                s.add_reward("credit", "lr", 0.5)
            else:
                s.add_rewards("credit", {{"lr": 0.5}})
        s.close()
        """
    )
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=root) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    s = SQLiteStateStore(path)
    assert s.arm_stats("credit") == {"lr": ArmStats(900, 450.0)}
    s.close()
