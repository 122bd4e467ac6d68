"""Explanation jobs in the decision store: the explanations owed, durable until done.

A decision whose explanation must not be lost (an adverse decision, or one a client
asked to have explained) gets a row in ``explanation_jobs``, queued on the store's
writer just before the decision itself, so that a committed decision always has its
committed job (a crash between the two leaves at most a job without a decision, which
is never claimed: every read joins ``decisions``). Any gateway process may work a job:
it takes a **lease** (owner, expiry in Unix seconds) by an ``UPDATE`` of the jobs whose
lease has expired, renews it while the explanation runs, and when done writes the
document into ``explanations`` and deletes the job in one transaction. A process that
dies leaves leases that expire; another process (or the same one restarted) claims the
jobs then. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``, so replicas claiming at
once take disjoint jobs without waiting; SQLite serialises writers (``BEGIN
IMMEDIATE``), which makes the same ``UPDATE`` atomic.

Table ``explanation_jobs``: ``decision_id`` (key), ``deployment``, ``model`` (the routed
model), ``rows`` (JSON: the model input rows, float lists, kept only until the job is
done, whatever ``store.inputs`` keeps of the decision), ``kind`` (``adverse`` or
``requested``), ``created`` (the decision's time, Unix seconds), ``lease_owner``,
``lease_until`` (Unix seconds; 0: free), ``attempts`` (claims so far).

Each function takes a :class:`~gateway.decisions.dialect.Tx` first and runs on the
store's writer thread (writes) or a reader (reads).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.decisions.dialect import Tx

__all__ = [
    "FINAL", "JOBS_SCHEMA", "ExplanationJob", "JobState", "backlog", "claim_jobs", "claimable",
    "create_jobs_schema", "finish_job", "insert_job", "job_state", "purge_jobs", "release_jobs",
    "renew_leases", "request_job",
]

JOBS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS explanation_jobs (
        decision_id TEXT PRIMARY KEY, deployment TEXT NOT NULL, model TEXT NOT NULL,
        rows TEXT NOT NULL, kind TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        lease_owner TEXT, lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS explanation_jobs_claim "
    "ON explanation_jobs (deployment, lease_until, created)",
)

FINAL = frozenset({"done", "failed"})
"""Statuses of an explanation document that no job follows."""


@dataclass(slots=True)
class ExplanationJob:
    """One explanation owed.

    Attributes:
        decision_id: the decision to explain.
        deployment: its deployment.
        model: key of the model that made it (the one explained).
        rows: the model's input rows, float lists ``[rows][features]``.
        kind: ``adverse`` (explained by policy) or ``requested`` (on demand).
        created: when the decision was made, Unix seconds.
        attempts: claims so far, this one included.
    """

    decision_id: str
    deployment: str
    model: str
    rows: list[list[float]]
    kind: str
    created: float
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class JobState:
    """What the store holds about one decision's explanation.

    Attributes:
        document: the stored explanation document, or None.
        job: ``{"decided_at", "attempts", "kind", "leased"}`` while a job is owed (the
            decision's time in Unix seconds, claims so far, ``adverse`` or ``requested``,
            whether a process holds it now), or None.
    """

    document: dict[str, Any] | None
    job: dict[str, Any] | None


def create_jobs_schema(tx: Tx) -> None:
    """Create the table and its index when missing."""
    for statement in JOBS_SCHEMA:
        tx.run(statement)


def _row(job: ExplanationJob, owner: str | None, lease_until: float) -> tuple:
    return (job.decision_id, job.deployment, job.model, orjson.dumps(job.rows).decode(),
            job.kind, job.created, owner, lease_until, job.attempts)


_INSERT = (
    "INSERT INTO explanation_jobs (decision_id, deployment, model, rows, kind, created, "
    "lease_owner, lease_until, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (decision_id) DO NOTHING"
)


def insert_job(tx: Tx, job: ExplanationJob, owner: str | None, lease_until: float) -> bool:
    """Queue ``job``, leased to ``owner`` until ``lease_until`` (None, 0: free for any
    process); False when the decision already has a job."""
    return tx.run(_INSERT, _row(job, owner, lease_until)) > 0


def request_job(tx: Tx, job: ExplanationJob, owner: str | None, lease_until: float) -> str:
    """Queue ``job`` for a decision a client asked to have explained, unless its
    explanation is final or already owed.

    Returns:
        ``queued``, ``pending`` (a job exists) or ``final`` (done or failed).
    """
    row = tx.one("SELECT doc FROM explanations WHERE decision_id = ?", (job.decision_id,))
    if row is not None and orjson.loads(row[0]).get("status") in FINAL:
        return "final"
    return "queued" if insert_job(tx, job, owner, lease_until) else "pending"


def claim_jobs(tx: Tx, deployment: str, owner: str, now: float, lease_s: float,
               limit: int) -> list[ExplanationJob]:
    """Lease up to ``limit`` of ``deployment``'s free or expired jobs to ``owner`` for
    ``lease_s`` seconds, oldest decision first; returns them with their attempt count
    (this claim included)."""
    skip = " FOR UPDATE OF j SKIP LOCKED" if tx.dialect.name == "postgres" else ""
    rows = tx.all(
        "UPDATE explanation_jobs SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 "
        "WHERE decision_id IN (SELECT j.decision_id FROM explanation_jobs j "
        "JOIN decisions d ON d.id = j.decision_id WHERE j.deployment = ? AND j.lease_until < ? "
        f"ORDER BY j.created LIMIT {int(limit)}{skip}) "
        "RETURNING decision_id, deployment, model, rows, kind, created, attempts",
        (owner, now + lease_s, deployment, now),
    )
    jobs = [ExplanationJob(r[0], r[1], r[2], orjson.loads(r[3]), r[4], float(r[5]), int(r[6]))
            for r in rows]
    return sorted(jobs, key=lambda job: job.created)


def renew_leases(tx: Tx, owner: str, until: float) -> int:
    """Extend every lease ``owner`` holds to ``until``; returns how many."""
    return tx.run("UPDATE explanation_jobs SET lease_until = ? WHERE lease_owner = ? "
                  "AND lease_until > 0", (until, owner))


def finish_job(tx: Tx, decision_id: str, document: str) -> None:
    """Record the final explanation document (JSON text) and delete the job."""
    tx.run("INSERT INTO explanations (decision_id, doc) VALUES (?, ?) "
           "ON CONFLICT (decision_id) DO UPDATE SET doc = excluded.doc", (decision_id, document))
    tx.run("DELETE FROM explanation_jobs WHERE decision_id = ?", (decision_id,))


def release_jobs(tx: Tx, owner: str, decision_ids: list[str] | None, retry_at: float = 0.0,
                 refund: bool = False) -> int:
    """Give up ``owner``'s leases (of ``decision_ids``, or all), so that any process
    may claim the jobs from ``retry_at`` (Unix seconds; 0: at once). ``refund`` takes
    the claim back from the attempt count (the explanation was interrupted, not tried).
    Returns how many jobs were released."""
    refund_sql = ", attempts = attempts - 1" if refund else ""
    where, params = "lease_owner = ?", [owner]
    if decision_ids is not None:
        if not decision_ids:
            return 0
        where += f" AND decision_id IN ({', '.join('?' * len(decision_ids))})"
        params += decision_ids
    return tx.run(f"UPDATE explanation_jobs SET lease_owner = NULL, lease_until = ?{refund_sql} "
                  f"WHERE {where}", (retry_at, *params))


def job_state(tx: Tx, decision_id: str) -> JobState:
    """The stored explanation document and the job owed, of one decision."""
    row = tx.one(
        "SELECT e.doc, j.created, j.attempts, j.kind, j.lease_until FROM decisions d "
        "LEFT JOIN explanations e ON e.decision_id = d.id "
        "LEFT JOIN explanation_jobs j ON j.decision_id = d.id WHERE d.id = ?", (decision_id,),
    )
    if row is None:
        return JobState(None, None)
    document = orjson.loads(row[0]) if row[0] else None
    job = None if row[1] is None else {
        "decided_at": float(row[1]), "attempts": int(row[2]), "kind": row[3],
        "leased": float(row[4]) > time.time()}
    return JobState(document, job)


def backlog(tx: Tx) -> dict[str, tuple[int, float]]:
    """Deployment -> (jobs owed, time of the oldest one's decision in Unix seconds)."""
    rows = tx.all("SELECT j.deployment, COUNT(*), MIN(j.created) FROM explanation_jobs j "
                  "JOIN decisions d ON d.id = j.decision_id GROUP BY j.deployment")
    return {r[0]: (int(r[1]), float(r[2])) for r in rows}


def claimable(tx: Tx, deployment: str, now: float) -> int:
    """How many of ``deployment``'s jobs are free or past their lease (a read)."""
    row = tx.one("SELECT COUNT(*) FROM explanation_jobs j JOIN decisions d "
                 "ON d.id = j.decision_id WHERE j.deployment = ? AND j.lease_until < ?",
                 (deployment, now))
    return int(row[0]) if row else 0


def purge_jobs(tx: Tx, cutoff: float) -> int:
    """Delete the jobs of decisions made before ``cutoff`` (Unix seconds)."""
    return tx.run("DELETE FROM explanation_jobs WHERE created < ?", (cutoff,))
