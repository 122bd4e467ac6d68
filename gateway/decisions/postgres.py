"""PostgreSQL backend of the decision store (``kind: postgres``): any number of
gateway processes and replicas share one database.

Driver: psycopg 3 (synchronous connections, used from the store's writer and reader
threads, so no call blocks the event loop); readers borrow from a
``psycopg_pool.ConnectionPool`` of ``pool_size`` connections. Each write batch locks
the routers it changes with transaction-level advisory locks
(``pg_advisory_xact_lock(hashtext(router))``, taken in sorted order), so feedback of
one deployment commits in one order across replicas and a promotion's compare-and-set
cannot race. Schema creation at startup is serialised the same way. Deadlocks,
serialisation failures and lost connections are retried by the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

from gateway.decisions.dialect import Dialect, Tx

__all__ = ["PostgresDialect"]

_SCHEMA_LOCK = 0x61726269  # "arbi"


class PostgresDialect(Dialect):
    """PostgreSQL.

    Args:
        dsn: connection string (``postgresql://user:password@host:5432/database``).
        pool_size: reader connections.
    """

    name = "postgres"

    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.pool_size = pool_size

    def connect(self) -> Any:
        """See :meth:`Dialect.connect`."""
        return psycopg.connect(self.dsn, autocommit=True)

    def sql(self, query: str) -> str:
        """``?`` placeholders become ``%s``."""
        return query.replace("?", "%s")

    def lock_router(self, tx: Tx, key: str) -> None:
        """See :meth:`Dialect.lock_router`."""
        tx.run("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))

    def lock_schema(self, tx: Tx) -> None:
        """See :meth:`Dialect.lock_schema`."""
        tx.run(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")

    def retryable(self, exc: BaseException) -> bool:
        """Deadlock, serialisation failure, or a lost connection."""
        return isinstance(
            exc, errors.DeadlockDetected | errors.SerializationFailure | psycopg.OperationalError
        )

    def reader(self) -> Callable[[Callable[[Tx], Any]], Any]:
        """Reads on connections borrowed from a pool."""
        pool = ConnectionPool(self.dsn, min_size=1, max_size=self.pool_size,
                              kwargs={"autocommit": True}, open=True)

        def run(fn: Callable[[Tx], Any]) -> Any:
            with pool.connection() as conn:
                return fn(Tx(conn.cursor(), self))

        run.pool = pool  # type: ignore[attr-defined]
        return run

    def close_reader(self, reader: Callable) -> None:
        """Close the pool."""
        reader.pool.close()  # type: ignore[attr-defined]
