"""BatchingWrapper runs a fast model's predict calls on the event loop (no thread
hand-off), merging the requests that arrive in the same loop iteration; slow models,
and every model until its first call is timed, keep the worker threads."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from protos.errors import InferenceError
from tests.wrappers.conftest import DoublingWrapper
from wrappers.batching import BatchingWrapper


class _ThreadRecordingDoubling(DoublingWrapper):
    """A :class:`DoublingWrapper` that records the thread of every predict call."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.threads: list[int] = []

    def predict(self, inputs):
        self.threads.append(threading.get_ident())
        return super().predict(inputs)


# Tests that need the doubling model judged fast give it a 2 ms bound: its calls take
# tens of microseconds alone, but a few hundred on a CI core shared with other work.
FAST_BOUND_US = 2000


def _x(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), value, np.float32)}


async def test_fast_model_runs_on_the_loop_after_its_first_call_and_merges_an_iteration():
    wrapper = _ThreadRecordingDoubling()
    batcher = BatchingWrapper(wrapper, max_batch_size=64, max_batch_wait_ms=0,
                              inline_below_us=FAST_BOUND_US)
    loop_thread = threading.get_ident()
    first = await batcher.submit(_x(1))
    np.testing.assert_array_equal(first["y"], [[2, 2, 2]])
    assert wrapper.threads[0] != loop_thread  # not yet timed: a worker thread
    assert batcher.call_s is not None and batcher.call_s < batcher.inline_below_s
    outs = await asyncio.gather(*(batcher.submit(_x(i, 1 + i % 2)) for i in range(6)))
    assert wrapper.threads[1:] == [loop_thread]  # the six in one call, on the loop
    assert wrapper.calls == [1, 9]
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out["y"], np.full((1 + i % 2, 3), 2 * i))
        np.testing.assert_array_equal(out["rowsum"], np.full(1 + i % 2, 3.0 * i))
    alone = await batcher.submit(_x(7))  # a request alone still gets its answer
    np.testing.assert_array_equal(alone["y"], [[14, 14, 14]])
    assert wrapper.threads[-1] == loop_thread
    batcher.unload()


async def test_slow_model_never_runs_on_the_loop():
    wrapper = _ThreadRecordingDoubling(delay_s=0.002)  # 2 ms: over the 200 us bound
    batcher = BatchingWrapper(wrapper, max_batch_size=64, max_batch_wait_ms=0)
    await batcher.submit(_x(1))
    await asyncio.gather(*(batcher.submit(_x(i)) for i in range(4)))
    assert batcher.call_s is not None and batcher.call_s >= batcher.inline_below_s
    assert threading.get_ident() not in wrapper.threads
    assert wrapper.calls == [1, 1, 3]  # alone at once, then the queue behind it
    batcher.unload()


async def test_zero_bound_keeps_every_call_in_a_worker_thread():
    wrapper = _ThreadRecordingDoubling()
    batcher = BatchingWrapper(wrapper, max_batch_size=64, max_batch_wait_ms=0,
                              inline_below_us=0)
    for i in range(3):
        await batcher.submit(_x(i))
    assert threading.get_ident() not in wrapper.threads
    batcher.unload()


async def test_model_that_slows_down_goes_back_to_the_worker_threads():
    wrapper = _ThreadRecordingDoubling()
    # The fast calls' average stays far enough below the bound that one outlier,
    # clipped at four times the bound, cannot lift it past.
    batcher = BatchingWrapper(wrapper, max_batch_size=64, max_batch_wait_ms=0,
                              inline_below_us=FAST_BOUND_US)
    await batcher.submit(_x(1))
    await batcher.submit(_x(2))
    assert wrapper.threads[-1] == threading.get_ident()
    assert batcher.call_s < 0.5 * batcher.inline_below_s
    wrapper.delay_s = 0.05  # one slow call (a preemption, say) is taken as an outlier
    await batcher.submit(_x(3))
    assert batcher.call_s < batcher.inline_below_s
    await batcher.submit(_x(4))  # a second lifts the average past the bound
    assert batcher.call_s > batcher.inline_below_s
    await batcher.submit(_x(5))
    assert wrapper.threads[-1] != threading.get_ident()
    batcher.unload()


async def test_error_of_an_inline_batch_reaches_every_caller():
    wrapper = _ThreadRecordingDoubling()
    batcher = BatchingWrapper(wrapper, max_batch_size=64, max_batch_wait_ms=0,
                              inline_below_us=FAST_BOUND_US)
    await batcher.submit(_x(1))
    wrapper.fail = RuntimeError("model exploded")
    results = await asyncio.gather(*(batcher.submit(_x(i)) for i in range(5)),
                                   return_exceptions=True)
    assert wrapper.threads[-1] == threading.get_ident() and wrapper.calls[-1] == 5
    assert all(isinstance(r, InferenceError) for r in results)
    assert all("RuntimeError: model exploded" in str(r) for r in results)
    wrapper.fail = None
    with pytest.raises(InferenceError, match="model exploded"):
        wrapper.fail = RuntimeError("model exploded")
        await batcher.submit(_x(9))  # alone on the loop: the same error
    batcher.unload()


def test_negative_bound_is_refused():
    with pytest.raises(ValueError, match="inline_below_us >= 0"):
        BatchingWrapper(DoublingWrapper(), inline_below_us=-1)
