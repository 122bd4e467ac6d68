"""The batching queue is bounded: past ``max_queue_rows`` a request is refused at once
with OverloadedError (429 / RESOURCE_EXHAUSTED) and counted; admitted requests are all
answered; a cancelled request gives its rows back."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from protos.errors import OverloadedError
from protos.server.metrics import MetricsBound, ServerMetrics
from tests.wrappers.conftest import DoublingWrapper
from wrappers.batching import BatchingWrapper
from wrappers.settings import ModelSettings
from wrappers.target import ModelTarget


class _GatedDoubling(DoublingWrapper):
    """A :class:`DoublingWrapper` whose predict waits for :attr:`gate`; :attr:`entered`
    is set once a predict call has started."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict(self, inputs):
        self.entered.set()
        self.gate.wait(30)
        return super().predict(inputs)


def _x(rows: int) -> dict[str, np.ndarray]:
    return {"x": np.ones((rows, 3), np.float32)}


async def _busy(batcher: BatchingWrapper, wrapper: _GatedDoubling) -> asyncio.Task:
    """Occupy the one worker with a request held at the gate."""
    running = asyncio.ensure_future(batcher.submit(_x(1)))
    await asyncio.to_thread(wrapper.entered.wait, 10)
    return running


async def _queue(batcher: BatchingWrapper, *rows: int) -> list[asyncio.Task]:
    tasks = [asyncio.ensure_future(batcher.submit(_x(n))) for n in rows]
    await asyncio.sleep(0)  # each reaches the queue (or is refused) in its first step
    return tasks


@pytest.mark.parametrize("max_batch_size", [64, 1])
async def test_requests_past_the_bound_are_refused_at_once_and_counted(max_batch_size):
    wrapper = _GatedDoubling()
    batcher = BatchingWrapper(wrapper, max_batch_size=max_batch_size, max_batch_wait_ms=0,
                              max_queue_rows=4, name="d")
    refused: list[None] = []
    batcher.on_reject = lambda: refused.append(None)
    running = await _busy(batcher, wrapper)
    admitted = await _queue(batcher, 1, 2, 1)
    with pytest.raises(OverloadedError, match=r"model 'd' is overloaded.*max_queue_rows 4"):
        await batcher.submit(_x(1))
    assert OverloadedError.status == 429 and OverloadedError.retry_after_s
    assert len(refused) == 1
    wrapper.gate.set()
    outs = await asyncio.gather(running, *admitted)
    assert [len(o["y"]) for o in outs] == [1, 1, 2, 1]
    assert sum(wrapper.calls) == 5
    batcher.unload()


async def test_a_request_finding_the_queue_empty_is_admitted_even_past_the_bound():
    wrapper = _GatedDoubling()
    batcher = BatchingWrapper(wrapper, max_batch_size=4, max_batch_wait_ms=0,
                              max_queue_rows=2)
    running = await _busy(batcher, wrapper)
    (big,) = await _queue(batcher, 10)
    with pytest.raises(OverloadedError):
        await batcher.submit(_x(1))
    wrapper.gate.set()
    assert len((await big)["y"]) == 10
    await running
    assert wrapper.calls == [1, 10]  # the big one ran alone, in its turn
    batcher.unload()


async def test_a_cancelled_request_gives_its_rows_back():
    wrapper = _GatedDoubling()
    batcher = BatchingWrapper(wrapper, max_batch_size=64, max_batch_wait_ms=0,
                              max_queue_rows=2)
    running = await _busy(batcher, wrapper)
    (dropped,) = await _queue(batcher, 2)
    dropped.cancel()
    await asyncio.gather(dropped, return_exceptions=True)
    (kept,) = await _queue(batcher, 2)
    assert not kept.done()
    wrapper.gate.set()
    await asyncio.gather(running, kept)
    assert wrapper.calls == [1, 2]
    batcher.unload()


def test_the_bound_must_be_positive():
    with pytest.raises(ValueError, match="max_queue_rows >= 1"):
        BatchingWrapper(DoublingWrapper(), max_queue_rows=0)
    with pytest.raises(ValueError, match="max_queue_rows"):
        ModelSettings(name="d", max_queue_rows=0)


async def test_model_target_takes_the_bound_from_settings_and_binds_metrics():
    wrapper = _GatedDoubling()
    target = ModelTarget(wrapper, ModelSettings(name="d", max_queue_rows=1,
                                                max_batch_wait_ms=0, probe_on_load=False))
    assert target.batcher.max_queue_rows == 1 and isinstance(target, MetricsBound)
    registry = CollectorRegistry()
    target.bind_metrics(ServerMetrics(registry, lambda name: True))
    await target.load()
    running = await _busy(target.batcher, wrapper)
    queued = await _queue(target.batcher, 1)
    with pytest.raises(OverloadedError):
        await target.batcher.submit(_x(1))
    assert registry.get_sample_value(
        "arbiter_batch_queue_rejected_requests_total", {"model": "d"}) == 1.0
    wrapper.gate.set()
    await asyncio.gather(running, *queued)
    await target.unload()
