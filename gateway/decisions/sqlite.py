"""SQLite backends of the decision store: a file shared by every gateway process of
one node (``kind: sqlite``), or a private in-memory database (``kind: memory``).

The file is opened in WAL mode (readers never block the writer) with
``synchronous=FULL`` (a committed feedback survives a power cut, not only a crash)
and a 30 s busy timeout; writers of several processes are serialised by
``BEGIN IMMEDIATE``. Not for network file systems: WAL needs shared memory on one
host; several nodes need ``kind: postgres``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.decisions.dialect import Dialect

__all__ = ["SQLiteDialect", "MemoryDialect"]


class SQLiteDialect(Dialect):
    """SQLite on a file.

    Args:
        path: database file; its folder is created (on connecting) when missing.
    """

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def where(self) -> str:
        """The file's path."""
        return str(self.path)

    def connect(self) -> Any:
        """See :meth:`Dialect.connect`.

        Raises:
            OSError: the folder cannot be created.
            sqlite3.Error: the file cannot be opened, or set to WAL mode.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create its folder {self.path.parent}: "
                          f"{exc.strerror or exc}") from None
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA busy_timeout = 30000")
        except sqlite3.Error as exc:
            conn.close()
            if self.unavailable(exc):
                raise sqlite3.OperationalError(
                    f"{exc} (the file, its folder or its file system is read-only or full, "
                    "or not writable by this user)") from None
            raise
        return conn

    def begin(self) -> str:
        """``BEGIN IMMEDIATE``: take the write lock at once (no upgrade deadlock)."""
        return "BEGIN IMMEDIATE"

    def retryable(self, exc: BaseException) -> bool:
        """A busy or locked database (another process held the lock past the timeout)."""
        return isinstance(exc, sqlite3.OperationalError) and any(
            word in str(exc) for word in ("locked", "busy")
        )

    def unavailable(self, exc: BaseException) -> bool:
        """A file that cannot be written: read-only, disk full, I/O error, or gone."""
        return isinstance(exc, sqlite3.OperationalError) and any(
            words in str(exc) for words in _UNWRITABLE
        )


_UNWRITABLE = ("readonly", "read-only", "disk I/O error", "disk is full",
               "unable to open database file")
"""What SQLite says when its file cannot be written."""


class MemoryDialect(SQLiteDialect):
    """SQLite in memory: one process, lost at exit (tests). Reads go through the
    writer's connection, the only one that sees the database."""

    name = "memory"
    reads_through_writer = True

    def __init__(self) -> None:
        self.path = Path(":memory:")

    def connect(self) -> Any:
        """See :meth:`Dialect.connect`."""
        return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
