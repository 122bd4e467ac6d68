"""Exact SHAP values of a linear classifier, in closed form on its log-odds (linear_shap).

For a binary classifier whose log-odds is linear in transformed columns ``T(x)`` that
each come from ONE input column (a scikit-learn ``Pipeline`` of column-wise transforms,
such as one-hot encoding and scaling, ending in a ``LogisticRegression``; or the bare
classifier), ``logit(x) = b + sum_c w_c T_c(x)`` is a sum of one term per input column,
and the interventional SHAP value of input column ``j`` against the reference rows ``R``
is exactly::

    phi_j(x) = sum over the columns c that come from j of  w_c * (T_c(x) - mean_R T_c)

with expected value ``b + w . mean_R T`` (Lundberg and Lee, "A Unified Approach to
Interpreting Model Predictions", NeurIPS 2017, linear SHAP under feature independence).
This is what ``shap.LinearExplainer`` gives on the transformed columns with the whole
reference as its masker (``shap.maskers.Independent(T(R), max_samples=len(R))``), summed
over each input column's transformed columns; no sampling, no model call per row.

Which transformed column comes from which input column is found at fit by probing: one
reference row with each input column in turn set to every value the reference (and,
for categorical columns, the category list) holds. A transformed column that moves with
two input columns makes the model non-additive and fitting fails. Each explanation checks
local accuracy (the values add up to the model's log-odds) before it is returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from explain.base import (
    BatchExplainer,
    ExplainerError,
    Explanation,
    FeatureSchema,
    PredictFn,
)
from explain.reasons import ReasonWriter
from explain.shapley import shap_explanation

__all__ = ["LinearShapExplainer"]

_TOLERANCE = 1e-9
"""Relative error allowed between the values' sum and the log-odds (float64 rounding)."""

_MODEL_TOLERANCE = 1e-5
"""Relative error allowed, at fit, between the log-odds computed from the coefficients in
float64 and the model's own (a model fitted on float32 rows computes in float32)."""


class LinearShapExplainer(BatchExplainer):
    """Closed-form SHAP values of a joblib-saved linear classifier (see module docstring).

    Values are of the log-odds of class 1 (single output); a multi-class model is
    refused. The model is loaded from ``artifact`` at fit; explanations make no remote
    call.

    Args:
        model: key of the model explained.
        schema: the input encoding and its wording.
        artifact: path of the joblib-saved classifier or pipeline.
        reasons: the reason writer (see :class:`~explain.base.Explainer`).
    """

    method = "linear_shap"

    def __init__(
        self, model: str, schema: FeatureSchema, *, artifact: Path, reasons: Any = None
    ) -> None:
        super().__init__(model, schema, ReasonWriter(schema) if reasons is None else reasons)
        self.artifact = Path(artifact)
        self._estimator: Any = None
        self._weights = np.zeros(0)
        self._intercept = 0.0
        self._mean = np.zeros(0)
        self._groups = np.zeros((0, 0))

    def fit(self, reference: np.ndarray) -> None:
        """Load the model and average its transformed columns over ``reference``.

        Raises:
            ExplainerError: not a binary linear classifier, a transform that mixes input
                columns, or ``reference`` of the wrong shape.
        """
        reference = np.asarray(reference, dtype=np.float32)
        n = len(self.schema.feature_names)
        if reference.ndim != 2 or reference.shape[1] != n or len(reference) == 0:
            raise ExplainerError(f"reference must be [rows, {n}], got shape {reference.shape}")
        self._estimator = joblib.load(self.artifact)
        self._weights, self._intercept = _coefficients(self._estimator)
        transformed = self._transform(reference)
        if transformed.shape[1] != self._weights.size:
            raise ExplainerError(
                f"linear_shap: {transformed.shape[1]} transformed columns, "
                f"{self._weights.size} coefficients"
            )
        self._mean = transformed.mean(axis=0)
        self._groups = _group_matrix(_sources(self._transform, reference, self.schema), n)
        logit = self._intercept + transformed @ self._weights
        model_logit = np.asarray(self._estimator.decision_function(reference))
        _check_accuracy(logit, model_logit, _MODEL_TOLERANCE, "coefficients miss the model's")

    def parameters(self) -> dict[str, Any]:
        return {"background": "mean of the reference rows"}

    def explain_batch(
        self, rows: np.ndarray, predict_fn: PredictFn | None = None
    ) -> list[Explanation]:
        """Explain every row at once (one transform, one matrix product)."""
        if self._estimator is None:
            raise ExplainerError("linear_shap explainer is not fitted")
        rows = self.check_rows(rows)
        transformed = self._transform(rows)
        values = ((transformed - self._mean) * self._weights) @ self._groups
        expected = self._intercept + float(self._mean @ self._weights)
        _check_accuracy(expected + values.sum(axis=1),
                        self._intercept + transformed @ self._weights, _TOLERANCE,
                        "contributions miss the")
        probabilities = self._probabilities(rows, self._intercept + transformed @ self._weights)
        return [
            shap_explanation(
                self, rows[i : i + 1], [float(p) for p in probabilities[i]],
                values[i : i + 1], np.array([expected]), 1, "log-odds",
            )
            for i in range(len(rows))
        ]

    def _probabilities(self, rows: np.ndarray, logit: np.ndarray) -> np.ndarray:
        """``[k, 2]`` class probabilities: a logistic regression's from the log-odds
        just computed (what its ``predict_proba`` computes, without transforming the rows
        again); any other model's ``predict_proba``."""
        final = self._estimator.steps[-1][1] if hasattr(self._estimator, "steps") else None
        if isinstance(final or self._estimator, LogisticRegression):
            positive = expit(logit)
            return np.stack([1.0 - positive, positive], axis=1)
        return np.asarray(self._estimator.predict_proba(rows), dtype=np.float64)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        """The columns the final linear step sees, float64 ``[k, transformed]``."""
        steps = getattr(self._estimator, "steps", None)
        out = self._estimator[:-1].transform(X) if steps and len(steps) > 1 else X
        out = out.toarray() if hasattr(out, "toarray") else out
        return np.asarray(out, dtype=np.float64)


def _coefficients(estimator: Any) -> tuple[np.ndarray, float]:
    """``(weights [transformed], intercept)`` of the final step of ``estimator``."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    coef = getattr(final, "coef_", None)
    if coef is None or not hasattr(estimator, "decision_function"):
        raise ExplainerError(f"linear_shap needs a linear classifier, got {type(final).__name__}")
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] != 1:
        raise ExplainerError(
            f"linear_shap explains binary classifiers; this one has {coef.shape[0]} classes"
        )
    intercept = np.atleast_1d(np.asarray(getattr(final, "intercept_", 0.0), dtype=np.float64))
    return coef.reshape(-1), float(intercept[0])


def _sources(transform: Any, reference: np.ndarray, schema: FeatureSchema) -> np.ndarray:
    """Input column of each transformed column (-1: constant), found by probing.

    Raises:
        ExplainerError: a transformed column moves with more than one input column.
    """
    base = reference[:1]
    blocks = []
    for j in range(reference.shape[1]):
        values = np.unique(reference[:, j])
        if j in schema.category_map:
            codes = np.arange(len(schema.category_map[j]), dtype=np.float32)
            values = np.union1d(values, codes)
        block = np.repeat(base, len(values), axis=0)
        block[:, j] = values
        blocks.append(block)
    probed = transform(np.concatenate(blocks))
    sources = np.full(probed.shape[1], -1)
    start = 0
    for j, block in enumerate(blocks):
        part = probed[start : start + len(block)]
        start += len(block)
        moved = np.flatnonzero((part != part[0]).any(axis=0))
        mixed = [int(c) for c in moved if sources[c] >= 0]
        if mixed:
            raise ExplainerError(
                f"linear_shap: transformed columns {mixed} depend on input columns "
                f"{sorted({int(sources[c]) for c in mixed})} and {j}; the model is not additive"
            )
        sources[moved] = j
    return sources


def _group_matrix(sources: np.ndarray, n: int) -> np.ndarray:
    """``[transformed, n]`` 0/1 matrix summing the transformed columns of each input."""
    groups = np.zeros((sources.size, n))
    owned = sources >= 0
    groups[np.flatnonzero(owned), sources[owned]] = 1.0
    return groups


def _check_accuracy(total: np.ndarray, logit: np.ndarray, tolerance: float, what: str) -> None:
    """Raise unless ``total`` equals ``logit`` within ``tolerance`` (relative)."""
    total = np.asarray(total, np.float64).reshape(-1)
    logit = np.asarray(logit, np.float64).reshape(-1)
    error = np.abs(total - logit)
    if not np.all(error <= tolerance * (1.0 + np.abs(logit))):
        raise ExplainerError(
            f"linear_shap: {what} log-odds by up to {error.max():.3g}; the model is not "
            "linear in separately transformed input columns"
        )
