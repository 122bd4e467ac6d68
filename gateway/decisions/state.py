"""The routers' view of the state in a decision store: arm counts, champion and
promotion log, served from memory so that routing never awaits.

The store fills it at start, replaces one router's entry after each of its own commits
(so a process sees its own feedback at once), and reloads it every
``refresh_interval_ms`` from the database (so it sees every other process's and
replica's). A reload that started before a local commit is dropped rather than
applied over it (:attr:`CachedState.generation`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from routers.state import ArmStats, Learning, StateStore

__all__ = ["CachedState", "Snapshot"]

Snapshot = tuple[dict[str, ArmStats], dict[str, Any]]
"""One router's state: arm -> stats, and value name -> value."""


class CachedState(StateStore):
    """Read-only for routers: their writes go through the decision store's
    transactions (``DecisionStore.record_feedback`` and ``promote``)."""

    def __init__(self) -> None:
        self._arms: dict[str, dict[str, ArmStats]] = {}
        self._values: dict[str, dict[str, Any]] = {}
        self.generation = 0
        """Incremented by every local commit; a reload that saw another value is stale."""

    def arm_stats(self, key: str) -> dict[str, ArmStats]:
        """See :meth:`StateStore.arm_stats`."""
        return dict(self._arms.get(key, _NONE))

    def get_value(self, key: str, name: str, default: Any = None) -> Any:
        """See :meth:`StateStore.get_value`."""
        value = self._values.get(key, _NONE).get(name, default)
        return value if isinstance(value, str | int | float | None) else copy.deepcopy(value)

    def apply(self, learning: Learning) -> dict[str, Any] | None:
        """Not here: the gateway learns through ``DecisionStore.record_feedback``.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("gateway routers learn through DecisionStore.record_feedback")

    def promote(self, key: str, expected: Any, record: Mapping[str, Any]) -> bool:
        """Not here: the gateway promotes through ``DecisionStore.promote``.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("gateway routers are promoted through DecisionStore.promote")

    def replace(self, key: str, snapshot: Snapshot) -> None:
        """Install router ``key``'s state as a local commit left it."""
        self._arms[key], self._values[key] = snapshot
        self.generation += 1

    def load(self, snapshots: Mapping[str, Snapshot], generation: int) -> bool:
        """Install a reload of every router's state, unless a local commit happened
        since the reload started (``generation`` differs). Returns whether it did."""
        if generation != self.generation:
            return False
        for key, (arms, values) in snapshots.items():
            self._arms[key], self._values[key] = arms, values
        return True


_NONE: dict = {}
