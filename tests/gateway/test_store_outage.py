"""The decision store while its database cannot be written, in process: a real
PostgreSQL server shut down and started again, and a real SQLite file on a full disk
(a small tmpfs). Decisions already queued are written when the database returns;
everything a caller awaits fails at once with StoreUnavailableError (503); the store
reports its health and recovers by itself."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.config import StoreSpec
from gateway.decisions import SQLDecisionStore, StoreMetrics, StoreUnavailableError, build_store
from gateway.decisions import writer as writer_module
from routers.state import Learning
from tests.gateway.outages import own_postgres  # noqa: F401 - fixture
from tests.gateway.stores import decision, eventually, feedback_doc
from tests.postgres import PostgresServer


class Recorder(StoreMetrics):
    """StoreMetrics that remember what they were told."""

    def __init__(self) -> None:
        self.health_log: list[bool] = []
        self.errors = 0
        super().__init__(write_errors=self._errors, health=self.health_log.append)

    def _errors(self, n: int) -> None:
        self.errors += n


async def _open(spec: StoreSpec, metrics: StoreMetrics) -> SQLDecisionStore:
    store = build_store(spec, metrics)
    await store.open(["dep"])
    return store


async def _answer_until_refused(store: SQLDecisionStore, limit: int = 2000) -> list[str]:
    """Create write-behind decisions, 1 ms apart, until the store refuses one; the ids
    it took (answered, as the gateway would answer them)."""
    answered = []
    for _ in range(limit):
        made = decision()
        try:
            await store.create(made)
        except StoreUnavailableError as exc:
            assert exc.status == 503 and exc.grpc_code == "UNAVAILABLE"
            assert exc.retry_after_s >= 1
            return answered
        answered.append(made.id)
        await asyncio.sleep(0.001)
    raise AssertionError(f"the store took {limit} decisions during an outage")


async def _fails_fast(awaitable) -> float:
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await awaitable
    return time.monotonic() - start


def _ids_in(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM decisions")}


async def test_postgres_outage_keeps_what_was_answered_and_refuses_the_rest(
        own_postgres: PostgresServer) -> None:  # noqa: F811
    dsn = own_postgres.create_database("outage")
    metrics = Recorder()
    store = await _open(StoreSpec(kind="postgres", dsn=dsn, flush_interval_ms=5), metrics)
    try:
        before = decision()
        await store.create(before, wait=True)
        own_postgres.pause()
        answered = await _answer_until_refused(store)
        assert not store.healthy and metrics.health_log == [False]
        assert store.pending_writes >= len(answered)

        # everything a caller awaits fails at once, without touching the database
        doc = feedback_doc(1.0, ["lr"])
        for call in (store.record_feedback(before, doc, {"lr": 1.0},
                                           Learning("dep", {"lr": 1.0})),
                     store.create(decision(), idempotency_key="k-1", window_s=60),
                     store.create(decision(), wait=True),
                     store.find("dep", "k-1", 0.0),
                     store.get(before.id)):
            assert await _fails_fast(call) < 0.2
        await asyncio.sleep(0.5)  # the writer keeps probing a server that is down
        assert not store.healthy

        own_postgres.resume()
        assert await eventually(lambda: store.healthy, timeout_s=10)
        assert metrics.health_log == [False, True]
        assert await eventually(lambda: store.pending_writes == 0, timeout_s=5)
        assert {before.id, *answered} <= _ids_in(dsn)
        assert metrics.errors == 0
        recorded = await store.record_feedback(before, doc, {"lr": 1.0},
                                               Learning("dep", {"lr": 1.0}))
        assert recorded.new
    finally:
        await store.close()


async def test_a_waiting_decision_is_released_with_503_when_the_outage_starts(
        own_postgres: PostgresServer) -> None:  # noqa: F811
    dsn = own_postgres.create_database("full_queue")
    spec = StoreSpec(kind="postgres", dsn=dsn, flush_interval_ms=200, write_queue=2)
    store = await _open(spec, Recorder())
    try:
        await store.create(decision())
        await store.create(decision())  # the queue is full now
        own_postgres.pause()
        third = decision()
        waited = await _fails_fast(store.create(third))  # waited for room, then 503
        assert waited < 2.0
        own_postgres.resume()
        assert await eventually(lambda: store.pending_writes == 0, timeout_s=10)
        assert third.id in _ids_in(dsn)  # it stayed queued: written once the server was back
    finally:
        await store.close()


async def test_shutdown_during_an_outage_drops_and_counts_what_it_kept(
        own_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(writer_module, "CLOSE_GRACE_S", 0.5)
    dsn = own_postgres.create_database("dropped")
    metrics = Recorder()
    store = await _open(StoreSpec(kind="postgres", dsn=dsn, flush_interval_ms=5), metrics)
    own_postgres.pause()
    try:
        answered = await _answer_until_refused(store)
        start = time.monotonic()
        await store.close()
        assert time.monotonic() - start < 3.0
        assert metrics.errors == len(answered) > 0
    finally:
        own_postgres.resume()
    assert _ids_in(dsn) == set()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of this test's own (root only)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_sqlite_disk_full_is_an_outage_that_ends_when_space_returns(
        small_disk: Path) -> None:
    metrics = Recorder()
    path = small_disk / "arbiter.sqlite"
    store = await _open(StoreSpec(kind="sqlite", path=path, flush_interval_ms=5), metrics)
    filler = small_disk / "filler"
    try:
        await store.create(decision(), wait=True)
        free = shutil.disk_usage(small_disk).free
        filler.write_bytes(b"\0" * free)  # every block taken
        big = {"input": {"datatype": "FP32", "shape": [1, 2000], "data": [0.5] * 2000}}
        answered = []
        for _ in range(400):
            made = decision(inputs=big)
            try:
                await store.create(made)
            except StoreUnavailableError:
                break
            answered.append(made.id)
            await asyncio.sleep(0.002)
        assert not store.healthy and metrics.health_log == [False]
        assert await _fails_fast(store.create(decision(), wait=True)) < 0.2

        filler.unlink()
        assert await eventually(lambda: store.healthy, timeout_s=10)
        assert await eventually(lambda: store.pending_writes == 0, timeout_s=5)
        stored = {d.id for d in await store.list("dep")}
        assert set(answered) <= stored and metrics.errors == 0
        assert metrics.health_log == [False, True]
    finally:
        await store.close()


async def test_an_idle_store_finds_the_outage_through_its_first_read(
        own_postgres: PostgresServer) -> None:  # noqa: F811
    dsn = own_postgres.create_database("idle")
    metrics = Recorder()
    store = await _open(StoreSpec(kind="postgres", dsn=dsn), metrics)
    try:
        own_postgres.pause()  # nothing written since: the writer has not seen it yet
        assert store.healthy
        assert await _fails_fast(store.find("dep", "k-1", 0.0, "ab" * 32)) < 1.0
        assert await eventually(lambda: not store.healthy, timeout_s=2)  # the read's probe
        assert metrics.health_log == [False]
        own_postgres.resume()
        assert await eventually(lambda: store.healthy, timeout_s=10)
        assert await store.find("dep", "k-1", 0.0, "ab" * 32) is None
    finally:
        await store.close()
