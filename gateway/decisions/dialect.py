"""What differs between the SQL backends of the decision store, and the cursor the
store's operations run on (SQL written once with ``?`` placeholders)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from protos.errors import ArbiterError

__all__ = ["Dialect", "Tx", "StoreError", "StoreUnavailableError"]


class StoreError(RuntimeError):
    """The store cannot be opened: unreachable, or its schema is newer than ours."""


class StoreUnavailableError(ArbiterError):
    """The decision store cannot be written now (an outage): 503 with Retry-After over
    REST, UNAVAILABLE over gRPC. Nothing the request asked for was recorded."""

    status = 503
    grpc_code = "UNAVAILABLE"
    retry_after_s = 1


class Dialect(ABC):
    """What differs between SQL backends."""

    name: str
    reads_through_writer: bool = False
    """True when the writer's connection is the only one (SQLite in memory)."""

    @property
    def where(self) -> str:
        """Where the database is, for logs and errors (never a password)."""
        return self.name

    @abstractmethod
    def connect(self) -> Any:
        """A new DB-API connection in autocommit mode (transactions are explicit)."""

    def sql(self, query: str) -> str:
        """``query`` with this driver's placeholders (written with ``?``)."""
        return query

    def begin(self) -> str:
        """The statement that opens a write transaction."""
        return "BEGIN"

    def lock_router(self, tx: Tx, key: str) -> None:  # noqa: B027 - optional hook
        """Lock router ``key``'s counts until the transaction ends. Default: nothing
        (the backend serialises writers)."""

    def lock_schema(self, tx: Tx) -> None:  # noqa: B027 - optional hook
        """Serialise schema creation between processes. Default: nothing."""

    @abstractmethod
    def retryable(self, exc: BaseException) -> bool:
        """Whether a batch that failed with ``exc`` should be run again at once (a
        deadlock, a lock held too long)."""

    @abstractmethod
    def unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database cannot be written at all (down,
        unreachable, read-only, out of disk): an outage, not this batch's fault."""

    def reader(self) -> Callable[[Callable[[Tx], Any]], Any]:
        """A function that runs a read on a connection of its own (called on reader
        threads)."""
        local = threading.local()
        connections: list[Any] = []

        def run(fn: Callable[[Tx], Any]) -> Any:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = self.connect()
                connections.append(conn)
            return fn(Tx(conn.cursor(), self))

        run.connections = connections  # type: ignore[attr-defined]
        return run

    def renew_reader(self, reader: Callable) -> None:  # noqa: B027 - optional hook
        """Replace the connections of :meth:`reader` that an outage broke (called on a
        reader thread after one). Default: nothing (per-thread connections to a local
        file recover by themselves)."""

    def close_reader(self, reader: Callable) -> None:
        """Close what :meth:`reader` opened."""
        for conn in getattr(reader, "connections", ()):
            conn.close()


class Tx:
    """A cursor with the dialect's placeholders."""

    __slots__ = ("cursor", "dialect")

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def run(self, query: str, params: tuple | list = ()) -> int:
        """Execute; returns the row count."""
        self.cursor.execute(self.dialect.sql(query), params)
        return self.cursor.rowcount

    def one(self, query: str, params: tuple | list = ()) -> tuple | None:
        """The first row, or None."""
        self.cursor.execute(self.dialect.sql(query), params)
        return self.cursor.fetchone()

    def all(self, query: str, params: tuple | list = ()) -> list[tuple]:
        """Every row."""
        self.cursor.execute(self.dialect.sql(query), params)
        return self.cursor.fetchall()
