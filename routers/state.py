"""Where routers keep what they learn: per-arm reward counts, the champion and the
promotion log.

A router never holds its learned state itself; it reads it from a :class:`StateStore`
on each decision, so routers of several gateway processes or replicas that share a
store share what they learn, and a persistent store makes it survive a restart.

Per (router key, arm) a store accumulates ``n`` (scored decisions) and ``reward_sum``
(sum of rewards in [0, 1]); that is all a Beta-Bernoulli posterior or an empirical mean
needs. Per (router key, name) it keeps small JSON-able values: the current champion
(``"champion"``) and the promotion log (``"promotions"``).

Writes are two intents, each atomic:

* :meth:`StateStore.apply` adds one feedback's rewards and, when the router asks,
  evaluates its promotion rule on the counts that result, all at once;
* :meth:`StateStore.promote` replaces the champion only if it is still the one the
  caller saw (compare-and-set), appending the promotion record in the same step.

:class:`InMemoryStateStore` does both in process (tests, simulations, one router). In
the gateway, the decision store (``gateway.decisions``) does them inside the database
transaction that records the feedback, and routers read a cache of it.

All methods are synchronous: under asyncio they run between awaits, so an update is
atomic with respect to other tasks of the same loop without locks.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ArmStats", "Learning", "StateStore", "InMemoryStateStore", "CHAMPION", "PROMOTIONS"]

CHAMPION = "champion"
"""Name of the value holding the current champion's model key."""
PROMOTIONS = "promotions"
"""Name of the value holding the promotion log (a list of records, oldest first)."""


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

    def plus(self, reward: float, count: int = 1) -> ArmStats:
        """These stats with ``count`` more scored decisions totalling ``reward``
        (``count`` may be 0 or -1 when a corrected feedback changes a reward)."""
        return ArmStats(self.n + count, self.reward_sum + reward)


Promotion = Callable[[Mapping[str, ArmStats], Any], "dict[str, Any] | None"]
"""Given an arm -> stats mapping and the stored champion (None when never set),
returns a promotion record ``{"champion", "previous", ...}`` or None."""


@dataclass(frozen=True, slots=True)
class Learning:
    """What one feedback teaches a router, for a store to apply atomically.

    Attributes:
        key: router key (the deployment name).
        rewards: arm -> reward in [0, 1], already checked; each scores one decision.
        promote: the router's promotion rule, evaluated on the counts that result,
            or None.
    """

    key: str
    rewards: Mapping[str, float]
    promote: Promotion | None = None


class StateStore(ABC):
    """Router state: per-arm counts and named values, keyed by router (deployment).

    Implementations must make :meth:`apply` and :meth:`promote` atomic (no lost update
    under concurrent writers, no promotion applied twice) and must let a reader see
    every update this process committed before the read started.
    """

    @abstractmethod
    def arm_stats(self, key: str) -> dict[str, ArmStats]:
        """Stats of every arm of ``key`` that has been scored (a fresh dict; arms
        never scored are absent)."""

    @abstractmethod
    def get_value(self, key: str, name: str, default: Any = None) -> Any:
        """The named value of ``key`` (a JSON-able object), or ``default``."""

    @abstractmethod
    def apply(self, learning: Learning) -> dict[str, Any] | None:
        """Add ``learning.rewards`` (per arm: ``n += 1``, ``reward_sum += reward``),
        then evaluate ``learning.promote`` on the resulting counts and apply the
        promotion it returns, as one atomic step.

        Returns:
            The promotion record applied, or None.
        """

    @abstractmethod
    def promote(self, key: str, expected: Any, record: Mapping[str, Any]) -> bool:
        """Compare-and-set the champion: if the stored champion is still ``expected``
        (None: never set), make ``record["champion"]`` the champion and append
        ``record`` to the promotion log. Returns whether it did."""

    def add_reward(self, key: str, arm: str, reward: float) -> None:
        """Add one scored decision of ``reward`` to ``arm``."""
        self.apply(Learning(key, {arm: reward}))

    def add_rewards(self, key: str, rewards: Mapping[str, float]) -> None:
        """Add one scored decision to each arm of ``rewards`` (arm -> reward)."""
        self.apply(Learning(key, dict(rewards)))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files, connections). Default: nothing."""


class InMemoryStateStore(StateStore):
    """Per-process store on plain dicts: routers used on their own, tests and
    simulations. Lost at exit."""

    def __init__(self) -> None:
        self._arms: dict[str, dict[str, ArmStats]] = {}
        self._values: dict[tuple[str, str], Any] = {}

    def arm_stats(self, key: str) -> dict[str, ArmStats]:
        """See :meth:`StateStore.arm_stats`."""
        return dict(self._arms.get(key, _NO_ARMS))

    def get_value(self, key: str, name: str, default: Any = None) -> Any:
        """See :meth:`StateStore.get_value`."""
        return copy.deepcopy(self._values.get((key, name), default))

    def set_value(self, key: str, name: str, value: Any) -> None:
        """Set the named value of ``key`` (seeding a store in tests)."""
        self._values[(key, name)] = copy.deepcopy(value)

    def apply(self, learning: Learning) -> dict[str, Any] | None:
        """See :meth:`StateStore.apply`."""
        arms = self._arms.setdefault(learning.key, {})
        for arm, reward in learning.rewards.items():
            arms[arm] = arms.get(arm, _EMPTY).plus(reward)
        if learning.promote is None:
            return None
        champion = self._values.get((learning.key, CHAMPION))
        record = learning.promote(dict(arms), champion)
        if record is not None and self.promote(learning.key, champion, record):
            return record
        return None

    def promote(self, key: str, expected: Any, record: Mapping[str, Any]) -> bool:
        """See :meth:`StateStore.promote`."""
        if self._values.get((key, CHAMPION)) != expected:
            return False
        log = self._values.setdefault((key, PROMOTIONS), [])
        log.append(copy.deepcopy(dict(record)))
        self._values[(key, CHAMPION)] = record["champion"]
        return True


_EMPTY = ArmStats()
_NO_ARMS: dict[str, ArmStats] = {}
