"""Helpers of the outage tests: a PostgreSQL server of a test's own, which the test
may shut down and start again (``PostgresServer.pause`` / ``resume``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_postgres
from tests.postgres import PostgresServer


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own (skipped without the binaries, failed
    with ``ARBITER_REQUIRE_POSTGRES=1``)."""
    require_postgres()
    with PostgresServer() as server:
        yield server
