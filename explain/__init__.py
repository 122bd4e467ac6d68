"""Explanations of decisions (linear, Tree and Kernel SHAP, Alibi anchors) with reasons a
loan officer can send and the provenance a regulator can check.

Importing this package does not import Alibi (slow, and only needed in worker
processes); :mod:`explain.alibi` and :mod:`explain.kernel` do.

Modules: :mod:`explain.settings` (``ExplainSpec``), :mod:`explain.base` (``Explainer``,
``Explanation``, ``Reason``), :mod:`explain.linear` (exact linear SHAP),
:mod:`explain.alibi` (anchors, Tree SHAP), :mod:`explain.kernel` (batched Kernel SHAP),
:mod:`explain.registry` (method -> explainer), :mod:`explain.reasons` (reason codes in
words), :mod:`explain.provenance` (records and reproduction), :mod:`explain.client` (OIP
batch clients for remote models), :mod:`explain.predictors` (local model factories),
:mod:`explain.process` (inside a worker process), :mod:`explain.worker`
(``ExplanationWorker``: process pool, queue bound, deadline, batches).
"""

from explain.base import (
    Explainer,
    ExplainerError,
    Explanation,
    FeatureSchema,
    PredictFn,
    Reason,
)
from explain.client import ModelEndpoint
from explain.predictors import JoblibPredictor, PredictorFactory, TorchScriptPredictor
from explain.provenance import ProvenanceError, reproduce
from explain.reasons import ReasonWriter
from explain.registry import explainer_for
from explain.settings import AdverseSpec, ExplainSpec
from explain.worker import (
    ExplanationResult,
    ExplanationStats,
    ExplanationStatus,
    ExplanationTimeoutError,
    ExplanationWorker,
)

__all__ = [
    "AdverseSpec",
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
    "ProvenanceError",
    "Reason",
    "ReasonWriter",
    "TorchScriptPredictor",
    "explainer_for",
    "reproduce",
]
