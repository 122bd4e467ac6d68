"""The explainer interface and the explanation record.

An :class:`Explainer` is fitted once on reference rows and then explains one decision at
a time (or a batch of decisions at once): it receives the rows the model saw and a
*batch* prediction function, and returns :class:`Explanation` records written in the
data's own terms (category names, not codes), with a one-sentence summary and the
:class:`Reason` list a loan officer can send.

Nothing here knows about a transport: the prediction function may call a local model or
a remote OIP server (see :mod:`explain.client`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PredictFn",
    "FeatureSchema",
    "Reason",
    "Explanation",
    "Explainer",
    "ExplainerError",
    "BatchExplainer",
]

PredictFn = Callable[[np.ndarray], np.ndarray]
"""Batch prediction: ``X`` float32 ``[k, n_features]`` -> ``[k, n_classes]`` probabilities
(or ``[k]`` class indices). Called once per batch of perturbed rows, never once per row."""


class ExplainerError(Exception):
    """An explainer was misused (not fitted, wrong row shape) or its method failed."""


@dataclass(slots=True)
class FeatureSchema:
    """How the model's input columns are encoded, and how to speak of them.

    Attributes:
        feature_names: one name per column, in column order.
        category_map: column index -> category names; the column holds the integer
            code (index into this list) of the category.
        class_names: name of each class (probability column), or ``None``.
        descriptions: column index -> what the column is, in plain words ("Loan
            duration"); may hold ``{value}`` where the value goes ("{value} existing
            credits at this bank"). Default: the column name with spaces.
        units: column index -> unit of a numeric column ("months", "DM").
        category_descriptions: column index -> category name -> a phrase saying the
            applicant has that category ("Checking account balance below 0 DM").
        reason_codes: column index -> short stable reason code ("checking_account");
            default: the column name.
        class_descriptions: class index -> plural noun phrase for the reference rows of
            that class ("repaid loans"), as in "the median among repaid loans".
        protected: columns that are never given as a reason (prohibited bases such as
            sex, marital status, age, national origin); those that would have been among
            the reasons are reported apart as withheld reasons.
        favourable: categorical column index -> the categories that count in the
            applicant's favour ("all credits paid back duly"); such a value is never given
            as a reason for an adverse outcome.
        adverse_direction: numeric column index -> ``"higher"`` or ``"lower"``, the side
            of the reference median that counts against the applicant; a value on the
            other side (or at the median) is never given as a reason.
    """

    feature_names: list[str]
    category_map: dict[int, list[str]] = field(default_factory=dict)
    class_names: list[str] | None = None
    descriptions: dict[int, str] = field(default_factory=dict)
    units: dict[int, str] = field(default_factory=dict)
    category_descriptions: dict[int, dict[str, str]] = field(default_factory=dict)
    reason_codes: dict[int, str] = field(default_factory=dict)
    class_descriptions: dict[int, str] = field(default_factory=dict)
    protected: list[int] = field(default_factory=list)
    favourable: dict[int, list[str]] = field(default_factory=dict)
    adverse_direction: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_encoding(cls, raw: dict[str, Any]) -> FeatureSchema:
        """Read the content of an ``encoding.json``.

        Keys: ``feature_names`` (required), ``categorical`` (``{"<column>": [category
        names]}``), ``class_names``, and the wording, keyed by feature and class name:
        ``descriptions``, ``units``, ``category_descriptions`` (``{feature: {category:
        phrase}}``), ``reason_codes``, ``class_descriptions``, ``protected`` (a list
        of feature names), ``favourable`` (``{feature: [category names]}``) and
        ``adverse_direction`` (``{feature: "higher" | "lower"}``, numeric features only).
        Other keys are ignored.

        Raises:
            ValueError: a key has the wrong shape or names an unknown feature, category
                or class.
        """
        try:
            names = [str(n) for n in raw["feature_names"]]
            categorical = {
                int(k): [str(c) for c in v] for k, v in raw.get("categorical", {}).items()
            }
            classes = [str(c) for c in raw["class_names"]] if raw.get("class_names") else None
            schema = cls(names, categorical, classes)
            column = schema._column
            schema.descriptions = {column(k, "descriptions"): str(v)
                                   for k, v in raw.get("descriptions", {}).items()}
            schema.units = {column(k, "units"): str(v) for k, v in raw.get("units", {}).items()}
            schema.reason_codes = {column(k, "reason_codes"): str(v)
                                   for k, v in raw.get("reason_codes", {}).items()}
            for k, v in raw.get("category_descriptions", {}).items():
                index = column(k, "category_descriptions")
                schema.category_descriptions[index] = schema._categories(index, v)
            schema.class_descriptions = {
                schema._class(k): str(v) for k, v in raw.get("class_descriptions", {}).items()
            }
            schema.protected = sorted(column(k, "protected") for k in raw.get("protected", []))
            for k, v in raw.get("favourable", {}).items():
                index = column(k, "favourable")
                listed = {str(c): "" for c in v}
                schema._categories(index, listed, "favourable")
                schema.favourable[index] = list(listed)
            for k, v in raw.get("adverse_direction", {}).items():
                index = column(k, "adverse_direction")
                if index in categorical or v not in ("higher", "lower"):
                    raise ValueError(f"adverse_direction.{k}: {v!r} is not 'higher' or "
                                     "'lower' of a numeric feature")
                schema.adverse_direction[index] = str(v)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an encoding.json ({exc!r})") from exc
        return schema

    def _column(self, name: str, key: str) -> int:
        try:
            return self.feature_names.index(name)
        except ValueError:
            raise ValueError(f"{key}: unknown feature {name!r}") from None

    def _categories(self, column: int, phrases: dict[str, Any],
                    key: str = "category_descriptions") -> dict[str, str]:
        known = self.category_map.get(column, [])
        unknown = sorted(set(phrases) - set(known))
        if unknown:
            name = self.feature_names[column]
            raise ValueError(f"{key}.{name}: unknown categories {unknown}")
        return {str(k): str(v) for k, v in phrases.items()}

    def _class(self, name: str) -> int:
        if not self.class_names or name not in self.class_names:
            raise ValueError(f"class_descriptions: unknown class {name!r}")
        return self.class_names.index(name)

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

    def description(self, column: int) -> str:
        """What ``column`` is, in plain words (its name with spaces when undescribed)."""
        text = self.descriptions.get(column)
        return text if text else self.feature_names[column].replace("_", " ").capitalize()

    def reason_code(self, column: int) -> str:
        """The reason code of ``column`` (its name when none is given)."""
        return self.reason_codes.get(column) or self.feature_names[column]


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason for an adverse outcome, in words a loan officer can send.

    Attributes:
        feature: the column's name.
        code: short stable reason code (the schema's, e.g. ``checking_account``).
        sentence: one plain sentence, e.g. "Checking account balance below 0 DM".
        contribution: how far the feature pushed toward the adverse outcome (signed; SHAP
            methods: in the explanation's ``output_units``; anchor_tabular: the rise in
            precision when the condition joined the anchor).
        value: the applicant's value in the data's terms (category name or number).
    """

    feature: str
    code: str
    sentence: str
    contribution: float
    value: str | float


@dataclass(slots=True)
class Explanation:
    """One explained decision; JSON-able through :meth:`to_dict`.

    Attributes:
        method: ``anchor_tabular``, ``kernel_shap``, ``linear_shap`` or ``tree_shap``.
        model: key of the model whose prediction is explained.
        prediction: the model output for the row (class probabilities, or a class index).
        explained_class: index of the class the explanation is about (the predicted class;
            for single-output models, tree_shap and linear_shap, the positive class 1).
        explained_class_name: its name from the schema.
        summary: one plain sentence.
        feature_values: the explained row, column name -> category name or number.
        reasons: up to ``top_k`` features that pushed toward the adverse outcome, the
            strongest first (empty when nothing did, or, for anchors, when the decision
            is not adverse).
        withheld_reasons: protected features (see :class:`FeatureSchema`) that would have
            been among the reasons; never sent to an applicant, kept for review.
        contrary_reasons: features that pushed toward the adverse outcome although the
            applicant's value counts in their favour (a favourable category, or a numeric
            value on the favourable side of the median; see :class:`FeatureSchema`), in
            the order they would have taken among the reasons; never sent to an applicant
            as reasons, kept for review.
        provenance: what produced this explanation (see :mod:`explain.provenance`).
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
    reasons: list[Reason] = field(default_factory=list)
    withheld_reasons: list[Reason] | None = None
    contrary_reasons: list[Reason] | None = None
    provenance: dict[str, Any] | None = None
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
    """Explains decisions of one model.

    Subclasses set ``method``. ``fit`` is called once (per worker process) before
    ``explain``; ``explain`` may be called many times, each call independent of the
    previous ones (randomness is re-seeded per call). ``explain_batch`` explains several
    rows at once; methods that can share work between rows (one model call, one
    vectorised computation) override it, with results equal to ``explain`` row by row
    (:class:`BatchExplainer` implements ``explain`` as a batch of one).

    Args:
        model: key of the model explained.
        schema: the input encoding and its wording.
        reasons: the :class:`explain.reasons.ReasonWriter` that words the reasons
            (subclasses default it to a writer of ``schema`` with no reference
            statistics, adverse class 0, top 4).
    """

    method: str = ""

    def __init__(self, model: str, schema: FeatureSchema, reasons: Any) -> None:
        self.model = model
        self.schema = schema
        self.reasons = reasons

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
                model locally (tree_shap, linear_shap).

        Raises:
            ExplainerError: not fitted, or ``row`` has the wrong shape.
            Exception: whatever ``predict_fn`` or the method raises, unchanged.
        """

    def explain_batch(self, rows: np.ndarray, predict_fn: PredictFn | None) -> list[Explanation]:
        """Explain each of ``rows``, float32 ``[k, n_features]``; same errors as ``explain``."""
        rows = self.check_rows(rows)
        return [self.explain(rows[i : i + 1], predict_fn) for i in range(len(rows))]

    def parameters(self) -> dict[str, Any]:
        """The method's settings that shape its results (recorded in provenance)."""
        return {}

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

    def check_rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as float32 ``[k, n_features]``, k >= 1.

        Raises:
            ExplainerError: wrong number of columns, or no row.
        """
        rows = np.asarray(rows, dtype=np.float32)
        n = len(self.schema.feature_names)
        if rows.ndim != 2 or rows.shape[1] != n or rows.shape[0] == 0:
            raise ExplainerError(f"expected rows of {n} features, got shape {rows.shape}")
        return rows

    def feature_values(self, row: np.ndarray) -> dict[str, str | float]:
        """Column name -> value in the data's terms for a ``[1, n]`` row."""
        names = self.schema.feature_names
        return {name: self.schema.value(i, row[0, i]) for i, name in enumerate(names)}


class BatchExplainer(Explainer):
    """An explainer whose work is done for many rows at once (one model call, one
    vectorised computation): it implements :meth:`explain_batch`, and :meth:`explain`
    is that of one row."""

    def explain(self, row: np.ndarray, predict_fn: PredictFn | None = None) -> Explanation:
        """See :meth:`Explainer.explain`."""
        return self.explain_batch(self.check_row(row), predict_fn)[0]

    @abc.abstractmethod
    def explain_batch(self, rows: np.ndarray, predict_fn: PredictFn | None) -> list[Explanation]:
        """See :meth:`Explainer.explain_batch`."""
