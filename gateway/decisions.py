"""Decision records: what was asked, who answered, every model's output, and later the
feedback and the explanation.

Recent decisions stay in memory (bounded, oldest evicted first); every decision and
every change to it is written to an embedded SQLite log (WAL) by a background writer
that batches writes every ``flush_interval_ms``, off the event loop. A lookup that
misses memory reads the log, so decisions survive a restart. A failed write is logged,
counted and retried with the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.config import DecisionsSpec
from protos.errors import DecisionNotFoundError

__all__ = ["Decision", "DecisionStore"]

log = logging.getLogger("arbiter.decisions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    deployment TEXT NOT NULL,
    routed TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_deployment_time ON decisions (deployment, time);
"""


@dataclass(slots=True)
class Decision:
    """One decision.

    Attributes:
        id: decision id (the request id when the client gave one).
        time: when it was made, Unix seconds.
        deployment: deployment name.
        router: router kind.
        routed: key of the model that answered.
        shadows: keys of the models mirrored in the background.
        inputs: input name -> {"datatype", "shape", "data" (flat list)}.
        outputs: model key -> output name -> {"datatype", "shape", "data"}.
        latency_ms: model key -> call latency in milliseconds.
        errors: model key -> error message (shadows that failed or were shed).
        parameters: the request's parameters.
        feedback: the feedback received (reward or truth, time), or None.
        rewards: model key -> reward credited from that feedback.
        explanation: {"status": pending|done|skipped|failed, ...}, or None.
    """

    id: str
    time: float
    deployment: str
    router: str
    routed: str
    shadows: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    feedback: dict[str, Any] | None = None
    rewards: dict[str, float] | None = None
    explanation: dict[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        """The JSON document of ``GET /v2/decisions/{id}``."""
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Decision:
        """Inverse of :meth:`to_doc`."""
        return cls(**doc)


class DecisionStore:
    """Bounded in-memory decisions over a durable SQLite log.

    Args:
        spec: sizes, log path and flush interval.
        on_write_error: called with the number of records whose write failed.
    """

    def __init__(self, spec: DecisionsSpec, on_write_error=None) -> None:
        self.spec = spec
        self._memory: OrderedDict[str, Decision] = OrderedDict()
        self._dirty: dict[str, Decision] = {}
        self._reserved: set[str] = set()
        self._lock = None
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="arbiter-decisions")
        self._writer: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._on_write_error = on_write_error or (lambda n: None)
        self._closing = False

    async def open(self) -> None:
        """Open (create) the log and start the writer."""
        if self.spec.sqlite_path is not None:
            await self._run(self._connect, self.spec.sqlite_path)
        self._writer = asyncio.create_task(self._write_loop(), name="decision-writer")

    def _connect(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _exclusive_lock(path)
        db = sqlite3.connect(path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def reserve(self, decision_id: str) -> bool:
        """Claim ``decision_id`` for a decision being made; False when a decision (in
        memory, in flight, or in the log) already has it."""
        if decision_id in self._memory or decision_id in self._reserved:
            return False
        self._reserved.add(decision_id)
        if self._db is not None and await self._run(self._select, decision_id) is not None:
            self._reserved.discard(decision_id)
            return False
        return True

    def claim(self, decision_id: str) -> None:
        """Reserve a freshly generated (hence unused) id without a lookup."""
        self._reserved.add(decision_id)

    def release(self, decision_id: str) -> None:
        """Give back a reserved id whose decision was not made (the model failed)."""
        self._reserved.discard(decision_id)

    def add(self, decision: Decision) -> None:
        """Keep a new decision and queue it for the log. Never awaits."""
        self._reserved.discard(decision.id)
        self._memory[decision.id] = decision
        if len(self._memory) > self.spec.memory_size:
            self._memory.popitem(last=False)
        self.touch(decision)

    def touch(self, decision: Decision) -> None:
        """Queue a changed decision for the log. Never awaits."""
        self._dirty[decision.id] = decision
        if self.spec.flush_interval_ms == 0 or len(self._dirty) >= 512:
            self._wake.set()

    def cached(self, decision_id: str) -> Decision | None:
        """The in-memory decision, or None."""
        return self._memory.get(decision_id)

    async def get(self, decision_id: str) -> Decision:
        """The decision ``decision_id`` (memory first, then the log).

        Raises:
            DecisionNotFoundError: unknown id.
        """
        found = self._memory.get(decision_id) or self._dirty.get(decision_id)
        if found is not None:
            return found
        doc = await self._run(self._select, decision_id) if self._db is not None else None
        if doc is None:
            raise DecisionNotFoundError(f"decision {decision_id!r} not found")
        again = self._memory.get(decision_id)  # loaded meanwhile by another caller
        if again is not None:
            return again
        decision = Decision.from_doc(orjson.loads(doc))
        self._memory[decision_id] = decision
        return decision

    def _select(self, decision_id: str) -> str | None:
        assert self._db is not None
        row = self._db.execute("SELECT doc FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return row[0] if row else None

    async def all(self, deployment: str | None = None) -> list[Decision]:
        """Every logged decision (of one deployment), oldest first, after a flush."""
        await self.flush()
        if self._db is None:
            items = list(self._memory.values())
            return [d for d in items if deployment is None or d.deployment == deployment]
        docs = await self._run(self._select_all, deployment)
        return [Decision.from_doc(orjson.loads(doc)) for doc in docs]

    def _select_all(self, deployment: str | None) -> list[str]:
        assert self._db is not None
        if deployment is None:
            rows = self._db.execute("SELECT doc FROM decisions ORDER BY time")
        else:
            rows = self._db.execute(
                "SELECT doc FROM decisions WHERE deployment = ? ORDER BY time", (deployment,)
            )
        return [r[0] for r in rows]

    async def _write_loop(self) -> None:
        interval = self.spec.flush_interval_ms / 1000
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval or None)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write every queued decision to the log now."""
        if self._db is None:  # memory only: nothing to write
            self._dirty.clear()
            return
        if not self._dirty:
            return
        batch, self._dirty = self._dirty, {}
        rows = [_row(d) for d in batch.values()]
        try:
            await self._run(self._write, rows)
        except Exception:
            log.exception("decision log write failed; %d records will be retried", len(rows))
            self._on_write_error(len(rows))
            for key, value in batch.items():
                self._dirty.setdefault(key, value)

    async def persist(self, decision: Decision) -> None:
        """Commit one decision to the log now (``durable`` mode)."""
        if self._db is not None:
            await self._run(self._write, [_row(decision)])

    def _write(self, rows: list[tuple]) -> None:
        assert self._db is not None
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO decisions (id, time, deployment, routed, doc) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    async def close(self) -> None:
        """Flush everything and close the log."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.flush()
        if self._db is not None:
            await self._run(self._db.close)
        if self._lock is not None:
            self._lock.close()
        self._executor.shutdown(wait=True)


def _row(decision: Decision) -> tuple:
    return (decision.id, decision.time, decision.deployment, decision.routed,
            orjson.dumps(decision, default=str).decode())


def _exclusive_lock(path: Path):
    """Hold an exclusive lock beside the log for this process's lifetime.

    Raises:
        OSError: another gateway process has the log open (two writers would overwrite
            each other's decisions and count feedback twice).
    """
    import errno
    import fcntl

    handle = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115 - held open
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OSError(
            errno.EBUSY,
            f"decision log {path} is in use by another gateway process; give each "
            "gateway its own decisions.sqlite_path (router state may be shared)",
        ) from None
    return handle
