"""Where routers keep what they learn: per-arm reward counts and a few named values.

A router never holds its learned state itself; it reads it from a :class:`StateStore`
on each decision, so several routers (one per gateway process) that share a store
share what they learn, and a persistent store makes it survive a restart.

Per (router key, arm) a store accumulates ``n`` (scored decisions) and ``reward_sum``
(sum of rewards in [0, 1]); that is all a Beta-Bernoulli posterior or an empirical mean
needs. Per (router key, name) it keeps small JSON-able values (the current champion,
the promotion log).

Two stores:

* :class:`InMemoryStateStore` - the default; plain dicts, per process, sub-microsecond.
* :class:`SQLiteStateStore` - one SQLite file in WAL mode shared by every gateway
  process on a machine. Each reward is one atomic ``INSERT ... ON CONFLICT DO UPDATE
  SET n = n + 1, reward_sum = reward_sum + ?`` statement, so concurrent writers never
  lose an update. Reads are cached per process and invalidated by
  ``PRAGMA data_version`` (which changes when another connection commits).

All methods are synchronous: under asyncio they run between awaits, so an update is
atomic with respect to other tasks of the same loop without locks.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ArmStats", "StateStore", "InMemoryStateStore", "SQLiteStateStore"]


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Accumulated feedback for one arm.

    Attributes:
        n: number of scored decisions (count, >= 0).
        reward_sum: sum of their rewards (each in [0, 1], so ``0 <= reward_sum <= n``).
    """

    n: int = 0
    reward_sum: float = 0.0

    @property
    def mean(self) -> float | None:
        """Empirical mean reward, or ``None`` for an arm never scored."""
        return self.reward_sum / self.n if self.n else None

    def plus(self, reward: float) -> ArmStats:
        """These stats with one more scored decision of ``reward``."""
        return ArmStats(self.n + 1, self.reward_sum + reward)


class StateStore(ABC):
    """Router state: per-arm counts and named values, keyed by router (deployment).

    Implementations must make :meth:`add_reward` atomic (no lost update under
    concurrent writers) and must let a reader see every update committed before the
    read started.
    """

    @abstractmethod
    def add_reward(self, key: str, arm: str, reward: float) -> None:
        """Add one scored decision: ``n += 1``, ``reward_sum += reward``.

        Args:
            key: router key (the deployment name).
            arm: model key.
            reward: reward; the caller has checked it lies in [0, 1].
        """

    def add_rewards(self, key: str, rewards: Mapping[str, float]) -> None:
        """Add one scored decision to each arm of ``rewards`` (arm -> reward)."""
        for arm, reward in rewards.items():
            self.add_reward(key, arm, reward)

    @abstractmethod
    def arm_stats(self, key: str) -> dict[str, ArmStats]:
        """Stats of every arm of ``key`` that has been scored (a fresh dict; arms
        never scored are absent)."""

    @abstractmethod
    def get_value(self, key: str, name: str, default: Any = None) -> Any:
        """The named value of ``key`` (a JSON-able object), or ``default``."""

    @abstractmethod
    def set_value(self, key: str, name: str, value: Any) -> None:
        """Set the named value of ``key``; ``value`` must be JSON-able."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files, connections). Default: nothing."""


class InMemoryStateStore(StateStore):
    """Per-process store on plain dicts; the default. Lost at exit."""

    def __init__(self) -> None:
        self._arms: dict[str, dict[str, ArmStats]] = {}
        self._values: dict[tuple[str, str], Any] = {}

    def add_reward(self, key: str, arm: str, reward: float) -> None:
        """See :meth:`StateStore.add_reward`."""
        arms = self._arms.setdefault(key, {})
        arms[arm] = arms.get(arm, _EMPTY).plus(reward)

    def arm_stats(self, key: str) -> dict[str, ArmStats]:
        """See :meth:`StateStore.arm_stats`."""
        return dict(self._arms.get(key, _NO_ARMS))

    def get_value(self, key: str, name: str, default: Any = None) -> Any:
        """See :meth:`StateStore.get_value`."""
        return self._values.get((key, name), default)

    def set_value(self, key: str, name: str, value: Any) -> None:
        """See :meth:`StateStore.set_value`."""
        self._values[(key, name)] = value


_EMPTY = ArmStats()
_NO_ARMS: dict[str, ArmStats] = {}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS arm_stats (
    key TEXT NOT NULL, arm TEXT NOT NULL,
    n INTEGER NOT NULL, reward_sum REAL NOT NULL,
    PRIMARY KEY (key, arm)
);
CREATE TABLE IF NOT EXISTS router_value (
    key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (key, name)
);
"""

_ADD = (
    "INSERT INTO arm_stats (key, arm, n, reward_sum) VALUES (?, ?, 1, ?) "
    "ON CONFLICT (key, arm) DO UPDATE SET n = n + 1, reward_sum = reward_sum + excluded.reward_sum"
)
_SET = (
    "INSERT INTO router_value (key, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (key, name) DO UPDATE SET value = excluded.value"
)


class SQLiteStateStore(StateStore):
    """A store in one SQLite file, shared by the processes of one machine.

    The file is opened in WAL mode (readers never block the writer) with a busy
    timeout, in autocommit mode: each :meth:`add_reward` is a single atomic upsert
    statement, :meth:`add_rewards` one ``BEGIN IMMEDIATE`` transaction. Reads are
    cached and the cache is dropped after this object writes or when
    ``PRAGMA data_version`` shows another connection committed.

    Not for network file systems (SQLite's WAL needs shared memory on one host).

    Args:
        path: database file; created with its tables if missing.
        busy_timeout_ms: how long a writer waits for another writer's lock (ms).

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)
        self._data_version = -1
        self._arm_cache: dict[str, dict[str, ArmStats]] = {}
        self._value_cache: dict[tuple[str, str], Any] = {}

    def add_reward(self, key: str, arm: str, reward: float) -> None:
        """See :meth:`StateStore.add_reward`; one atomic upsert."""
        with self._lock:
            self._conn.execute(_ADD, (key, arm, float(reward)))
            self._invalidate()

    def add_rewards(self, key: str, rewards: Mapping[str, float]) -> None:
        """See :meth:`StateStore.add_rewards`; one transaction."""
        rows = [(key, arm, float(r)) for arm, r in rewards.items()]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(_ADD, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self._invalidate()

    def arm_stats(self, key: str) -> dict[str, ArmStats]:
        """See :meth:`StateStore.arm_stats`."""
        with self._lock:
            self._refresh()
            cached = self._arm_cache.get(key)
            if cached is None:
                rows = self._conn.execute(
                    "SELECT arm, n, reward_sum FROM arm_stats WHERE key = ?", (key,)
                ).fetchall()
                cached = {arm: ArmStats(n, s) for arm, n, s in rows}
                self._arm_cache[key] = cached
            return dict(cached)

    def get_value(self, key: str, name: str, default: Any = None) -> Any:
        """See :meth:`StateStore.get_value`."""
        with self._lock:
            self._refresh()
            if (key, name) not in self._value_cache:
                row = self._conn.execute(
                    "SELECT value FROM router_value WHERE key = ? AND name = ?", (key, name)
                ).fetchone()
                self._value_cache[(key, name)] = _MISSING if row is None else json.loads(row[0])
            value = self._value_cache[(key, name)]
            return default if value is _MISSING else value

    def set_value(self, key: str, name: str, value: Any) -> None:
        """See :meth:`StateStore.set_value`.

        Raises:
            TypeError: ``value`` is not JSON-serialisable.
        """
        text = json.dumps(value)
        with self._lock:
            self._conn.execute(_SET, (key, name, text))
            self._invalidate()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _refresh(self) -> None:
        """Drop the caches if another connection committed since the last read."""
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:
            self._data_version = version
            self._invalidate()

    def _invalidate(self) -> None:
        self._arm_cache.clear()
        self._value_cache.clear()


_MISSING = object()
