"""Write-behind decisions are inserted many rows per statement, on every backend: a
batch of hundreds commits whole, and a row that cannot be written fails alone (its
statement is undone and its rows go in one by one), counted as a lost write."""

from __future__ import annotations

import pytest

from gateway.decisions import StoreMetrics, build_store
from gateway.decisions.operations import BULK_ROWS
from tests.gateway.stores import KINDS, decision, store_spec


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bad_row_fails_alone_in_a_batch_of_decisions(kind, request, tmp_path) -> None:
    lost: list[int] = []
    batches: list[int] = []
    spec = store_spec(kind, request, tmp_path, flush_interval_ms=200)
    store = build_store(spec, StoreMetrics(write_errors=lost.append,
                                           batch_size=batches.append))
    await store.open(["dep"])
    try:
        good = [decision() for _ in range(2 * BULK_ROWS + 30)]
        bad = decision(propensity=10**400)  # fits neither SQLite's INTEGER nor a double
        for made in good[:BULK_ROWS]:
            await store.create(made)
        await store.create(bad)
        for made in good[BULK_ROWS:]:
            await store.create(made)
        stored = {d.id for d in await store.list("dep")}
        assert stored == {d.id for d in good}
        assert lost == [1]
        assert max(batches) >= len(good)  # the writes of the 200 ms window shared one batch
    finally:
        await store.close()
