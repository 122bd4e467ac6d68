"""A store of schema version 1 (decisions without the request digest of their
Idempotency-Key) is migrated to the current version at startup, on a real SQLite file
and a real PostgreSQL database: its decisions read back, its keys still replay, and the
keys taken from then on are bound to their request."""

from __future__ import annotations

import sqlite3
import time

import psycopg
import pytest

from gateway.decisions import build_store
from gateway.decisions.operations import SCHEMA_VERSION, dumps
from gateway.idempotency import IdempotencyKeyReusedError
from tests.gateway.stores import SHARED_KINDS, decision, store_spec

VERSION_1 = (
    "CREATE TABLE arbiter_schema (version INTEGER NOT NULL)",
    """CREATE TABLE decisions (
        id TEXT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, deployment TEXT NOT NULL,
        router TEXT NOT NULL, routed TEXT NOT NULL, propensity DOUBLE PRECISION NOT NULL,
        idempotency_key TEXT, doc TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX decisions_idempotency ON decisions (deployment, idempotency_key)",
    "INSERT INTO arbiter_schema (version) VALUES (1)",
)
"""The tables of version 1 that changed since (the others are created as they were)."""

OLD_ID = "0" * 31 + "1"


def _run(kind: str, spec, statements, params=()) -> list[tuple]:
    rows: list[tuple] = []
    if kind == "sqlite":
        conn = sqlite3.connect(spec.path)
        with conn:
            for statement in statements:
                rows = conn.execute(statement, params).fetchall()
        conn.close()
        return rows
    with psycopg.connect(spec.dsn, autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement.replace("?", "%s"), params)
            rows = cursor.fetchall() if cursor.description else []
    return rows


def _version_1_store(kind: str, spec, at: float) -> None:
    _run(kind, spec, VERSION_1)
    doc = dumps({"request_id": "old", "shadows": [], "inputs": {},
                 "outputs": {"label": {"datatype": "INT64", "shape": [1], "data": [1]}},
                 "latency_ms": 2.0, "parameters": {}, "explanation": None})
    _run(kind, spec, ["INSERT INTO decisions VALUES (?, ?, 'dep', 'weighted', 'lr', 1.0, "
                      "'old-key', ?)"], (OLD_ID, at, doc))


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_a_version_1_store_is_migrated(kind, request, tmp_path) -> None:
    spec = store_spec(kind, request, tmp_path)
    now = time.time()
    _version_1_store(kind, spec, now - 10)
    store = build_store(spec)
    await store.open(["dep"])
    try:
        assert _run(kind, spec, ["SELECT version FROM arbiter_schema"]) == [(SCHEMA_VERSION,)]
        old = await store.get(OLD_ID)
        assert old.request_id == "old" and old.outputs["lr"]["label"]["data"] == [1]
        # a version-1 key has no digest: it replays for any request, as it did
        held = await store.find("dep", "old-key", now - 60, "ab" * 32)
        assert held is not None and held.id == OLD_ID

        first = decision()
        assert await store.create(first, idempotency_key="new-key", window_s=60,
                                  request_hash="cd" * 32) is first
        with pytest.raises(IdempotencyKeyReusedError) as refused:
            await store.create(decision(), idempotency_key="new-key", window_s=60,
                               request_hash="ef" * 32)
        assert refused.value.status == 422 and refused.value.grpc_code == "ALREADY_EXISTS"
        with pytest.raises(IdempotencyKeyReusedError):
            await store.find("dep", "new-key", now - 60, "ef" * 32)
        again = await store.create(decision(), idempotency_key="new-key", window_s=60,
                                   request_hash="cd" * 32)
        assert again.id == first.id
    finally:
        await store.close()
    reopened = build_store(spec)  # migrated once: a restart finds the current version
    await reopened.open(["dep"])
    await reopened.close()
    assert _run(kind, spec, ["SELECT version FROM arbiter_schema"]) == [(SCHEMA_VERSION,)]
