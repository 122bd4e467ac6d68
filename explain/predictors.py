"""Picklable predictor factories for explainer worker processes.

The worker is given, per model key, a zero-argument picklable callable; each worker
process calls it once and uses what it returns as the explainer's batch ``predict_fn``.
:class:`explain.client.ModelEndpoint` is the factory for a remote model;
:class:`JoblibPredictor` and :class:`TorchScriptPredictor` are the ones for a model file
on local disk (a wrapper pod, a notebook, a test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from explain.base import PredictFn

__all__ = ["PredictorFactory", "JoblibPredictor", "TorchScriptPredictor"]

PredictorFactory = Callable[[], PredictFn]
"""Zero-argument picklable callable run once in a worker process; returns ``predict_fn``."""


@dataclass(frozen=True, slots=True)
class JoblibPredictor:
    """A joblib-saved sklearn classifier on local disk.

    Attributes:
        path: the ``.joblib`` file.
        output: ``probabilities`` (``predict_proba``, ``[k, classes]``) or ``label``
            (``predict``, ``[k]``).
    """

    path: Path
    output: str = "probabilities"

    def __call__(self) -> PredictFn:
        """Load the model; return its batch prediction function."""
        model = joblib.load(self.path)
        method = model.predict if self.output == "label" else model.predict_proba

        def predict(X: np.ndarray) -> np.ndarray:
            return np.asarray(method(X))

        return predict


@dataclass(frozen=True, slots=True)
class TorchScriptPredictor:
    """A TorchScript classifier on local disk returning ``(label, probabilities)`` or
    probabilities alone (the credit MLP's convention).

    Attributes:
        path: the ``.pt`` file saved with ``torch.jit.save``.
        output: ``probabilities`` (``[k, classes]`` float32) or ``label`` (``[k]``).
    """

    path: Path
    output: str = "probabilities"

    def __call__(self) -> PredictFn:
        """Load the module (torch imported here, in the worker process); return its
        batch prediction function."""
        import torch

        module = torch.jit.load(str(self.path)).eval()
        index = 0 if self.output == "label" else 1

        def predict(X: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
            out = out[index] if isinstance(out, tuple) else out
            return out.numpy()

        return predict
