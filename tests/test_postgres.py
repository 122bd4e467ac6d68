"""The ``postgres_server`` / ``postgres_dsn`` fixtures give a real, isolated PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from tests.postgres import PostgresServer


def _one(conn: psycopg.Connection, query: str) -> object:
    """The single value of a one-row, one-column query."""
    row = conn.execute(query).fetchone()
    assert row is not None, query
    return row[0]


def test_server_is_postgresql_15_or_later(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        version = str(_one(conn, "SHOW server_version"))
        number = int(str(_one(conn, "SHOW server_version_num")))
    assert int(version.split(".")[0]) >= 15, version
    assert number >= 150000, number


def test_rows_written_are_read_back(postgres_dsn: str) -> None:
    rows = [(1, "credit-lr", 0.25), (2, "credit-gbm", 0.5), (3, "credit-mlp", 0.75)]
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE decisions (id int PRIMARY KEY, model text, score float8)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO decisions VALUES (%s, %s, %s)", rows)
    # A second connection sees the committed rows.
    with psycopg.connect(postgres_dsn) as conn:
        read = conn.execute("SELECT id, model, score FROM decisions ORDER BY id").fetchall()
    assert read == rows


def test_server_listens_on_loopback_as_arbiter(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    assert postgres_server.dsn == f"postgresql://arbiter@127.0.0.1:{postgres_server.port}/postgres"
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute(
            "SELECT current_user, inet_server_addr()::text, inet_server_port()"
        ).fetchone()
    assert row == ("arbiter", "127.0.0.1/32", postgres_server.port)


_dsns_seen: set[str] = set()


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_its_own_database(postgres_dsn: str, run: str) -> None:
    # Both runs create the same table: in a shared database, whichever ran second would
    # find it already there.
    assert postgres_dsn not in _dsns_seen
    _dsns_seen.add(postgres_dsn)
    with psycopg.connect(postgres_dsn) as conn:
        assert _one(conn, "SELECT to_regclass('only_here')") is None
        conn.execute("CREATE TABLE only_here (run text)")
        conn.execute("INSERT INTO only_here VALUES (%s)", (run,))
        assert conn.execute("SELECT run FROM only_here").fetchall() == [(run,)]


def test_a_table_in_one_database_is_absent_from_another(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    other_dsn = postgres_server.create_database("isolation_other")
    assert other_dsn != postgres_dsn
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
        assert _one(conn, "SELECT to_regclass('only_here')::text") == "only_here"
    with psycopg.connect(other_dsn) as conn:
        assert _one(conn, "SELECT current_database()") == "isolation_other"
        assert _one(conn, "SELECT to_regclass('only_here')") is None
