"""The decision store's operations: the SQL of each intent, run on the writer thread
inside a batch transaction (or on a reader), and the schema they share.

Each function takes a :class:`~gateway.decisions.dialect.Tx` first. Tables:
``decisions`` (one row per decision: the routed model's outputs, inputs, parameters,
propensity, idempotency key with the SHA-256 of the request that took it),
``shadow_outputs`` (one row per shadow), ``feedback`` (the feedback in force with its
history of corrections), ``explanations``, ``arm_stats`` (per router and arm: n,
reward_sum) and ``router_values`` (champion, promotion log).

What a decision row keeps of the request's inputs follows ``store.inputs``: the
tensors (``store``), per input the SHA-256 of its canonical JSON (sorted keys, no
spaces) with its datatype and shape (``hash``), or nothing (``drop``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.decisions.dialect import Dialect, StoreError, Tx
from gateway.decisions.record import Decision
from gateway.decisions.state import Snapshot
from gateway.decisions.store import FeedbackRecorded
from gateway.idempotency import IdempotencyKeyReusedError
from routers.state import CHAMPION, PROMOTIONS, ArmStats, Learning

log = logging.getLogger("arbiter.decisions")

__all__ = [
    "BULK_ROWS", "MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "correct_feedback", "create_schema",
    "decision_row", "dumps", "find_holder", "input_docs", "insert_decision", "insert_decisions",
    "insert_feedback", "nothing", "probe", "promote_router", "purge_before", "put_value",
    "select_decisions", "state_of_all", "upsert_doc",
]

SCHEMA_VERSION = 2
"""Version of the tables below. A store whose version is newer is refused; an older
one is migrated at startup by :data:`MIGRATIONS`, in one transaction."""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS arbiter_schema (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS decisions (
        id TEXT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, deployment TEXT NOT NULL,
        router TEXT NOT NULL, routed TEXT NOT NULL, propensity DOUBLE PRECISION NOT NULL,
        idempotency_key TEXT, doc TEXT NOT NULL, request_hash TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS decisions_idempotency "
    "ON decisions (deployment, idempotency_key)",
    "CREATE INDEX IF NOT EXISTS decisions_deployment_time ON decisions (deployment, time)",
    """CREATE TABLE IF NOT EXISTS shadow_outputs (
        decision_id TEXT NOT NULL, model TEXT NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (decision_id, model))""",
    """CREATE TABLE IF NOT EXISTS feedback (
        decision_id TEXT PRIMARY KEY, deployment TEXT NOT NULL, time DOUBLE PRECISION NOT NULL,
        doc TEXT NOT NULL, rewards TEXT NOT NULL, history TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS explanations (decision_id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS arm_stats (
        router TEXT NOT NULL, arm TEXT NOT NULL, n BIGINT NOT NULL,
        reward_sum DOUBLE PRECISION NOT NULL, PRIMARY KEY (router, arm))""",
    """CREATE TABLE IF NOT EXISTS router_values (
        router TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (router, name))""",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE decisions ADD COLUMN request_hash TEXT",),
}
"""Version -> the statements that bring a store of that version to the next. Version 2
keeps with each idempotency key the SHA-256 of the request that took it (decisions of
version 1 have none: a repeated key replays them whatever the request)."""


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def nothing(tx: Tx) -> None:
    return None


def probe(tx: Tx) -> None:
    """One write that changes nothing: whether the database can be written."""
    tx.run("UPDATE arbiter_schema SET version = version")


def create_schema(tx: Tx, dialect: Dialect) -> None:
    dialect.lock_schema(tx)
    for statement in SCHEMA:
        tx.run(statement)
    row = tx.one("SELECT version FROM arbiter_schema")
    if row is None:
        tx.run("INSERT INTO arbiter_schema (version) VALUES (?)", (SCHEMA_VERSION,))
    elif row[0] > SCHEMA_VERSION:
        raise StoreError(
            f"the store's schema is version {row[0]}, newer than this gateway's "
            f"({SCHEMA_VERSION}): upgrade Arbiter"
        )
    elif row[0] < SCHEMA_VERSION:
        _migrate(tx, row[0])


def _migrate(tx: Tx, version: int) -> None:
    """Bring a store of ``version`` to :data:`SCHEMA_VERSION` (inside the caller's
    transaction, under the schema lock).

    Raises:
        StoreError: a version no migration starts from.
    """
    start = version
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise StoreError(f"the store's schema is version {version}, which this gateway "
                             f"cannot migrate to {SCHEMA_VERSION}")
        for statement in MIGRATIONS[version]:
            tx.run(statement)
        version += 1
    tx.run("UPDATE arbiter_schema SET version = ?", (SCHEMA_VERSION,))
    log.warning("decision store schema migrated from version %d to %d", start, SCHEMA_VERSION)


def input_docs(inputs: dict[str, Any], mode: str) -> dict[str, Any]:
    """What a record keeps of ``inputs`` (name -> tensor document) under ``mode``
    (``store``, ``hash`` or ``drop``)."""
    if mode == "store":
        return inputs
    if mode == "drop":
        return {}
    return {name: {"sha256": hashlib.sha256(_canonical(doc)).hexdigest(),
                   "datatype": doc.get("datatype"), "shape": doc.get("shape")}
            for name, doc in inputs.items()}


def _canonical(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)


def decision_row(decision: Decision, key: str | None, inputs: str = "store",
                 request_hash: str | None = None) -> tuple:
    """The ``decisions`` row of ``decision``; ``request_hash`` (the digest of the request,
    ``gateway.idempotency.request_digest``) is kept with ``key`` only."""
    doc = {
        "request_id": decision.request_id, "shadows": decision.shadows,
        "inputs": input_docs(decision.inputs, inputs),
        "outputs": decision.outputs.get(decision.routed, {}),
        "latency_ms": decision.latency_ms.get(decision.routed), "parameters": decision.parameters,
        "explanation": decision.explanation,
    }
    if decision.status != "ok":
        doc["status"] = decision.status
        doc["error"] = decision.errors.get(decision.routed)
    if decision.fallback is not None:
        doc["fallback"] = decision.fallback
    return (decision.id, decision.time, decision.deployment, decision.router, decision.routed,
            decision.propensity, key, dumps(doc), request_hash if key is not None else None)


def insert_decision(tx: Tx, row: tuple, key: str | None, window_start: float) -> str:
    """Insert a decision; with an idempotency key, return the id of the decision that
    holds the key within the window (an older holder gives the key up).

    Raises:
        IdempotencyKeyReusedError: the holder was made for another request (its
            stored digest differs from the row's).
    """
    deployment = row[2]
    held_by = "SELECT id, time, request_hash FROM decisions WHERE deployment = ? " \
        "AND idempotency_key = ?"
    if key is not None:
        held = tx.one(held_by, (deployment, key))
        if held is not None and held[1] >= window_start:
            return _same_request(key, held, row[8])
        if held is not None:
            tx.run("UPDATE decisions SET idempotency_key = NULL WHERE id = ?", (held[0],))
    inserted = tx.run(f"{_INSERT} ({_ROW}) ON CONFLICT DO NOTHING", row)
    if inserted == 0 and key is not None:  # another replica took the key meanwhile
        held = tx.one(held_by, (deployment, key))
        if held is not None:
            return _same_request(key, held, row[8])
    return row[0]


def find_holder(tx: Tx, deployment: str, key: str, since: float,
                request_hash: str | None) -> Decision | None:
    """The decision of ``deployment`` holding ``key``, made at or after ``since``.

    Raises:
        IdempotencyKeyReusedError: it was made for another request than the one of
            ``request_hash`` (when both digests are known).
    """
    held = tx.one("SELECT id, time, request_hash FROM decisions WHERE deployment = ? "
                  "AND idempotency_key = ? AND time >= ?", (deployment, key, since))
    if held is None:
        return None
    found = select_decisions(tx, "d.id = ?", (_same_request(key, held, request_hash),), None)
    return found[0] if found else None


def _same_request(key: str, held: tuple, request_hash: str | None) -> str:
    """The holder's id, when it was made for the same request (a holder or a request
    without a digest, as a version-1 decision, counts as the same)."""
    stored = held[2]
    if stored is not None and request_hash is not None and stored != request_hash:
        raise IdempotencyKeyReusedError(key)
    return held[0]


_INSERT = ("INSERT INTO decisions (id, time, deployment, router, routed, propensity, "
           "idempotency_key, doc, request_hash) VALUES")
_ROW = "?, ?, ?, ?, ?, ?, ?, ?, ?"

BULK_ROWS = 100
"""Most rows of one multi-row insert (900 parameters: under SQLite's oldest limit)."""


def insert_decisions(tx: Tx, rows: list[tuple]) -> None:
    """Insert decisions without an idempotency key (ids are fresh UUID4s, so nothing
    conflicts; a row already there is left as it is) in one statement of ``len(rows)``
    rows, at most :data:`BULK_ROWS`."""
    values = ", ".join([f"({_ROW})"] * len(rows))
    tx.run(f"{_INSERT} {values} ON CONFLICT DO NOTHING", [v for row in rows for v in row])


def purge_before(tx: Tx, cutoff: float) -> int:
    """Delete the decisions made before ``cutoff`` (Unix seconds) with their feedback,
    shadow outputs and explanations; returns how many decisions went."""
    old = "SELECT id FROM decisions WHERE time < ?"
    for table in ("feedback", "shadow_outputs", "explanations"):
        tx.run(f"DELETE FROM {table} WHERE decision_id IN ({old})", (cutoff,))
    return tx.run("DELETE FROM decisions WHERE time < ?", (cutoff,))


def upsert_doc(tx: Tx, table: str, key_columns: tuple[str, ...], row: tuple) -> None:
    columns = (*key_columns, "doc")
    tx.run(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET doc = excluded.doc",
        row,
    )


def insert_feedback(tx: Tx, row: tuple, rewards: dict, learning: Learning | None):
    inserted = tx.run(
        "INSERT INTO feedback (decision_id, deployment, time, doc, rewards, history) "
        "VALUES (?, ?, ?, ?, ?, '[]') ON CONFLICT DO NOTHING", row,
    )
    if inserted == 0:
        stored = tx.one("SELECT rewards FROM feedback WHERE decision_id = ?", (row[0],))
        rewards = orjson.loads(stored[0]) if stored else {}
        return FeedbackRecorded(False, rewards), _snapshot(tx, learning)
    deltas = {arm: (1, r) for arm, r in (learning.rewards if learning else {}).items()}
    return FeedbackRecorded(True, rewards, _learn(tx, learning, deltas)), _snapshot(tx, learning)


def correct_feedback(tx: Tx, row: tuple, rewards: dict, learning: Learning | None):
    old = tx.one("SELECT doc, rewards, history FROM feedback WHERE decision_id = ?", (row[0],))
    if old is None:
        return insert_feedback(tx, row, rewards, learning)
    old_doc, old_rewards = orjson.loads(old[0]), orjson.loads(old[1])
    history = [*orjson.loads(old[2]), {**old_doc, "rewards": old_rewards}]
    tx.run("UPDATE feedback SET time = ?, doc = ?, rewards = ?, history = ? WHERE decision_id = ?",
           (row[2], row[3], row[4], dumps(history), row[0]))
    before = {arm: old_rewards[arm] for arm in old_doc.get("learned", ()) if arm in old_rewards}
    after = dict(learning.rewards) if learning else {}
    deltas = {
        arm: (int(arm in after) - int(arm in before), after.get(arm, 0.0) - before.get(arm, 0.0))
        for arm in {*before, *after}
    }
    return FeedbackRecorded(True, rewards, _learn(tx, learning, deltas)), _snapshot(tx, learning)


def _learn(tx: Tx, learning: Learning | None, deltas: dict[str, tuple[int, float]]):
    """Apply count deltas, then the promotion rule on the counts that result."""
    if learning is None:
        return None
    for arm, (dn, ds) in sorted(deltas.items()):
        tx.run(
            "INSERT INTO arm_stats (router, arm, n, reward_sum) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (router, arm) DO UPDATE SET n = arm_stats.n + excluded.n, "
            "reward_sum = arm_stats.reward_sum + excluded.reward_sum",
            (learning.key, arm, dn, float(ds)),
        )
    if learning.promote is None:
        return None
    arms, values = _state_of(tx, learning.key)
    stored = values.get(CHAMPION)
    record = learning.promote(arms, stored)
    if record is not None and _compare_and_set(tx, learning.key, stored, record):
        return record
    return None


def promote_router(tx: Tx, key: str, expected: Any, record: dict) -> tuple[bool, Snapshot]:
    return _compare_and_set(tx, key, expected, record), _state_of(tx, key)


def _compare_and_set(tx: Tx, key: str, expected: Any, record: Mapping[str, Any]) -> bool:
    row = tx.one("SELECT value FROM router_values WHERE router = ? AND name = ?", (key, CHAMPION))
    stored = orjson.loads(row[0]) if row else None
    if stored != expected:
        return False
    row = tx.one("SELECT value FROM router_values WHERE router = ? AND name = ?",
                 (key, PROMOTIONS))
    log_ = [*(orjson.loads(row[0]) if row else []), dict(record)]
    for name, value in ((CHAMPION, record["champion"]), (PROMOTIONS, log_)):
        tx.run(
            "INSERT INTO router_values (router, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (router, name) DO UPDATE SET value = excluded.value",
            (key, name, dumps(value)),
        )
    return True


def put_value(tx: Tx, key: str, name: str, value: Any) -> Snapshot:
    """Set router ``key``'s value ``name`` (not the champion nor the promotion log, which
    only :func:`promote_router` writes); returns the router's state."""
    if name in (CHAMPION, PROMOTIONS):
        raise StoreError(f"{name!r} is written by promotions only")
    tx.run(
        "INSERT INTO router_values (router, name, value) VALUES (?, ?, ?) "
        "ON CONFLICT (router, name) DO UPDATE SET value = excluded.value",
        (key, name, dumps(value)),
    )
    return _state_of(tx, key)


def _snapshot(tx: Tx, learning: Learning | None) -> Snapshot | None:
    return None if learning is None else _state_of(tx, learning.key)


def _state_of(tx: Tx, key: str) -> Snapshot:
    return state_of_all(tx, [key]).get(key, ({}, {}))


def state_of_all(tx: Tx, keys: list[str]) -> dict[str, Snapshot]:
    state: dict[str, Snapshot] = {key: ({}, {}) for key in keys}
    if not keys:
        return state
    marks = ", ".join("?" * len(keys))
    for key, arm, n, total in tx.all(
        f"SELECT router, arm, n, reward_sum FROM arm_stats WHERE router IN ({marks})", keys
    ):
        state[key][0][arm] = ArmStats(int(n), float(total))
    for key, name, value in tx.all(
        f"SELECT router, name, value FROM router_values WHERE router IN ({marks})", keys
    ):
        state[key][1][name] = orjson.loads(value)
    return state


def select_decisions(tx: Tx, where: str, params: tuple, limit: int | None) -> list[Decision]:
    """Decisions matching ``where`` (on ``decisions d``), oldest first, assembled with
    their shadow outputs, feedback and explanation."""
    rows = tx.all(
        "SELECT d.id, d.time, d.deployment, d.router, d.routed, d.propensity, d.doc, "
        "f.doc, f.rewards, f.history, e.doc FROM decisions d "
        "LEFT JOIN feedback f ON f.decision_id = d.id "
        "LEFT JOIN explanations e ON e.decision_id = d.id "
        f"WHERE {where} ORDER BY d.time, d.id" + (f" LIMIT {int(limit)}" if limit else ""),
        params,
    )
    decisions = {row[0]: _assemble(row) for row in rows}
    if decisions:
        ids = list(decisions)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for decision_id, model, doc in tx.all(
                "SELECT decision_id, model, doc FROM shadow_outputs WHERE decision_id IN "
                f"({', '.join('?' * len(chunk))})", chunk,
            ):
                _add_shadow(decisions[decision_id], model, orjson.loads(doc))
    return list(decisions.values())


def _assemble(row: tuple) -> Decision:
    decision_id, when, deployment, router, routed, propensity, doc = row[:7]
    fdoc, frewards, fhist, edoc = row[7:]
    body = orjson.loads(doc)
    decision = Decision(
        id=decision_id, time=float(when), deployment=deployment, router=router, routed=routed,
        propensity=float(propensity), request_id=body.get("request_id", ""),
        shadows=body.get("shadows", []), inputs=body.get("inputs", {}),
        outputs={routed: body.get("outputs", {})}, parameters=body.get("parameters", {}),
        explanation=orjson.loads(edoc) if edoc else body.get("explanation"),
        status=body.get("status", "ok"), fallback=body.get("fallback"),
    )
    if body.get("error") is not None:
        decision.errors[routed] = body["error"]
    if body.get("latency_ms") is not None:
        decision.latency_ms[routed] = body["latency_ms"]
    if fdoc is not None:
        decision.feedback = orjson.loads(fdoc)
        decision.rewards = orjson.loads(frewards)
        decision.feedback_history = orjson.loads(fhist)
    return decision


def _add_shadow(decision: Decision, model: str, doc: dict[str, Any]) -> None:
    if "error" in doc:
        decision.errors[model] = doc["error"]
    else:
        decision.outputs[model] = doc.get("outputs") or {}
        decision.latency_ms[model] = doc.get("latency_ms") or 0.0
