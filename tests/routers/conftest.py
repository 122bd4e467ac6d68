"""Fixtures for the router tests: a request, a fake clock and both state stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protos.protocol import InferenceRequest
from routers.state import InMemoryStateStore, StateStore


class FakeClock:
    """A clock that only moves when told to (seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def request_() -> InferenceRequest:
    """A minimal request; routers here do not look inside it."""
    return InferenceRequest(model_name="credit", inputs=[])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> Iterator[StateStore]:
    """An in-process state store (the gateway's SQLite and PostgreSQL stores are tested
    with the same routers in tests/gateway/test_store_*.py)."""
    s: StateStore = InMemoryStateStore()
    yield s
    s.close()
