"""Helpers of the outage tests: a PostgreSQL server of a test's own, which the test
may shut down and start again (``PostgresServer.pause`` / ``resume``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import REQUIRE_POSTGRES_ENV
from tests.postgres import PostgresServer, postgres_available


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own (skipped without the binaries, failed
    with ``ARBITER_REQUIRE_POSTGRES=1``)."""
    problem = postgres_available()
    if problem is not None:
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{problem} ({REQUIRE_POSTGRES_ENV}=1)")
        pytest.skip(problem)
    with PostgresServer() as server:
        yield server
