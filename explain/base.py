"""The explainer interface and the explanation record.

An :class:`Explainer` is fitted once on reference rows and then explains one decision at
a time: it receives the row the model saw and a *batch* prediction function, and returns
an :class:`Explanation` written in the data's own terms (category names, not codes) with
a one-sentence summary a loan officer or a regulator can read.

Nothing here knows about a transport: the prediction function may call a local model or
a remote OIP server (see :mod:`explain.client`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["PredictFn", "FeatureSchema", "Explanation", "Explainer", "ExplainerError"]

PredictFn = Callable[[np.ndarray], np.ndarray]
"""Batch prediction: ``X`` float32 ``[k, n_features]`` -> ``[k, n_classes]`` probabilities
(or ``[k]`` class indices). Called once per batch of perturbed rows, never once per row."""


class ExplainerError(Exception):
    """An explainer was misused (not fitted, wrong row shape) or its method failed."""


@dataclass(slots=True)
class FeatureSchema:
    """How the model's input columns are encoded.

    Attributes:
        feature_names: one name per column, in column order.
        category_map: column index -> category names; the column holds the integer
            code (index into this list) of the category.
        class_names: name of each class (probability column), or ``None``.
    """

    feature_names: list[str]
    category_map: dict[int, list[str]] = field(default_factory=dict)
    class_names: list[str] | None = None

    def value(self, column: int, code: float) -> str | float:
        """The value of ``column`` in the data's terms: a category name or the number."""
        categories = self.category_map.get(column)
        if categories is None:
            return float(code)
        index = int(round(float(code)))
        return categories[index] if 0 <= index < len(categories) else f"<unknown code {index}>"

    def condition(self, column: int, code: float) -> str:
        """``name = "category"`` or ``name = 24`` for the value of ``column``."""
        value = self.value(column, code)
        shown = f'"{value}"' if isinstance(value, str) else f"{value:g}"
        return f"{self.feature_names[column]} = {shown}"

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (``"class 1"`` when classes are unnamed)."""
        if self.class_names and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"


@dataclass(slots=True)
class Explanation:
    """One explained decision; JSON-able through :meth:`to_dict`.

    Attributes:
        method: ``anchor_tabular``, ``kernel_shap`` or ``tree_shap``.
        model: key of the model whose prediction is explained.
        prediction: the model output for the row (class probabilities, or a class index;
            for tree_shap the tree model's raw score, in log-odds).
        explained_class: index of the class the explanation is about (the predicted class;
            for single-output tree models the positive class).
        explained_class_name: its name from the schema.
        summary: one plain sentence.
        feature_values: the explained row, column name -> category name or number.
        anchor: anchor_tabular: conditions that, when they hold, keep the prediction,
            e.g. ``status_of_existing_checking_account = "... < 0 DM"``,
            ``duration_in_month > 24.00``.
        anchor_features: anchor_tabular: column index of each condition.
        precision: anchor_tabular: share of perturbed rows meeting the anchor that get
            the same prediction.
        coverage: anchor_tabular: share of reference rows the anchor applies to.
        shap_values: SHAP methods: column name -> contribution to the explained class's
            output (in ``output_units``), in column order.
        expected_value: SHAP methods: the explained class's average output on the
            background (the baseline the contributions add to).
        output_units: SHAP methods: ``probability`` or ``log-odds``.
    """

    method: str
    model: str
    prediction: list[float] | float | int
    explained_class: int
    explained_class_name: str
    summary: str
    feature_values: dict[str, str | float]
    anchor: list[str] | None = None
    anchor_features: list[int] | None = None
    precision: float | None = None
    coverage: float | None = None
    shap_values: dict[str, float] | None = None
    expected_value: float | None = None
    output_units: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The explanation as plain JSON types, without the fields its method leaves unset."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class Explainer(abc.ABC):
    """Explains single decisions of one model.

    Subclasses set ``method``. ``fit`` is called once (per worker process) before
    ``explain``; ``explain`` may be called many times, each call independent of the
    previous ones (randomness is re-seeded per call).
    """

    method: str = ""

    def __init__(self, model: str, schema: FeatureSchema) -> None:
        self.model = model
        self.schema = schema

    @abc.abstractmethod
    def fit(self, reference: np.ndarray) -> None:
        """Fit on reference rows, float32 ``[rows, n_features]`` (encoded like requests).

        Raises:
            ExplainerError: the reference does not match the schema.
        """

    @abc.abstractmethod
    def explain(self, row: np.ndarray, predict_fn: PredictFn | None) -> Explanation:
        """Explain the model's prediction for ``row``.

        Args:
            row: float32 ``[1, n_features]``.
            predict_fn: batch prediction of the model; ``None`` for methods that run the
                model locally (tree_shap).

        Raises:
            ExplainerError: not fitted, or ``row`` has the wrong shape.
            Exception: whatever ``predict_fn`` or the method raises, unchanged.
        """

    def check_row(self, row: np.ndarray) -> np.ndarray:
        """``row`` as float32 ``[1, n_features]``.

        Raises:
            ExplainerError: wrong number of columns or more than one row.
        """
        row = np.asarray(row, dtype=np.float32)
        if row.ndim == 1:
            row = row[None, :]
        n = len(self.schema.feature_names)
        if row.shape != (1, n):
            raise ExplainerError(f"expected one row of {n} features, got shape {row.shape}")
        return row

    def feature_values(self, row: np.ndarray) -> dict[str, str | float]:
        """Column name -> value in the data's terms for a ``[1, n]`` row."""
        names = self.schema.feature_names
        return {name: self.schema.value(i, row[0, i]) for i, name in enumerate(names)}
