"""Helpers of the decision-store tests: a spec per backend, decisions, feedback
documents, and polling for what another process or a queued write makes visible."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import StoreSpec
from gateway.decisions import Decision
from protos.protocol import new_id

KINDS = ("memory", "sqlite", "postgres")
"""Every backend of ``store.kind``."""

SHARED_KINDS = ("sqlite", "postgres")
"""The backends several store objects (and processes) can share."""


def store_spec(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
               **fields: Any) -> StoreSpec:
    """A spec of backend ``kind``: a file under ``tmp_path`` (sqlite), the test's own
    PostgreSQL database (postgres, through the ``postgres_dsn`` fixture), or memory."""
    if kind == "postgres":
        return StoreSpec(kind="postgres", dsn=request.getfixturevalue("postgres_dsn"), **fields)
    return StoreSpec(kind=kind, path=tmp_path / "decisions.sqlite", **fields)


def decision(deployment: str = "dep", *, at: float | None = None, routed: str = "lr",
             **fields: Any) -> Decision:
    """A decision with a fresh id, made ``at`` (Unix seconds; now by default)."""
    return Decision(id=new_id(), time=time.time() if at is None else at,
                    deployment=deployment, router="weighted", routed=routed, **fields)


def feedback_doc(reward: float | None, learned: list[str], truth: Any = None) -> dict[str, Any]:
    """The feedback document the gateway records (``Deployment.feedback``)."""
    return {"reward": reward, "truth": truth, "time": time.time(), "learned": sorted(learned)}


async def eventually(probe: Callable[[], Any], timeout_s: float = 1.0) -> Any:
    """Await ``probe()`` (sync or async) every 20 ms until it returns a truthy value or
    ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.02)
