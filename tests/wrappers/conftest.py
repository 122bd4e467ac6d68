"""Fixtures for the wrapper tests: the credit models, trained once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from examples.credit.encoding import load_frame
from examples.credit.train import artifact_paths, train
from gateway.protocol import InferenceRequest, ModelMetadata, Tensor, TensorMetadata
from wrappers.base import ModelWrapper


@pytest.fixture(scope="session")
def credit_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifact key -> path (see ``examples.credit.train.train``); trained into the
    session's base temp dir, shared with the twin fixture in tests/examples/conftest.py."""
    out = tmp_path_factory.getbasetemp() / "credit-models"
    if (out / "metrics.json").exists():
        return artifact_paths(out)
    return train(out, seed=0)


@pytest.fixture(scope="session")
def holdout_x(credit_models: dict[str, Path]) -> np.ndarray:
    """Encoded held-out rows, FP32 [200, 20]."""
    return load_frame(credit_models["holdout"])[0]


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
