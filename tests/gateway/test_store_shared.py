"""Several store objects and OS processes on one SQLite file or one PostgreSQL
database: what one commits the others see, concurrent feedback loses no update, and
a schema newer than this gateway's is refused."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from gateway.decisions import StoreError, build_store
from gateway.decisions.operations import SCHEMA_VERSION
from routers.state import CHAMPION, ArmStats, Learning
from tests.gateway.stores import SHARED_KINDS, decision, eventually, feedback_doc, store_spec

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, os, sys
from gateway.config import StoreSpec
from gateway.decisions import build_store
from routers.state import Learning
from tests.gateway.stores import decision, feedback_doc

async def main(spec_json: str, count: int) -> None:
    store = build_store(StoreSpec.model_validate_json(spec_json))
    await store.open(["dep"])
    print("ready", flush=True)
    sys.stdin.readline()  # go: every worker is open

    async def one(i: int) -> None:
        made = decision(request_id=str(os.getpid()))
        await store.create(made)
        reward = (i % 4) * 0.25
        result = await store.record_feedback(made, feedback_doc(reward, ["lr"]), {"lr": reward},
                                             Learning("dep", {"lr": reward}))
        assert result.new, result

    try:
        for start in range(0, count, 5):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 5, count))))
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""
"""One worker process: opens the store, waits for "go" on stdin, then records
``count`` feedbacks (rewards 0, 0.25, 0.5, 0.75 in turn) on decisions of its own
(request id: its pid) for arm ``lr``, five at a time."""


@pytest.fixture
async def stores():
    """Opens stores (router key ``dep``) and closes them all after the test."""
    opened = []

    async def open_(spec):
        store = build_store(spec)
        await store.open(["dep"])
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_two_stores_see_each_others_commits(kind, request, tmp_path, stores) -> None:
    spec = store_spec(kind, request, tmp_path, refresh_interval_ms=100)
    one, two = await stores(spec), await stores(spec)
    first, second = decision(), decision()
    await one.create(first, wait=True)
    await one.create(second)
    assert (await two.get(first.id)).id == first.id
    assert await eventually(lambda: one.pending_writes == 0)  # committed within flush_interval
    assert (await two.get(second.id)).id == second.id

    await one.record_feedback(first, feedback_doc(1.0, ["lr"]), {"lr": 1.0},
                              Learning("dep", {"lr": 1.0}))
    assert one.state.arm_stats("dep") == {"lr": ArmStats(1, 1.0)}
    await two.refresh()
    assert two.state.arm_stats("dep") == {"lr": ArmStats(1, 1.0)}

    await one.record_feedback(second, feedback_doc(0.5, ["lr"]), {"lr": 0.5},
                              Learning("dep", {"lr": 0.5}))
    assert await one.promote("dep", None, {"champion": "gbm", "previous": "lr"})
    seen = await eventually(  # by the background refresh alone
        lambda: two.state.arm_stats("dep") == {"lr": ArmStats(2, 1.5)}
        and two.state.get_value("dep", CHAMPION) == "gbm")
    assert seen, (two.state.arm_stats("dep"), two.state.get_value("dep", CHAMPION))
    assert not (await two.record_feedback(first, feedback_doc(0.0, ["lr"]), {"lr": 0.0},
                                          Learning("dep", {"lr": 0.0}))).new


def _run_workers(spec, processes: int, count: int) -> None:
    """Run ``processes`` :data:`WORKER` processes at once, each recording ``count``
    feedbacks; fails with a worker's stderr when one fails."""
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, spec.model_dump_json(), str(count)],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            _, err = worker.communicate(timeout=90)
            assert worker.returncode == 0, err
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_three_processes_lose_no_update(kind, request, tmp_path, stores) -> None:
    spec = store_spec(kind, request, tmp_path)
    check = await stores(spec)  # creates the schema once, before the workers race
    await asyncio.to_thread(_run_workers, spec, 3, 200)
    await check.refresh()
    assert check.state.arm_stats("dep") == {"lr": ArmStats(600, 225.0)}
    recorded = await check.list("dep")
    assert len(recorded) == 600 and len({d.id for d in recorded}) == 600
    assert sum(d.rewards["lr"] for d in recorded) == 225.0
    spans = {}  # pid -> (first, last) decision time: the workers ran at once
    for d in recorded:
        first, last = spans.get(d.request_id, (d.time, d.time))
        spans[d.request_id] = (min(first, d.time), max(last, d.time))
    assert len(spans) == 3
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), spans


def _write_schema_version(kind: str, spec, version: int) -> None:
    create = "CREATE TABLE arbiter_schema (version INTEGER NOT NULL)"
    if kind == "sqlite":
        conn = sqlite3.connect(spec.path)
        with conn:
            conn.execute(create)
            conn.execute("INSERT INTO arbiter_schema (version) VALUES (?)", (version,))
        conn.close()
    else:
        with psycopg.connect(spec.dsn, autocommit=True) as conn:
            conn.execute(create)
            conn.execute("INSERT INTO arbiter_schema (version) VALUES (%s)", (version,))


def _schema_version(kind: str, spec) -> list[tuple]:
    if kind == "sqlite":
        conn = sqlite3.connect(spec.path)
        try:
            return conn.execute("SELECT version FROM arbiter_schema").fetchall()
        finally:
            conn.close()
    with psycopg.connect(spec.dsn) as conn:
        return conn.execute("SELECT version FROM arbiter_schema").fetchall()


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_a_newer_schema_is_refused(kind, request, tmp_path) -> None:
    spec = store_spec(kind, request, tmp_path)
    newer = SCHEMA_VERSION + 1
    _write_schema_version(kind, spec, newer)
    store = build_store(spec)
    try:
        with pytest.raises(StoreError) as refused:
            await store.open(["dep"])
    finally:
        await store.close()
    message = str(refused.value)
    assert f"version {newer}" in message and f"({SCHEMA_VERSION})" in message
    assert _schema_version(kind, spec) == [(newer,)]


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_the_current_schema_is_accepted_and_recorded_once(kind, request, tmp_path,
                                                                stores) -> None:
    spec = store_spec(kind, request, tmp_path)
    await stores(spec)
    await stores(spec)
    assert _schema_version(kind, spec) == [(SCHEMA_VERSION,)]
