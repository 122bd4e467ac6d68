"""The decision store: the gateway's system of record, and the routers' state.

One store holds decisions, their shadow outputs, feedback (with corrections),
explanations, and the routers' arm counts, champion and promotion log, so that one
transaction records a feedback together with the counts it changes: a crash leaves
them neither disagreeing nor double-counted.

Operations are intents, each one transaction and idempotent where a client may retry:

==========================  ==============================================================
``create``                  a new decision (or, for a repeated Idempotency-Key, the
                            decision that already holds it)
``add_shadow_output``       one shadow's outputs and latency, or its error
``record_feedback``         the first feedback of a decision and the router counts it
                            changes, with the router's promotion rule; a repeat is
                            reported as a duplicate and counts nothing
``correct_feedback``        replaces the feedback in force (kept in the history) and
                            adjusts the counts by the difference
``attach_explanation``      the explanation document
``promote``                 compare-and-set of a router's champion, with its record
``put_value``               one other router value (a deployment's monitoring spec)
``purge``                   deletes decisions older than a time, with their feedback,
                            shadow outputs and explanations (``store.retention_days``)
``get`` / ``list`` /        reads: one decision, a deployment's decisions in a time
``find``                    range, the decision holding an idempotency key
==========================  ==============================================================

While the database cannot be written (an outage) the store is not :attr:`healthy
<DecisionStore.healthy>`: every operation a caller awaits raises
:class:`~gateway.decisions.dialect.StoreUnavailableError` at once, nothing is
acknowledged that is not committed, and write-behind operations already queued are
kept and committed when the database returns (``gateway.decisions.sql``).

Routers stay synchronous: they read :attr:`DecisionStore.state`, a cache that the store
refreshes in the background (``refresh_interval_ms``) and updates at once after each
of its own commits.

Backends (``store.kind``): ``memory`` (SQLite in memory: tests, one process),
``sqlite`` (a file: one node, any number of processes) and ``postgres`` (any number
of replicas). They share one implementation (``gateway.decisions.sql``) and differ in
their dialect (``gateway.decisions.sqlite``, ``gateway.decisions.postgres``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config import StoreSpec
from gateway.decisions.record import Decision
from routers.state import Learning, StateStore

__all__ = ["DecisionStore", "FeedbackRecorded", "StoreMetrics"]


@dataclass(frozen=True, slots=True)
class FeedbackRecorded:
    """What recording (or correcting) one feedback did.

    Attributes:
        new: False when the decision already had feedback (a duplicate: nothing counted).
        rewards: model key -> reward of the feedback in force.
        promotion: the promotion record this feedback caused, or None.
    """

    new: bool
    rewards: dict[str, float]
    promotion: dict[str, Any] | None = None


class StoreMetrics:
    """Hooks a store reports through (the gateway binds them to Prometheus).

    Attributes:
        write_errors: called with the number of queued writes lost (failed after the
            retries, or dropped at a shutdown during an outage).
        queue_depth: called with the number of decision writes waiting.
        batch_size: called with the number of operations of each committed batch.
        health: called with True or False when the store can be written again, or no
            longer (an outage).
    """

    def __init__(self, write_errors=None, queue_depth=None, batch_size=None,
                 health=None) -> None:
        self.write_errors = write_errors or (lambda n: None)
        self.queue_depth = queue_depth or (lambda n: None)
        self.batch_size = batch_size or (lambda n: None)
        self.health = health or (lambda up: None)


class DecisionStore(ABC):
    """Decisions, feedback, explanations and router state, behind intent-level
    operations (see the module docstring)."""

    spec: StoreSpec
    """The ``store:`` block of the gateway config."""

    state: StateStore
    """The routers' view: arm counts and values, served from a cache (never awaits)."""

    @abstractmethod
    async def open(self, router_keys: list[str]) -> None:
        """Connect, create or check the schema, load the state of ``router_keys``.

        Raises:
            StoreError: the store cannot be reached or its schema is newer than this
                gateway's.
        """

    @abstractmethod
    async def close(self) -> None:
        """Commit every queued write, then disconnect."""

    @abstractmethod
    async def create(
        self, decision: Decision, *, idempotency_key: str | None = None,
        window_s: float = 0.0, wait: bool = False, request_hash: str | None = None,
    ) -> Decision:
        """Record a new decision. During an outage nothing is recorded (except a
        write-behind decision that waited for room in a full queue: it stays queued).

        Args:
            decision: the decision.
            idempotency_key: the client's Idempotency-Key, or None.
            window_s: how long (seconds) an earlier decision keeps its key.
            wait: commit before returning (always, with a key); otherwise the write
                may wait in the bounded write-behind queue.
            request_hash: the digest of the request
                (``gateway.idempotency.request_digest``), kept with the key.

        Returns:
            ``decision``, or the earlier decision of the same deployment that holds
            ``idempotency_key`` within the window.

        Raises:
            StoreUnavailableError: an outage (before or while waiting for the commit).
            IdempotencyKeyReusedError: the decision holding the key was made for another
                request (its digest differs from ``request_hash``).
        """

    @abstractmethod
    def add_shadow_output(
        self, decision_id: str, model: str, outputs: Mapping[str, Any] | None,
        latency_ms: float | None = None, error: str | None = None,
    ) -> None:
        """Record a shadow's outputs and latency, or its error (queued; never awaits)."""

    @abstractmethod
    async def record_feedback(
        self, decision: Decision, feedback: dict[str, Any], rewards: dict[str, float],
        learning: Learning | None,
    ) -> FeedbackRecorded:
        """Record the first feedback of ``decision`` with the router counts of
        ``learning`` (and its promotion rule) in one transaction, committed before
        returning. A decision that already has feedback is left as it is."""

    @abstractmethod
    async def correct_feedback(
        self, decision: Decision, feedback: dict[str, Any], rewards: dict[str, float],
        learning: Learning | None,
    ) -> FeedbackRecorded:
        """Replace the feedback in force (kept in the history): each arm's ``n`` and
        ``reward_sum`` change by the difference between the new and old rewards. With
        no earlier feedback this records it as the first."""

    @abstractmethod
    def attach_explanation(self, decision_id: str, explanation: dict[str, Any]) -> None:
        """Record the explanation document (queued; never awaits)."""

    @abstractmethod
    async def promote(self, key: str, expected: Any, record: Mapping[str, Any]) -> bool:
        """Compare-and-set router ``key``'s champion (see
        :meth:`routers.state.StateStore.promote`); committed before returning."""

    @abstractmethod
    async def put_value(self, key: str, name: str, value: Any) -> None:
        """Set router ``key``'s JSON-able value ``name`` (shared by every process through
        :attr:`state`; not the champion nor the promotion log); committed before
        returning.

        Raises:
            StoreError: ``name`` is ``champion`` or ``promotions``.
        """

    @abstractmethod
    async def purge(self, before: float) -> int:
        """Delete the decisions made before ``before`` (Unix seconds) with their
        feedback, shadow outputs and explanations, in one transaction; returns how many
        decisions were deleted. Router counts are kept (what was learned stays)."""

    @abstractmethod
    def cached(self, decision_id: str) -> Decision | None:
        """The decision as this process made it (with the shadow outputs it saw), or
        None: another process's, or evicted from memory (``memory_size``)."""

    @abstractmethod
    async def get(self, decision_id: str) -> Decision:
        """The decision, with every change committed so far.

        Raises:
            DecisionNotFoundError: unknown id.
        """

    @abstractmethod
    async def list(
        self, deployment: str, since: float | None = None, until: float | None = None,
        limit: int | None = None,
    ) -> list[Decision]:
        """A deployment's decisions with ``since <= time < until`` (Unix seconds),
        oldest first, at most ``limit``."""

    @abstractmethod
    async def find(self, deployment: str, idempotency_key: str, since: float,
                   request_hash: str | None = None) -> Decision | None:
        """The decision of ``deployment`` holding ``idempotency_key``, made at or after
        ``since`` (Unix seconds), or None.

        Raises:
            IdempotencyKeyReusedError: it was made for another request than the one of
                ``request_hash`` (a decision kept without a digest, from schema version 1,
                matches any).
        """

    @property
    @abstractmethod
    def pending_writes(self) -> int:
        """Decision writes waiting in the write-behind queue."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """False during an outage: the database cannot be written (it comes back by
        itself when the database does)."""

    @abstractmethod
    def check_writable(self) -> None:
        """Refuse early what an outage would refuse anyway.

        Raises:
            StoreUnavailableError: the store is not :attr:`healthy`.
        """
