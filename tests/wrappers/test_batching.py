"""BatchingWrapper: concurrent requests merge into fewer predict calls, each caller
gets exactly its own rows, and errors reach every caller of a batch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from protos.errors import InferenceError
from protos.protocol import (
    InferenceRequest,
    ModelMetadata,
    RequestedOutput,
    Tensor,
    TensorMetadata,
)
from wrappers.base import ModelWrapper
from wrappers.batching import BatchingWrapper
from wrappers.loader import wrapper_from_settings
from wrappers.settings import load_settings
from wrappers.target import ModelTarget


class _AnyWidthWrapper(ModelWrapper):
    """``y = 2 * x`` for ``x`` FP32 [-1, -1]; records the rows of each call."""

    platform = "test"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def load(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(len(inputs["x"]))
        return {"y": 2 * inputs["x"]}

    def metadata(self) -> ModelMetadata:
        return ModelMetadata("any", "test", [TensorMetadata("x", "FP32", [-1, -1])],
                             [TensorMetadata("y", "FP32", [-1, -1])])


async def test_fifty_concurrent_callers_get_their_own_rows(credit_models, holdout_x):
    settings = load_settings(credit_models["gbm_settings"])
    inner = wrapper_from_settings(settings)
    target = ModelTarget(inner, settings)
    await target.load()
    batcher = target.batcher
    choices = [None, [RequestedOutput("label")], [RequestedOutput("probabilities")]]
    requests = []
    for i in range(50):
        rows = 1 + i % 7
        start = (i * 3) % (len(holdout_x) - rows)
        requests.append(InferenceRequest(
            settings.name, [Tensor.from_array("input", holdout_x[start:start + rows])],
            id=str(i), outputs=choices[i % 3]))
    responses = await asyncio.gather(*(target.infer(r) for r in requests))
    assert batcher.predict_calls < len(requests)
    for request, response in zip(requests, responses, strict=True):
        x = request.inputs[0].data
        expected = inner.predict({"input": x})  # unbatched
        wanted = [o.name for o in request.outputs] if request.outputs else [
            "label", "probabilities"]
        assert response.id == request.id
        assert [o.name for o in response.outputs] == wanted
        for out in response.outputs:
            assert out.shape[0] == len(x)
            np.testing.assert_array_equal(out.data, expected[out.name])
    await target.unload()


async def test_predict_calls_merge_rows(slow_doubling):
    batcher = BatchingWrapper(slow_doubling, max_batch_size=16, max_batch_wait_ms=5)
    batcher.load()
    xs = [np.full((1 + i % 3, 3), i, np.float32) for i in range(20)]
    outs = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs))
    assert sum(slow_doubling.calls) == sum(len(x) for x in xs)
    assert max(slow_doubling.calls) <= 16
    assert len(slow_doubling.calls) < len(xs)
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out["y"], 2 * x)
        np.testing.assert_array_equal(out["rowsum"], x.sum(axis=1))
    batcher.unload()


async def test_error_reaches_every_caller_of_the_batch(slow_doubling):
    batcher = BatchingWrapper(slow_doubling, max_batch_size=64, max_batch_wait_ms=20)
    slow_doubling.fail = RuntimeError("model exploded")
    results = await asyncio.gather(
        *(batcher.submit({"x": np.ones((2, 3), np.float32)}) for _ in range(10)),
        return_exceptions=True)
    assert len(slow_doubling.calls) == 1
    assert all(isinstance(r, InferenceError) for r in results)
    assert all("RuntimeError: model exploded" in str(r) for r in results)
    assert len({id(r) for r in results}) == 10  # one error object per caller
    slow_doubling.fail = None  # and the batcher still works afterwards
    out = await batcher.submit({"x": np.ones((1, 3), np.float32)})
    np.testing.assert_array_equal(out["y"], [[2, 2, 2]])
    batcher.unload()


async def test_oversized_request_runs_alone(doubling):
    batcher = BatchingWrapper(doubling, max_batch_size=4, max_batch_wait_ms=10)
    big, small = np.ones((10, 3), np.float32), np.ones((1, 3), np.float32)
    outs = await asyncio.gather(batcher.submit({"x": big}), batcher.submit({"x": small}))
    assert sorted(doubling.calls) == [1, 10]
    assert outs[0]["y"].shape == (10, 3) and outs[1]["y"].shape == (1, 3)
    batcher.unload()


async def test_batch_size_one_never_merges(doubling):
    batcher = BatchingWrapper(doubling, max_batch_size=1, max_batch_wait_ms=10)
    await asyncio.gather(*(batcher.submit({"x": np.ones((1, 3), np.float32)}) for _ in range(8)))
    assert doubling.calls == [1] * 8
    batcher.unload()


async def test_zero_wait_runs_idle_request_at_once_and_merges_queue(slow_doubling):
    batcher = BatchingWrapper(slow_doubling, max_batch_size=64, max_batch_wait_ms=0)
    xs = [np.full((1, 3), i, np.float32) for i in range(6)]
    outs = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs))
    assert slow_doubling.calls == [1, 5]  # first alone; the rest queued behind it
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out["y"], 2 * x)
    batcher.unload()


async def test_incompatible_shapes_go_in_separate_batches():
    wrapper = _AnyWidthWrapper()
    batcher = BatchingWrapper(wrapper, max_batch_size=64, max_batch_wait_ms=10)
    xs = [np.ones((1, 2 + i % 2), np.float32) * i for i in range(6)]
    outs = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs))
    assert sorted(wrapper.calls) == [3, 3]
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out["y"], 2 * x)
    batcher.unload()


async def test_cancelled_caller_does_not_break_its_batch(slow_doubling):
    batcher = BatchingWrapper(slow_doubling, max_batch_size=64, max_batch_wait_ms=20)
    keep = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 3), np.float32)}))
    drop = asyncio.ensure_future(batcher.submit({"x": np.ones((2, 3), np.float32)}))
    await asyncio.sleep(0)
    drop.cancel()
    out = await keep
    np.testing.assert_array_equal(out["y"], [[2, 2, 2]])
    assert slow_doubling.calls == [1]
    batcher.unload()


def test_limits_are_checked(doubling):
    with pytest.raises(ValueError, match="max_batch_size >= 1"):
        BatchingWrapper(doubling, max_batch_size=0)
