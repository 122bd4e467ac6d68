"""Explainers built on Alibi 0.9.4 (Apache-2.0; later Alibi releases are not).

Each class wraps one Alibi explainer and adds three things only: a batch prediction
function swapped in per call (so one fitted explainer serves many requests), a fixed seed
reset before every call (so the same model, row and seed always give the same result, the
one Alibi gives when called directly), and rendering in the data's own terms.

Sources: Ribeiro, Singh, Guestrin, "Anchors: High-Precision Model-Agnostic Explanations",
AAAI 2018; Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions"
(Kernel SHAP), NeurIPS 2017; Lundberg et al., "From local explanations to global
understanding with explainable AI for trees" (Tree SHAP), Nature MI 2020.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from alibi.explainers import AnchorTabular, KernelShap, TreeShap

from explain.base import Explainer, ExplainerError, Explanation, FeatureSchema, PredictFn
from explain.settings import ExplainSpec

__all__ = [
    "AnchorTabularExplainer",
    "KernelShapExplainer",
    "TreeShapExplainer",
    "explainer_for",
]

_TOP_ATTRIBUTES = 3


class _PredictorSlot:
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


def _categorical(schema: FeatureSchema) -> dict[int, list[str]] | None:
    return dict(schema.category_map) or None


def _probabilities(predict_fn: PredictFn, row: np.ndarray) -> list[float] | int:
    out = np.asarray(predict_fn(row))
    return int(out.reshape(-1)[0]) if out.ndim == 1 else [float(v) for v in out[0]]


class AnchorTabularExplainer(Explainer):
    """Anchors of Alibi's ``AnchorTabular`` (categorical columns as integer codes).

    The result equals ``AnchorTabular(predict_fn, feature_names, category_map,
    seed=seed).fit(reference)`` followed by ``np.random.seed(seed)`` and
    ``explain(row[0], threshold=..., batch_size=..., coverage_samples=...)``.
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
    ) -> None:
        super().__init__(model, schema)
        self.seed = seed
        self.threshold = threshold
        self.batch_size = batch_size
        self.coverage_samples = coverage_samples
        self._slot = _PredictorSlot(label_output)
        self._anchor: AnchorTabular | None = None

    def fit(self, reference: np.ndarray) -> None:
        _check_reference(reference, self.schema)
        anchor = AnchorTabular(
            self._slot, list(self.schema.feature_names), _categorical(self.schema), seed=self.seed
        )
        self._anchor = anchor.fit(np.asarray(reference, dtype=np.float32))

    def explain(self, row: np.ndarray, predict_fn: PredictFn | None) -> Explanation:
        if self._anchor is None:
            raise ExplainerError("anchor_tabular explainer is not fitted")
        if predict_fn is None:
            raise ExplainerError("anchor_tabular needs a predict_fn")
        row = self.check_row(row)
        with self._slot.bound(predict_fn):
            prediction = _probabilities(predict_fn, row)
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
        return Explanation(
            method=self.method,
            model=self.model,
            prediction=prediction,
            explained_class=label,
            explained_class_name=name,
            summary=_anchor_summary(name, anchor, precision, coverage),
            feature_values=self.feature_values(row),
            anchor=anchor,
            anchor_features=features,
            precision=precision,
            coverage=coverage,
        )

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


class KernelShapExplainer(Explainer):
    """SHAP values of Alibi's ``KernelShap`` for the predicted class.

    The background is the reference summarised to ``background_size`` rows (shap's
    sampling with its fixed random_state). The model is first called, on the
    background, by the first ``explain`` (fitting needs the model; the result is kept).
    The result equals ``KernelShap(predict_fn, link, feature_names, category_map,
    seed=seed).fit(reference, summarise_background=True, n_background_samples=...)``
    followed by ``np.random.seed(seed)`` and ``explain(row, nsamples=...)``.
    """

    method = "kernel_shap"

    def __init__(
        self,
        model: str,
        schema: FeatureSchema,
        *,
        seed: int = 0,
        nsamples: int | str = "auto",
        link: str = "identity",
        background_size: int = 100,
    ) -> None:
        super().__init__(model, schema)
        self.seed = seed
        self.nsamples = nsamples
        self.link = link
        self.background_size = background_size
        self._slot = _PredictorSlot(label_output=False)
        self._reference: np.ndarray | None = None
        self._shap: KernelShap | None = None

    def fit(self, reference: np.ndarray) -> None:
        _check_reference(reference, self.schema)
        self._reference = np.asarray(reference, dtype=np.float32)
        self._shap = None

    def explain(self, row: np.ndarray, predict_fn: PredictFn | None) -> Explanation:
        if self._reference is None:
            raise ExplainerError("kernel_shap explainer is not fitted")
        if predict_fn is None:
            raise ExplainerError("kernel_shap needs a predict_fn")
        row = self.check_row(row)
        with self._slot.bound(predict_fn):
            shap = self._fitted_shap()
            prediction = _probabilities(predict_fn, row)
            np.random.seed(self.seed)
            result = shap.explain(row, nsamples=self.nsamples, silent=True)
        label = int(result.data["raw"]["prediction"][0])
        units = "probability" if self.link == "identity" else "log-odds"
        return _shap_explanation(self, row, prediction, result.data, label, units)

    def _fitted_shap(self) -> KernelShap:
        if self._shap is None:
            shap = KernelShap(
                self._slot,
                link=self.link,
                feature_names=list(self.schema.feature_names),
                categorical_names=_categorical(self.schema),
                task="classification",
                seed=self.seed,
            )
            shap.fit(
                self._reference,
                summarise_background=True,
                n_background_samples=self.background_size,
            )
            self._shap = shap
        return self._shap


class TreeShapExplainer(Explainer):
    """Exact (path-dependent) SHAP values of Alibi's ``TreeShap`` on a local tree model.

    The model is loaded with joblib from ``artifact`` at fit; explanations make no
    remote call. Values are of the raw output (log-odds for sklearn gradient boosting);
    a single-output binary model is explained for its positive class (index 1). The
    result equals ``TreeShap(model, model_output="raw", feature_names, category_map,
    task="classification", seed=seed).fit()`` followed by ``explain(row)``.
    """

    method = "tree_shap"

    def __init__(self, model: str, schema: FeatureSchema, *, artifact: Path, seed: int = 0) -> None:
        super().__init__(model, schema)
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
            categorical_names=_categorical(self.schema),
            task="classification",
            seed=self.seed,
        )
        self._shap = shap.fit()

    def explain(self, row: np.ndarray, predict_fn: PredictFn | None = None) -> Explanation:
        if self._shap is None:
            raise ExplainerError("tree_shap explainer is not fitted")
        row = self.check_row(row)
        np.random.seed(self.seed)
        result = self._shap.explain(row)
        raw = np.asarray(result.data["raw"]["raw_prediction"], dtype=float).reshape(1, -1)[0]
        label = 1 if raw.size == 1 else int(np.argmax(raw))
        prediction = _probabilities(self._tree.predict_proba, row)
        return _shap_explanation(self, row, prediction, result.data, label, "log-odds")


def _shap_explanation(
    explainer: Explainer,
    row: np.ndarray,
    prediction: list[float] | int,
    data: dict[str, Any],
    label: int,
    units: str,
) -> Explanation:
    """Build the SHAP explanation of output ``label`` (or the only output) from Alibi's data."""
    outputs = data["shap_values"]
    index = label if len(outputs) > 1 else 0
    values = np.asarray(outputs[index], dtype=float).reshape(-1)
    expected = float(np.atleast_1d(data["expected_value"])[index])
    names = explainer.schema.feature_names
    shap_values = {name: float(v) for name, v in zip(names, values, strict=True)}
    class_name = explainer.schema.class_name(label)
    summary = _shap_summary(explainer.schema, row, class_name, values, expected, units)
    return Explanation(
        method=explainer.method,
        model=explainer.model,
        prediction=prediction,
        explained_class=label,
        explained_class_name=class_name,
        summary=summary,
        feature_values=explainer.feature_values(row),
        shap_values=shap_values,
        expected_value=expected,
        output_units=units,
    )


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


def _shap_summary(
    schema: FeatureSchema,
    row: np.ndarray,
    class_name: str,
    values: np.ndarray,
    expected: float,
    units: str,
) -> str:
    top = np.argsort(-np.abs(values), kind="stable")[:_TOP_ATTRIBUTES]
    parts = [f"{schema.condition(int(i), row[0, int(i)])} ({values[i]:+.3f})" for i in top]
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
    total = expected + float(values.sum())
    return (
        f'The {units} of "{class_name}" is {total:.3f} against an average of {expected:.3f}; '
        f"the attributes that moved it most were {listed}."
    )


def _check_reference(reference: np.ndarray, schema: FeatureSchema) -> None:
    n = len(schema.feature_names)
    if reference.ndim != 2 or reference.shape[1] != n or reference.shape[0] == 0:
        raise ExplainerError(f"reference must be [rows, {n}], got shape {reference.shape}")


def explainer_for(spec: ExplainSpec, model: str, schema: FeatureSchema) -> Explainer:
    """The (unfitted) explainer ``spec`` asks for, for model key ``model``.

    Raises:
        ExplainerError: tree_shap and no ``model_artifact`` for ``model``.
    """
    if spec.method == "anchor_tabular":
        return AnchorTabularExplainer(
            model,
            schema,
            seed=spec.seed,
            threshold=spec.anchor_threshold,
            batch_size=spec.anchor_batch_size,
            coverage_samples=spec.anchor_coverage_samples,
            label_output=spec.output == "label",
        )
    if spec.method == "kernel_shap":
        return KernelShapExplainer(
            model,
            schema,
            seed=spec.seed,
            nsamples=spec.kernel_shap_nsamples,
            link=spec.kernel_shap_link,
            background_size=spec.background_size,
        )
    artifact = spec.model_artifact.get(model)
    if artifact is None:
        raise ExplainerError(f"tree_shap: no model_artifact for model {model!r}")
    return TreeShapExplainer(model, schema, artifact=artifact, seed=spec.seed)
