"""Explainers built on Alibi 0.9.4 (Apache-2.0; later Alibi releases are not): anchors
and Tree SHAP. Kernel SHAP, batched across decisions, is in :mod:`explain.kernel`.

Each class wraps one Alibi explainer and adds three things only: a batch prediction
function swapped in per call (so one fitted explainer serves many requests), a fixed seed
reset before every call (so the same model, row and seed always give the same result, the
one Alibi gives when called directly), and rendering in the data's own terms, reasons
included (:mod:`explain.reasons`).

Sources: Ribeiro, Singh, Guestrin, "Anchors: High-Precision Model-Agnostic Explanations",
AAAI 2018; Lundberg et al., "From local explanations to global understanding with
explainable AI for trees" (Tree SHAP), Nature MI 2020.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from alibi.explainers import AnchorTabular, TreeShap

from explain.base import (
    BatchExplainer,
    Explainer,
    ExplainerError,
    Explanation,
    FeatureSchema,
    PredictFn,
)
from explain.reasons import ReasonWriter
from explain.shapley import shap_explanation

__all__ = [
    "AnchorTabularExplainer",
    "TreeShapExplainer",
    "PredictorSlot",
    "categorical",
    "check_reference",
]


class PredictorSlot:
    """The callable Alibi holds; forwards to the predict_fn bound for the current call.

    Alibi probes its predictor once at construction (to tell probabilities from labels);
    with nothing bound the slot answers that probe with zeros of the configured shape,
    so construction makes no model call.
    """

    def __init__(self, label_output: bool) -> None:
        self._label_output = label_output
        self._fn: PredictFn | None = None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self._fn is None:
            shape = (len(X),) if self._label_output else (len(X), 2)
            return np.zeros(shape, dtype=np.float32)
        return np.asarray(self._fn(np.ascontiguousarray(X, dtype=np.float32)))

    @contextmanager
    def bound(self, fn: PredictFn) -> Iterator[None]:
        self._fn = fn
        try:
            yield
        finally:
            self._fn = None


class _ScalarOutputWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Predictor returned a scalar value")


@contextmanager
def _quiet_about_scalar_output() -> Iterator[None]:
    """Drop Alibi's warning that a predictor "returned a scalar value" while fitting:
    a binary tree ensemble's raw output is one margin (log-odds) per row, which is what
    is explained, not a class label as the warning supposes."""
    logger = logging.getLogger("alibi.explainers.shap_wrappers")
    quiet = _ScalarOutputWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def categorical(schema: FeatureSchema) -> dict[int, list[str]] | None:
    """The schema's category map in Alibi's form (``None`` when there is none)."""
    return dict(schema.category_map) or None


def _probabilities(predict_fn: PredictFn, row: np.ndarray) -> list[float] | int:
    out = np.asarray(predict_fn(row))
    return int(out.reshape(-1)[0]) if out.ndim == 1 else [float(v) for v in out[0]]


class _StepRecordingAnchor(AnchorTabular):
    """Alibi's AnchorTabular, keeping the column of each step of the last anchor found
    (Alibi merges the steps on one column when it names them; their precisions stay
    one per step)."""

    step_features: list[int]

    def add_names_to_exp(self, explanation: dict[str, Any]) -> None:
        self.step_features = [int(self.enc2feat_idx[i]) for i in explanation["feature"]]
        super().add_names_to_exp(explanation)


class AnchorTabularExplainer(Explainer):
    """Anchors of Alibi's ``AnchorTabular`` (categorical columns as integer codes).

    The result equals ``AnchorTabular(predict_fn, feature_names, category_map,
    seed=seed).fit(reference)`` followed by ``np.random.seed(seed)`` and
    ``explain(row[0], threshold=..., batch_size=..., coverage_samples=...)``.

    Reasons (when the predicted class is adverse): the anchor's conditions in words, each
    with the rise in precision it brought; the first condition's rise is measured from
    the model's rate of that prediction on the reference rows (one model call over the
    reference, made once per fitted explainer).
    """

    method = "anchor_tabular"

    def __init__(
        self,
        model: str,
        schema: FeatureSchema,
        *,
        seed: int = 0,
        threshold: float = 0.95,
        batch_size: int = 100,
        coverage_samples: int = 10_000,
        label_output: bool = False,
        reasons: Any = None,
    ) -> None:
        super().__init__(model, schema, ReasonWriter(schema) if reasons is None else reasons)
        self.seed = seed
        self.threshold = threshold
        self.batch_size = batch_size
        self.coverage_samples = coverage_samples
        self._slot = PredictorSlot(label_output)
        self._anchor: _StepRecordingAnchor | None = None
        self._reference: np.ndarray | None = None
        self._reference_labels: np.ndarray | None = None

    def fit(self, reference: np.ndarray) -> None:
        check_reference(reference, self.schema)
        self._reference = np.asarray(reference, dtype=np.float32)
        self._reference_labels = None
        anchor = _StepRecordingAnchor(
            self._slot, list(self.schema.feature_names), categorical(self.schema), seed=self.seed
        )
        self._anchor = anchor.fit(self._reference)

    def parameters(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "batch_size": self.batch_size,
                "coverage_samples": self.coverage_samples}

    def explain(self, row: np.ndarray, predict_fn: PredictFn | None) -> Explanation:
        if self._anchor is None:
            raise ExplainerError("anchor_tabular explainer is not fitted")
        if predict_fn is None:
            raise ExplainerError("anchor_tabular needs a predict_fn")
        row = self.check_row(row)
        with self._slot.bound(predict_fn):
            prediction = _probabilities(predict_fn, row)
            base_labels = self._labels_on_reference(predict_fn)
            np.random.seed(self.seed)
            result = self._anchor.explain(
                row[0],
                threshold=self.threshold,
                batch_size=self.batch_size,
                coverage_samples=self.coverage_samples,
            )
        label = int(self._anchor.instance_label)
        features = [int(f) for f in result.data["raw"]["feature"]]
        anchor = self._render(row, features, list(result.anchor))
        precision, coverage = float(result.precision), float(result.coverage)
        name = self.schema.class_name(label)
        reasons, withheld, contrary = [], [], []
        if label in self.reasons.adverse and len(anchor) == len(features):
            base = float(np.mean(base_labels == label))
            gains = _gains(features, self._anchor.step_features, result.data["raw"], base)
            reasons, withheld, contrary = self.reasons.from_anchor(row, features, anchor, gains)
        return Explanation(
            method=self.method,
            model=self.model,
            prediction=prediction,
            explained_class=label,
            explained_class_name=name,
            summary=_anchor_summary(name, anchor, precision, coverage),
            feature_values=self.feature_values(row),
            reasons=reasons,
            withheld_reasons=withheld or None,
        contrary_reasons=contrary or None,
            anchor=anchor,
            anchor_features=features,
            precision=precision,
            coverage=coverage,
        )

    def _labels_on_reference(self, predict_fn: PredictFn) -> np.ndarray:
        """The model's predicted class of every reference row (computed once)."""
        if self._reference_labels is None:
            out = np.asarray(predict_fn(self._reference))
            self._reference_labels = out.reshape(-1) if out.ndim == 1 else out.argmax(axis=1)
        return self._reference_labels

    def _render(self, row: np.ndarray, features: list[int], names: list[str]) -> list[str]:
        """Alibi's conditions, with categorical ones as ``name = "category"``.

        Alibi drops the column name of a category containing '<' or '>' (it prints
        ``... < 0 DM``); a regulator needs the column, so categorical conditions are
        rebuilt from the row. Numerical ranges keep Alibi's text.
        """
        if len(features) != len(names):
            return names
        cats = self.schema.category_map
        return [
            self.schema.condition(f, row[0, f]) if f in cats else text
            for f, text in zip(features, names, strict=True)
        ]


def _gains(
    features: list[int], steps: list[int], raw: dict[str, Any], base: float
) -> list[float]:
    """Rise in precision brought by each anchor condition (the sum over its steps)."""
    precisions = [base] + [float(p) for p in raw["precision"]]
    gains = dict.fromkeys(features, 0.0)
    for k, feature in enumerate(steps[: len(precisions) - 1]):
        gains[feature] = gains.get(feature, 0.0) + precisions[k + 1] - precisions[k]
    return [gains[f] for f in features]


class TreeShapExplainer(BatchExplainer):
    """Exact (path-dependent) SHAP values of Alibi's ``TreeShap`` on a local tree model.

    The model is loaded with joblib from ``artifact`` at fit; explanations make no
    remote call, and a batch of rows is one call of the tree algorithm. Values are of
    the raw output (log-odds for sklearn gradient boosting); a single-output binary
    model is explained for its positive class (index 1). For each row the result equals
    ``TreeShap(model, model_output="raw", feature_names, category_map,
    task="classification", seed=seed).fit()`` followed by ``explain(row)``.
    """

    method = "tree_shap"

    def __init__(
        self, model: str, schema: FeatureSchema, *, artifact: Path, seed: int = 0,
        reasons: Any = None,
    ) -> None:
        super().__init__(model, schema, ReasonWriter(schema) if reasons is None else reasons)
        self.artifact = Path(artifact)
        self.seed = seed
        self._tree: Any = None
        self._shap: TreeShap | None = None

    def fit(self, reference: np.ndarray) -> None:
        """Load the tree model; ``reference`` is not used (path-dependent Tree SHAP)."""
        self._tree = joblib.load(self.artifact)
        shap = TreeShap(
            self._tree,
            model_output="raw",
            feature_names=list(self.schema.feature_names),
            categorical_names=categorical(self.schema),
            task="classification",
            seed=self.seed,
        )
        with _quiet_about_scalar_output():
            self._shap = shap.fit()

    def parameters(self) -> dict[str, Any]:
        return {"model_output": "raw", "feature_perturbation": "tree_path_dependent"}

    def explain_batch(
        self, rows: np.ndarray, predict_fn: PredictFn | None = None
    ) -> list[Explanation]:
        """Explain every row with one call of Tree SHAP."""
        if self._shap is None:
            raise ExplainerError("tree_shap explainer is not fitted")
        rows = self.check_rows(rows)
        np.random.seed(self.seed)
        data = self._shap.explain(rows).data
        values = np.stack(
            [np.asarray(v, dtype=np.float64).reshape(len(rows), -1) for v in data["shap_values"]],
            axis=1,
        )
        expected = np.atleast_1d(np.asarray(data["expected_value"], dtype=np.float64))
        raw = np.asarray(data["raw"]["raw_prediction"], dtype=np.float64).reshape(len(rows), -1)
        probabilities = np.asarray(self._tree.predict_proba(rows), dtype=np.float64)
        return [
            shap_explanation(
                self, rows[i : i + 1], [float(p) for p in probabilities[i]], values[i], expected,
                1 if raw.shape[1] == 1 else int(np.argmax(raw[i])), "log-odds",
            )
            for i in range(len(rows))
        ]


def _anchor_summary(class_name: str, anchor: list[str], precision: float, coverage: float) -> str:
    if not anchor:
        return (
            f'The model predicts "{class_name}" for {precision:.0%} of similar applicants '
            "whatever their attributes, so no single condition explains this decision."
        )
    share = f"{coverage:.0%}" if coverage >= 0.01 else "fewer than 1%"
    return (
        f'The model predicts "{class_name}" because {" and ".join(anchor)}: it gives the same '
        f"answer for {precision:.0%} of applicants meeting these conditions, which apply to "
        f"{share} of the reference population."
    )


def check_reference(reference: np.ndarray, schema: FeatureSchema) -> None:
    """Raise ExplainerError unless ``reference`` is ``[rows >= 1, n_features]``."""
    n = len(schema.feature_names)
    if reference.ndim != 2 or reference.shape[1] != n or reference.shape[0] == 0:
        raise ExplainerError(f"reference must be [rows, {n}], got shape {reference.shape}")
