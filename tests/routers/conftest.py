"""Fixtures for the router tests: a request, a fake clock and both state stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from protos.protocol import InferenceRequest
from routers.state import InMemoryStateStore, SQLiteStateStore, StateStore


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


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """Each state store in turn."""
    s: StateStore = (
        InMemoryStateStore() if request.param == "memory" else SQLiteStateStore(tmp_path / "r.db")
    )
    yield s
    s.close()
