"""The decision store's writer: one thread, one connection, group commit, and what
happens while the database cannot be written.

Every write is an :class:`Op` queued to the writer, which takes every operation
waiting (up to 512), runs them in ONE transaction and commits once: concurrent
feedbacks share one commit and one fsync. Each operation runs inside a savepoint (one
that fails is rolled back alone and its caller gets the error), except the decisions
without an idempotency key, which cannot conflict: those of a batch go in as
multi-row ``INSERT ... ON CONFLICT DO NOTHING`` statements of up to
:data:`~gateway.decisions.operations.BULK_ROWS` rows, one round trip for many
decisions instead of three per decision (a statement that fails is rolled back and
its rows inserted one by one, each in its own savepoint, so a bad row fails alone).
Routers whose counts a batch changes are locked first, in sorted order. A deadlock or serialisation
failure rolls the batch back and runs it again (up to 5 tries, with backoff).

**Outages.** When the database cannot be written (the dialect's
:meth:`~gateway.decisions.dialect.Dialect.unavailable`: PostgreSQL down or
unreachable, a read-only standby, SQLite's disk full, read-only or failing) and one
reconnect does not help, the writer declares an outage (``on_health(False, cause)``):

* operations a caller awaits (feedback, keyed or ``before_answer`` decisions,
  promotions, reads through the writer) fail at once with
  :class:`~gateway.decisions.dialect.StoreUnavailableError`, and so does every one
  queued during the outage: nothing is acknowledged that is not committed;
* write-behind operations (decisions already answered, shadow outputs, explanations)
  are kept, in order, and written when the database returns;
* the writer probes the database (reconnects and writes one row) with exponential
  backoff, 50 ms doubling to :data:`BACKOFF_MAX_S`, and on the first commit declares
  it back (``on_health(True, "")``).

On shutdown during an outage the writer keeps trying for :data:`CLOSE_GRACE_S`, then
drops what it kept (each dropped write's future fails with :class:`Dropped`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.decisions.dialect import Dialect, StoreUnavailableError, Tx
from gateway.decisions.operations import BULK_ROWS, insert_decision, insert_decisions, probe

__all__ = ["BACKOFF_MAX_S", "CLOSE_GRACE_S", "Dropped", "Op", "Writer"]

log = logging.getLogger("arbiter.decisions")

MAX_BATCH = 512
TRIES = 5
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
"""Longest wait between two probes of a database that cannot be written."""
CLOSE_GRACE_S = 5.0
"""How long a shutdown during an outage keeps trying before it drops the kept writes."""


class Dropped(StoreUnavailableError):
    """A write-behind operation dropped at shutdown: the database never came back."""


@dataclass(slots=True)
class Op:
    """One queued operation.

    Attributes:
        handler: ``handler(tx, *args)`` runs it on the writer's connection.
        args: its arguments.
        lock: router key to lock first, or None.
        future: settled with the handler's result or error (None: nobody waits).
        behind: write-behind (kept through an outage) rather than awaited.
    """

    handler: Callable[..., Any]
    args: tuple
    lock: str | None
    future: asyncio.Future | None
    behind: bool = False


_STOP = object()


class Writer:
    """The writer thread of one store (see the module docstring).

    Args:
        dialect: the backend.
        loop: the event loop whose futures the writer settles.
        flush_interval_s: longest wait of a write-behind operation for its batch.
        on_health: called on ``loop`` with (healthy, cause) when an outage starts or ends.
        on_batch: called (on the writer thread) with each committed batch's size.
    """

    def __init__(self, dialect: Dialect, loop: asyncio.AbstractEventLoop,
                 flush_interval_s: float, on_health: Callable[[bool, str], None],
                 on_batch: Callable[[int], None]) -> None:
        self.dialect = dialect
        self.loop = loop
        self.flush_interval_s = flush_interval_s
        self.on_health = on_health
        self.on_batch = on_batch
        self.backoff_s = BACKOFF_MIN_S
        """The current wait between probes (read by the store for Retry-After)."""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()
        self._kept: list[Op] = []
        self._down_since: float | None = None
        self._conn: Any = None
        self._thread: threading.Thread | None = None

    # -- the event loop's side ----------------------------------------------------------
    async def start(self) -> None:
        """Connect and start the thread.

        Raises:
            Exception: whatever the dialect's ``connect`` raised.
        """
        ready: asyncio.Future = self.loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"arbiter-{self.dialect.name}-writer")
        self._thread.start()
        await ready

    def put(self, op: Op) -> None:
        """Queue ``op`` (thread-safe, never blocks); one that is awaited ends the
        writer's wait for more write-behind operations at once."""
        self._queue.put(op)
        if not op.behind:
            self._urgent.set()

    async def stop(self) -> None:
        """Write what is queued (an outage: for up to :data:`CLOSE_GRACE_S`), then
        disconnect."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._urgent.set()
            await asyncio.to_thread(self._thread.join)

    # -- the thread -----------------------------------------------------------------------
    def _run(self, ready: asyncio.Future) -> None:
        try:
            self._conn = self.dialect.connect()
        except Exception as exc:
            self.loop.call_soon_threadsafe(_settle_one, ready, None, exc)
            return
        self.loop.call_soon_threadsafe(_settle_one, ready, None, None)
        stopping, close_by = False, None
        while True:
            if self._down_since is None:
                if self._kept:  # what an outage kept goes first, in order
                    batch = self._take_kept()
                elif stopping:
                    break
                else:
                    batch, stopping = self._next_batch()
                if batch:
                    self._execute(batch)
                continue
            if stopping and close_by is None:
                close_by = time.monotonic() + CLOSE_GRACE_S
            wait = self.backoff_s if close_by is None else \
                min(self.backoff_s, max(0.0, close_by - time.monotonic()))
            stopping = self._pause(wait) or stopping
            if stopping and close_by is None:
                close_by = time.monotonic() + CLOSE_GRACE_S
            if stopping and (not self._kept or time.monotonic() >= close_by):
                self._drop_kept()
                break
            self._reconnect()
            self._execute(self._take_kept() or [Op(probe, (), None, None)])
        _close(self._conn)

    def _take_kept(self) -> list[Op]:
        batch = self._kept[:MAX_BATCH]
        del self._kept[:MAX_BATCH]
        return batch

    def _next_batch(self) -> tuple[list[Op], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        if first.behind and self.flush_interval_s > 0 and self._queue.qsize() < MAX_BATCH:
            # Sleep through the flush interval instead of waking for every write queued
            # meanwhile (a thread switch and a GIL hand-off per decision): only an
            # operation someone awaits, or a stop, cuts the wait short.
            self._urgent.wait(self.flush_interval_s)
        self._urgent.clear()
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is _STOP:
                return batch, True
            batch.append(op)
        return batch, False

    def _pause(self, wait_s: float) -> bool:
        """Wait ``wait_s`` during an outage, failing each awaited operation that
        arrives at once and keeping the write-behind ones; returns whether a stop
        arrived."""
        stopping = False
        deadline = time.monotonic() + wait_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                op = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if op is _STOP:
                stopping = True
            elif op.behind:
                self._kept.append(op)
            else:
                self._settle([(op, None, self._unavailable())])
        return stopping

    def _execute(self, batch: list[Op]) -> None:
        keys = sorted({op.lock for op in batch if op.lock is not None})
        results: list[tuple] = []
        for attempt in range(TRIES):
            try:
                results = self._transaction(batch, keys)
                break
            except Exception as exc:
                _rollback(self._conn)
                unavailable = self.dialect.unavailable(exc)
                if unavailable and (self._down_since is not None or attempt >= 1):
                    self._outage(batch, exc)
                    return
                if attempt + 1 < TRIES and (unavailable or self.dialect.retryable(exc)):
                    log.warning("store batch of %d retried after: %s", len(batch), exc)
                    time.sleep(0.01 * 2**attempt)
                    if unavailable:
                        self._reconnect()
                    continue
                results = [(op, None, exc) for op in batch]
                break
        if self._down_since is not None:
            self._recovered()
        self.on_batch(len(batch))
        self._settle(results)

    def _transaction(self, batch: list[Op], keys: list[str]) -> list[tuple]:
        tx = Tx(self._conn.cursor(), self.dialect)
        tx.run(self.dialect.begin())
        for key in keys:
            self.dialect.lock_router(tx, key)
        plain = [op for op in batch if _plain_insert(op)]
        results = self._insert_plain(tx, plain) if plain else []
        results += [self._isolated(tx, op) for op in batch if not _plain_insert(op)]
        tx.run("COMMIT")
        return results

    def _insert_plain(self, tx: Tx, ops: list[Op]) -> list[tuple]:
        """Decisions without an idempotency key, in multi-row inserts; a statement
        that fails is undone and its rows inserted one by one."""
        results = []
        for start in range(0, len(ops), BULK_ROWS):
            chunk = ops[start:start + BULK_ROWS]
            _, failed = self._savepoint(tx, "bulk", insert_decisions,
                                        [op.args[0] for op in chunk])
            if failed is not None:
                results += [self._isolated(tx, op) for op in chunk]
            else:
                results += [(op, op.args[0][0], None) for op in chunk]
        return results

    def _isolated(self, tx: Tx, op: Op) -> tuple:
        return (op, *self._savepoint(tx, "op", op.handler, *op.args))

    def _savepoint(self, tx: Tx, name: str, handler: Callable[..., Any],
                   *args: Any) -> tuple[Any, Exception | None]:
        """``handler(tx, *args)`` inside savepoint ``name``: (its value, None), or, when
        it fails, (None, its error) with only its own work undone. An error that calls
        for retrying or abandoning the whole batch (the dialect's ``retryable`` or
        ``unavailable``) is raised instead."""
        tx.run(f"SAVEPOINT {name}")
        try:
            value = handler(tx, *args)
        except Exception as exc:
            if self.dialect.retryable(exc) or self.dialect.unavailable(exc):
                raise
            tx.run(f"ROLLBACK TO SAVEPOINT {name}")
            tx.run(f"RELEASE SAVEPOINT {name}")
            return None, exc
        tx.run(f"RELEASE SAVEPOINT {name}")
        return value, None

    # -- outages --------------------------------------------------------------------------
    def _outage(self, batch: list[Op], exc: Exception) -> None:
        """The database cannot be written: keep the write-behind operations of
        ``batch`` (ahead of what was kept before), fail the awaited ones."""
        cause = _first_line(exc)
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.backoff_s = BACKOFF_MIN_S
            self.loop.call_soon_threadsafe(self.on_health, False, cause)
        else:
            self.backoff_s = min(2 * self.backoff_s, BACKOFF_MAX_S)
        self._kept[:0] = [op for op in batch if op.behind]
        failed = [(op, None, self._unavailable(exc)) for op in batch if not op.behind]
        self._settle(failed)

    def _recovered(self) -> None:
        self._down_since = None
        self.backoff_s = BACKOFF_MIN_S
        self.loop.call_soon_threadsafe(self.on_health, True, "")

    def _drop_kept(self) -> None:
        if self._kept:
            error = Dropped("the decision store did not come back before shutdown")
            self._settle([(op, None, error) for op in self._kept])
            self._kept = []

    def _unavailable(self, cause: Exception | None = None) -> StoreUnavailableError:
        error = StoreUnavailableError(
            f"the decision store ({self.dialect.name}) cannot be written now; retry later")
        error.retry_after_s = max(1, round(self.backoff_s))
        error.__cause__ = cause
        return error

    def _reconnect(self) -> None:
        """A fresh connection in place of the current one (kept if connecting fails:
        the next transaction on it fails again and the outage goes on)."""
        try:
            fresh = self.dialect.connect()
        except Exception as exc:
            log.debug("store reconnect failed: %s", exc)
            return
        _close(self._conn)
        self._conn = fresh

    def _settle(self, results: list[tuple]) -> None:
        waited = [r for r in results if r[0].future is not None]
        if waited:
            self.loop.call_soon_threadsafe(_settle_all, waited)


def _plain_insert(op: Op) -> bool:
    """A decision insert without an idempotency key (``insert_decision(row, None, ...)``)."""
    return op.handler is insert_decision and op.args[1] is None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _settle_one(future: asyncio.Future, value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def _settle_all(results: list[tuple]) -> None:
    for op, value, exc in results:
        _settle_one(op.future, value, exc)


def _rollback(conn: Any) -> None:
    try:
        conn.cursor().execute("ROLLBACK")
    except Exception:  # no transaction open, or the connection is gone
        pass


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # a connection that is already gone
        pass
