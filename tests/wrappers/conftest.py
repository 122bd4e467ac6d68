"""Fixtures for the wrapper tests (the credit models come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from protos.protocol import InferenceRequest, ModelMetadata, Tensor, TensorMetadata
from wrappers.base import ModelWrapper


def request_of(x: np.ndarray, name: str = "input", **kwargs: Any) -> InferenceRequest:
    """An inference request with one input tensor holding ``x``."""
    return InferenceRequest("m", [Tensor.from_array(name, x)], **kwargs)


@pytest.fixture
def make_request() -> Callable[..., InferenceRequest]:
    """``make_request(x, name="input", **request_fields)`` -> one-input request."""
    return request_of


class DoublingWrapper(ModelWrapper):
    """A tiny real wrapper: ``y = 2 * x`` (FP32 [-1, 3]) and ``rowsum`` FP64 [-1].

    Counts predict calls and records batch sizes; ``fail`` makes predict raise.
    """

    platform = "test"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.fail: Exception | None = None
        self.delay_s = delay_s
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import time

        x = inputs["x"]
        self.calls.append(len(x))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return {"y": 2 * x, "rowsum": x.sum(axis=1, dtype=np.float64)}

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            "doubling", self.platform,
            [TensorMetadata("x", "FP32", [-1, 3])],
            [TensorMetadata("y", "FP32", [-1, 3]), TensorMetadata("rowsum", "FP64", [-1])],
        )


@pytest.fixture
def doubling() -> DoublingWrapper:
    """A fresh :class:`DoublingWrapper`."""
    return DoublingWrapper()


@pytest.fixture
def slow_doubling() -> DoublingWrapper:
    """A :class:`DoublingWrapper` whose predict sleeps 20 ms (so requests queue)."""
    return DoublingWrapper(delay_s=0.02)
