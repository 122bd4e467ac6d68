"""The decision store: decisions, feedback, explanations and router state in one place
(see ``gateway.decisions.store``).

Build one from the config's ``store:`` block with :func:`open_store`.
"""

from __future__ import annotations

from gateway.config import StoreSpec
from gateway.decisions.dialect import StoreError, StoreUnavailableError
from gateway.decisions.record import MAX_RECORDED_ELEMENTS, Decision, tensor_doc
from gateway.decisions.sql import SQLDecisionStore
from gateway.decisions.store import DecisionStore, FeedbackRecorded, StoreMetrics

__all__ = [
    "Decision",
    "DecisionStore",
    "FeedbackRecorded",
    "MAX_RECORDED_ELEMENTS",
    "SQLDecisionStore",
    "StoreError",
    "StoreUnavailableError",
    "StoreMetrics",
    "build_store",
    "tensor_doc",
]


def build_store(spec: StoreSpec, metrics: StoreMetrics | None = None) -> SQLDecisionStore:
    """The store ``spec`` describes (not yet open: ``await store.open(router_keys)``).

    Raises:
        StoreError: kind postgres without a DSN.
    """
    if spec.kind == "postgres":
        from gateway.decisions.postgres import PostgresDialect

        dsn = spec.resolved_dsn
        if not dsn:
            raise StoreError("store kind postgres needs a dsn or ARBITER_STORE_DSN")
        return SQLDecisionStore(spec, PostgresDialect(dsn, spec.pool_size), metrics)
    from gateway.decisions.sqlite import MemoryDialect, SQLiteDialect

    dialect = MemoryDialect() if spec.kind == "memory" else SQLiteDialect(spec.path)
    return SQLDecisionStore(spec, dialect, metrics)
