"""The model-wrapper interface: what a framework runtime implements.

A wrapper works at the array level: ``predict`` takes a batch of rows (first dimension)
per input and returns a batch per output. Validation of requests against the
metadata, datatype conversion, requested outputs, ids and parameters live once in
``wrappers/target.py``; batching of concurrent requests is a wrapper around a wrapper
(``wrappers/batching.py``). Keeping ``predict`` array-level is what lets the batcher
merge rows of many requests into one framework call.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from protos.errors import InferenceError
from protos.protocol import ModelMetadata

__all__ = ["ModelWrapper", "framework_error"]

_log = logging.getLogger("arbiter.model")
_MAX_MESSAGE = 300


def framework_error(what: str, exc: BaseException) -> InferenceError:
    """An :class:`InferenceError` for a framework exception, safe to send to clients.

    The full exception (a TorchScript error carries the model's source code) goes to
    the server log; the client gets the exception type and the last line of its
    message, at most 300 characters.
    """
    _log.warning("%s raised", what, exc_info=exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[-1] if lines else ""
    if len(detail) > _MAX_MESSAGE:
        detail = detail[: _MAX_MESSAGE - 3] + "..."
    return InferenceError(f"{what} raised {type(exc).__name__}: {detail}")


class ModelWrapper(ABC):
    """A loaded model of one framework.

    ``load``, ``predict`` and ``unload`` block and are CPU-bound; callers run them off
    the event loop.
    """

    platform: ClassVar[str]
    """OIP platform string, such as ``onnx_onnxv1`` or ``pytorch_torchscript``."""

    @abstractmethod
    def load(self) -> None:
        """Read the artifact and make the model ready.

        Raises:
            InferenceError: the artifact is missing or not a model of this framework.
        """

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a batch.

        Args:
            inputs: input name -> array whose dtype and shape match :meth:`metadata`
                (first dimension is the batch).

        Returns:
            Output name -> array with the same first dimension as the inputs.

        Raises:
            InferenceError: the framework raised.
        """

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release the model. Default: nothing to release."""

    @abstractmethod
    def metadata(self) -> ModelMetadata:
        """OIP metadata: inputs and outputs with datatypes and shapes (``-1`` batch)."""
