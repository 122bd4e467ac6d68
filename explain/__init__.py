"""Explanations of decisions (Alibi anchors, Kernel SHAP, Tree SHAP) for regulators.

Importing this package does not import Alibi (slow, and only needed in worker
processes); :mod:`explain.alibi` does.

Modules: :mod:`explain.settings` (``ExplainSpec``), :mod:`explain.base` (``Explainer``,
``Explanation``), :mod:`explain.alibi` (the three explainers), :mod:`explain.client`
(OIP batch clients for remote models), :mod:`explain.predictors` (local model factory),
:mod:`explain.worker` (``ExplanationWorker``: process pool, queue bound, deadline).
"""

from explain.base import Explainer, ExplainerError, Explanation, FeatureSchema, PredictFn
from explain.client import ModelEndpoint
from explain.predictors import JoblibPredictor, PredictorFactory
from explain.settings import ExplainSpec
from explain.worker import (
    ExplanationResult,
    ExplanationStats,
    ExplanationStatus,
    ExplanationTimeoutError,
    ExplanationWorker,
)

__all__ = [
    "ExplainSpec",
    "Explainer",
    "ExplainerError",
    "Explanation",
    "ExplanationResult",
    "ExplanationStats",
    "ExplanationStatus",
    "ExplanationTimeoutError",
    "ExplanationWorker",
    "FeatureSchema",
    "JoblibPredictor",
    "ModelEndpoint",
    "PredictFn",
    "PredictorFactory",
]
