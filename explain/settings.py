"""Settings of the explanation of a deployment's decisions.

One :class:`ExplainSpec` per deployment says which method explains each model's decisions
(``method``, overridden per model by ``methods``), which decisions are explained
(``when``: refusals, as ``adverse`` defines them, all, or a sample), what data the
explainer is fitted on, how the data is encoded and worded (so explanations and their
reasons speak in the data's own terms), and the budget (queue, deadline, batch,
processes) of the worker that runs explanations off the event loop. Validation errors
name the offending field.

:meth:`ExplainSpec.schema` and :meth:`ExplainSpec.load_reference` read files; call them
once at startup (the worker does) so that a bad path fails the deployment, not a request.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from explain.base import FeatureSchema

__all__ = [
    "ExplainSpec",
    "AdverseSpec",
    "ExplainMethod",
    "ExplainMode",
    "ExplainWhen",
    "LOCAL_METHODS",
]

ExplainMethod = Literal["anchor_tabular", "kernel_shap", "linear_shap", "tree_shap"]
ExplainMode = Literal["inline", "async", "off"]
ExplainWhen = Literal["refusals", "all", "sample"]

LOCAL_METHODS: frozenset[str] = frozenset({"linear_shap", "tree_shap"})
"""Methods that explain a local copy of the model (``model_artifact``), with no model call."""

NonEmptyStr = Annotated[str, Field(min_length=1)]
CategoryNames = Annotated[list[NonEmptyStr], Field(min_length=1)]

_DATA_SUFFIXES = (".npy", ".csv")


class AdverseSpec(BaseModel):
    """Which outcome of the models is adverse (a refusal, which must be explained)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: NonEmptyStr = Field(
        default="label",
        description="Model output that carries the decision: a [batch] label output (its "
        "values are compared with 'values') or a [batch, classes] probability output (the "
        "index of its largest column is).",
    )
    values: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="Adverse label values, which are class indices (columns of the "
        "probability output): [0] for 'bad' when class_names are ['bad', 'good'].",
    )

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError(f"values must be distinct, got {values}")
        return values


class ExplainSpec(BaseModel):
    """How a deployment's decisions are explained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: ExplainMethod = Field(
        description="Explanation method of the models 'methods' does not name: "
        "'linear_shap' (exact SHAP values of a local linear model, closed form on its "
        "log-odds), 'tree_shap' (exact SHAP values of a local tree model), 'kernel_shap' "
        "(model-agnostic SHAP values, one model call per batch of decisions) or "
        "'anchor_tabular' (Alibi anchors: if-then rules with precision and coverage)."
    )
    methods: dict[NonEmptyStr, ExplainMethod] = Field(
        default_factory=dict,
        description="Model key -> explanation method of that model, for example "
        "{lr: linear_shap, gbm: tree_shap, mlp: kernel_shap}; other models use 'method'.",
    )
    when: ExplainWhen = Field(
        default="refusals",
        description="Which decisions are explained: 'refusals' (every decision whose "
        "outcome is adverse, see 'adverse'), 'all', or 'sample' (every adverse decision and "
        "a sample_rate share of the others). Giving sample_rate without when means "
        "'sample'.",
    )
    adverse: AdverseSpec = Field(
        default_factory=AdverseSpec,
        description="Which model outcome is adverse: reasons name what pushed toward it, "
        "and 'refusals' explains the decisions that have it.",
    )
    reasons_top_k: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Most reasons per explanation (adverse-action notices name up to four).",
    )
    mode: ExplainMode = Field(
        default="async",
        description="'inline': the response waits for the explanation; 'async': the "
        "explanation is attached to the decision record when ready; 'off': no explanation.",
    )
    reference_data: Path | None = Field(
        default=None,
        description="Path of a .npy or .csv file of encoded rows (one row per applicant, the "
        "model's input columns) that the explainer is fitted on. Required by anchor_tabular, "
        "kernel_shap and linear_shap (its mean is linear_shap's baseline); tree_shap uses "
        "the trees' own path statistics. Numeric reasons compare with its medians.",
    )
    reference_outcomes: Path | None = Field(
        default=None,
        description="Path of a .npy or .csv file with the outcome (label value) of each "
        "reference row, in the same order. Numeric reasons then compare the applicant's "
        "value with the median among the favourable (not adverse) reference rows, e.g. "
        "'above the median of 18 months among repaid loans'; without it, with the median "
        "of every reference row.",
    )
    feature_names: list[NonEmptyStr] | None = Field(
        default=None,
        min_length=1,
        description="Name of each input column, in column order. Give either "
        "feature_names (with category_map) or encoding.",
    )
    category_map: dict[Annotated[int, Field(ge=0)], CategoryNames] | None = Field(
        default=None,
        description="Column index -> category names of a categorical column; the column "
        "holds the integer code (position in this list) of the category.",
    )
    class_names: list[NonEmptyStr] | None = Field(
        default=None,
        min_length=2,
        description="Name of each class, in the order of the model's probability columns "
        "(for example ['bad', 'good']); used in summaries. Optional.",
    )
    encoding: Path | None = Field(
        default=None,
        description="Path of an encoding.json: {'feature_names': [...], 'categorical': "
        "{'<column index>': [category names]}, 'class_names': [...] (optional)} and, for "
        "reasons in words, optional 'descriptions', 'units', 'category_descriptions', "
        "'reason_codes', 'class_descriptions' and 'protected' (see "
        "explain.base.FeatureSchema.from_encoding). Alternative to feature_names / "
        "category_map / class_names (which give reasons in column names).",
    )
    output: NonEmptyStr = Field(
        default="probabilities",
        description="Name of the model output explained: a [batch, classes] probability "
        "output (e.g. 'probabilities') or, for anchor_tabular only, a [batch] class output "
        "(e.g. 'label').",
    )
    sample_rate: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="when: sample: share of the decisions that are not adverse that are "
        "explained (0..1). An ExplanationWorker used on its own keeps this share of the "
        "decisions it is given.",
    )
    max_queue: int = Field(
        default=64,
        ge=1,
        description="Most explanations pending at once (queued or running); beyond it a "
        "decision's explanation is skipped with reason 'queue full'.",
    )
    timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        description="Seconds from submission within which an explanation must finish; "
        "later ones fail with reason 'timeout'.",
    )
    inline_deadline_s: float | None = Field(
        default=None,
        gt=0.0,
        description="mode 'inline': seconds the response waits for its explanation before "
        "it is answered with {'status': 'pending'} (the explanation still finishes and is "
        "stored). Default: timeout_s. Per request: the parameter explanation_deadline_s.",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes that compute explanations."
    )
    max_batch: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Most pending decisions of one model explained together in one worker "
        "task: one model call for kernel_shap, one vectorised computation for linear_shap "
        "and tree_shap, one after the other for anchor_tabular.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        lt=2**32,
        description="Seed of numpy's random generator, reset before every explanation so "
        "that the same model, row and seed give the same explanation.",
    )
    anchor_threshold: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="anchor_tabular: minimum precision of an anchor (Alibi 'threshold').",
    )
    anchor_batch_size: int = Field(
        default=100,
        ge=1,
        description="anchor_tabular: perturbed rows per model call (Alibi 'batch_size').",
    )
    anchor_coverage_samples: int = Field(
        default=10_000,
        ge=1,
        description="anchor_tabular: rows drawn to estimate coverage (Alibi "
        "'coverage_samples'; no model calls).",
    )
    kernel_shap_nsamples: int | Literal["auto"] = Field(
        default="auto",
        description="kernel_shap: coalitions evaluated per explanation (shap 'nsamples'; "
        "'auto' is 2 * features + 2048). Each costs background_size model rows, sent in one "
        "batch.",
    )
    kernel_shap_link: Literal["identity", "logit"] = Field(
        default="identity",
        description="kernel_shap: 'identity' explains probabilities, 'logit' log-odds.",
    )
    background_size: int = Field(
        default=100,
        ge=1,
        description="kernel_shap: reference rows kept as background (sampled with shap's "
        "fixed random_state when larger).",
    )
    model_artifact: dict[NonEmptyStr, Path] = Field(
        default_factory=dict,
        description="tree_shap and linear_shap: model key -> path of the joblib-saved model "
        "explained locally: a tree ensemble (for example sklearn "
        "GradientBoostingClassifier) or a binary linear classifier (a LogisticRegression, "
        "alone or at the end of a Pipeline of column-wise transforms).",
    )

    @model_validator(mode="before")
    @classmethod
    def _sample_rate_means_sample(cls, data: Any) -> Any:
        if isinstance(data, dict) and "sample_rate" in data and "when" not in data:
            return {**data, "when": "sample"}
        return data

    @model_validator(mode="after")
    def _check_schema_source(self) -> ExplainSpec:
        inline = self.feature_names is not None
        if inline == (self.encoding is not None):
            raise ValueError("give exactly one of feature_names (with category_map) or encoding")
        if self.encoding is not None and (self.category_map or self.class_names):
            raise ValueError("category_map and class_names come from encoding when it is given")
        if inline and self.category_map:
            n = len(self.feature_names or [])
            bad = sorted(i for i in self.category_map if i >= n)
            if bad:
                raise ValueError(f"category_map columns {bad} are beyond the {n} feature_names")
        return self

    @model_validator(mode="after")
    def _check_method_needs(self) -> ExplainSpec:
        if self.method in LOCAL_METHODS and not self.model_artifact:
            raise ValueError(
                f"{self.method} needs model_artifact (model key -> joblib model path)"
            )
        if self.method != "tree_shap" and self.reference_data is None:
            raise ValueError(f"{self.method} needs reference_data (a .npy or .csv of encoded rows)")
        if self.method == "kernel_shap" and self.output == "label":
            raise ValueError("kernel_shap needs a probability output, not 'label'")
        for model, method in self.methods.items():
            self._check_model_method(model, method)
        for name in ("reference_data", "reference_outcomes"):
            path = getattr(self, name)
            if path is not None and path.suffix not in _DATA_SUFFIXES:
                raise ValueError(f"{name} must be a .npy or .csv file, got {path}")
        if self.reference_outcomes is not None and self.reference_data is None:
            raise ValueError("reference_outcomes needs reference_data")
        if self.when != "sample" and self.sample_rate != 1.0:
            raise ValueError(
                f"sample_rate {self.sample_rate} applies only with when: sample "
                f"(when is {self.when!r})"
            )
        return self

    def _check_model_method(self, model: str, method: str) -> None:
        if method in LOCAL_METHODS and model not in self.model_artifact:
            raise ValueError(
                f"methods.{model}: {method} needs model_artifact.{model} (a joblib model path)"
            )
        if method != "tree_shap" and self.reference_data is None:
            raise ValueError(f"methods.{model}: {method} needs reference_data")
        if method == "kernel_shap" and self.output == "label":
            raise ValueError(f"methods.{model}: kernel_shap needs a probability output, "
                             "not output: label")

    def method_for(self, model: str) -> ExplainMethod:
        """The method that explains ``model``'s decisions (``methods``, else ``method``)."""
        return self.methods.get(model, self.method)

    def check_models(self, models: Iterable[str]) -> None:
        """Check that every model of a deployment can be explained.

        Raises:
            ValueError: a model explained locally has no ``model_artifact`` (the message
                names the field).
        """
        for model in models:
            method = self.method_for(model)
            if method in LOCAL_METHODS and model not in self.model_artifact:
                raise ValueError(
                    f"model_artifact lacks {model!r} ({method} explains it locally)"
                )

    def resolved(self, base: Path) -> ExplainSpec:
        """This spec with every relative path (reference data and outcomes, encoding,
        model artifacts) taken relative to the directory ``base``."""

        def resolve(path: Path | None) -> Path | None:
            return base / path if path is not None and not path.is_absolute() else path

        return self.model_copy(update={
            "reference_data": resolve(self.reference_data),
            "reference_outcomes": resolve(self.reference_outcomes),
            "encoding": resolve(self.encoding),
            "model_artifact": {k: resolve(v) for k, v in self.model_artifact.items()},
        })

    def schema(self) -> FeatureSchema:
        """The feature names, categories, class names and wording, read from ``encoding``
        if given (see :meth:`FeatureSchema.from_encoding`).

        Raises:
            OSError: the encoding file cannot be read.
            ValueError: the encoding file is not valid JSON of the documented shape.
        """
        if self.encoding is None:
            return FeatureSchema(
                list(self.feature_names or []), dict(self.category_map or {}), self.class_names
            )
        try:
            return FeatureSchema.from_encoding(orjson.loads(self.encoding.read_bytes()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.encoding}: {exc}") from exc

    def load_reference(self) -> np.ndarray:
        """The reference rows as a float32 array ``[rows, features]``.

        A .csv may start with a header line (skipped when not numeric).

        Raises:
            OSError: the file cannot be read.
            ValueError: no reference_data, or the data is not a 2-D numeric table.
        """
        if self.reference_data is None:
            raise ValueError("no reference_data configured")
        path = self.reference_data
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            data = np.loadtxt(path, delimiter=",", skiprows=_header_lines(path), ndmin=2)
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] == 0:
            raise ValueError(f"{path}: reference data must be a non-empty 2-D table")
        return data

    def load_outcomes(self) -> np.ndarray | None:
        """The outcome of each reference row, int64 ``[rows]``, or ``None`` when not given.

        Raises:
            OSError: the file cannot be read.
            ValueError: not one integer per line (.csv) or a 1-D integer array (.npy).
        """
        path = self.reference_outcomes
        if path is None:
            return None
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            data = np.loadtxt(path, delimiter=",", skiprows=_header_lines(path), ndmin=1)
        data = np.asarray(data)
        if data.ndim != 1 or not np.all(np.equal(np.mod(data, 1), 0)):
            raise ValueError(f"reference_outcomes {path}: must be one integer label per row")
        return data.astype(np.int64)


def _header_lines(path: Path) -> int:
    """1 when the first line of a CSV is not numeric (a header), else 0."""
    with path.open() as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
    except ValueError:
        return 1
    return 0
