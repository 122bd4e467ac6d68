"""PostgreSQL backend of the decision store (``kind: postgres``): any number of
gateway processes and replicas share one database.

Driver: psycopg 3 (synchronous connections, used from the store's writer and reader
threads, so no call blocks the event loop); readers borrow from a
``psycopg_pool.ConnectionPool`` of ``pool_size`` connections. Each write batch locks
the routers it changes with transaction-level advisory locks
(``pg_advisory_xact_lock(hashtext(router))``, taken in sorted order), so feedback of
one deployment commits in one order across replicas and a promotion's compare-and-set
cannot race. Schema creation at startup is serialised the same way. Deadlocks and
serialisation failures are retried by the store; a server that cannot be reached or
written (connection errors, shutdown, a read-only standby, out of disk) is an outage
(``gateway.decisions.writer``). Unless the DSN says otherwise, connecting times out
after :data:`CONNECT_TIMEOUT_S` and a connection whose server stops answering (a
network partition, not only a refused connection) fails within about
:data:`TCP_TIMEOUT_MS` (libpq ``tcp_user_timeout`` and keepalives), so the outage is
seen instead of a writer stuck on a socket; a read waits at most :data:`READ_WAIT_S`
for a pooled connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from gateway.decisions.dialect import Dialect, Tx

__all__ = ["CONNECT_TIMEOUT_S", "PostgresDialect", "READ_WAIT_S", "TCP_TIMEOUT_MS",
           "masked_dsn"]

_SCHEMA_LOCK = 0x61726269  # "arbi"

CONNECT_TIMEOUT_S = 5
"""libpq ``connect_timeout`` (seconds) when the DSN sets none."""

READ_WAIT_S = 5.0
"""Longest wait of a read for a pooled connection."""

TCP_TIMEOUT_MS = 10_000
"""libpq ``tcp_user_timeout``: how long sent data may stay unacknowledged (ms)."""

_DEFAULTS = {"connect_timeout": CONNECT_TIMEOUT_S, "tcp_user_timeout": TCP_TIMEOUT_MS,
             "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
             "keepalives_count": 3}
"""libpq parameters set when the DSN has none of its own."""

_OUTAGE_STATES = ("08", "53", "57P", "25006")
"""SQLSTATEs (or their classes) of a server that cannot be written: connection
exceptions, insufficient resources (disk full), shutdown or start-up, read-only
transaction (a standby)."""


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
        given = conninfo_to_dict(dsn)
        self._options: dict[str, Any] = {
            "autocommit": True, **{k: v for k, v in _DEFAULTS.items() if k not in given}}

    @property
    def where(self) -> str:
        """The DSN with its password masked (for logs and errors)."""
        return masked_dsn(self.dsn)

    def connect(self) -> Any:
        """See :meth:`Dialect.connect`."""
        return psycopg.connect(self.dsn, **self._options)

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
        """Deadlock or serialisation failure."""
        return isinstance(exc, errors.DeadlockDetected | errors.SerializationFailure)

    def unavailable(self, exc: BaseException) -> bool:
        """A closed or failed connection, a timed-out pool, or a server that shuts
        down, starts, is out of resources or read-only (:data:`_OUTAGE_STATES`)."""
        if isinstance(exc, psycopg.InterfaceError):
            return True
        if not isinstance(exc, psycopg.Error):
            return False
        state = exc.sqlstate
        if state is None:  # raised by the client: the connection failed or timed out
            return isinstance(exc, psycopg.OperationalError)
        return state.startswith(_OUTAGE_STATES)

    def reader(self) -> Callable[[Callable[[Tx], Any]], Any]:
        """Reads on connections borrowed from a pool (waiting at most
        :data:`READ_WAIT_S` for one)."""
        pool = ConnectionPool(self.dsn, min_size=1, max_size=self.pool_size,
                              kwargs=self._options, open=True)

        def run(fn: Callable[[Tx], Any]) -> Any:
            with pool.connection(timeout=READ_WAIT_S) as conn:
                return fn(Tx(conn.cursor(), self))

        run.pool = pool  # type: ignore[attr-defined]
        return run

    def renew_reader(self, reader: Callable) -> None:
        """Test the pooled connections, replacing the broken ones."""
        reader.pool.check()  # type: ignore[attr-defined]

    def close_reader(self, reader: Callable) -> None:
        """Close the pool."""
        reader.pool.close()  # type: ignore[attr-defined]


def masked_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (URL or key=value form)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an invalid DSN)"
    if "password" in params:
        params["password"] = "***"
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    user = params.get("user")
    auth = f"{user}{':***' if 'password' in params else ''}@" if user else ""
    return f"postgresql://{auth}{host}:{port}/{params.get('dbname', '')}"
