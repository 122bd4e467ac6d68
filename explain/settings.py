"""Settings of the explanation of a deployment's decisions.

One :class:`ExplainSpec` per deployment says which method explains its decisions, what
data the explainer is fitted on, how the data is encoded (so explanations speak in the
data's own terms), and the budget (sampling, queue, deadline, processes) of the worker
that runs explanations off the event loop. Validation errors name the offending field.

:meth:`ExplainSpec.schema` and :meth:`ExplainSpec.load_reference` read files; call them
once at startup (the worker does) so that a bad path fails the deployment, not a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from explain.base import FeatureSchema

__all__ = ["ExplainSpec", "ExplainMethod", "ExplainMode"]

ExplainMethod = Literal["anchor_tabular", "kernel_shap", "tree_shap"]
ExplainMode = Literal["inline", "async", "off"]

NonEmptyStr = Annotated[str, Field(min_length=1)]
CategoryNames = Annotated[list[NonEmptyStr], Field(min_length=1)]

_DATA_SUFFIXES = (".npy", ".csv")


class ExplainSpec(BaseModel):
    """How a deployment's decisions are explained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: ExplainMethod = Field(
        description="Explanation method: 'anchor_tabular' (Alibi anchors: if-then rules with "
        "precision and coverage), 'kernel_shap' (model-agnostic SHAP values) or 'tree_shap' "
        "(exact SHAP values of a local tree model)."
    )
    mode: ExplainMode = Field(
        default="async",
        description="'inline': the response waits for the explanation; 'async': the "
        "explanation is attached to the decision record when ready; 'off': no explanation.",
    )
    reference_data: Path | None = Field(
        default=None,
        description="Path of a .npy or .csv file of encoded rows (one row per applicant, the "
        "model's input columns) that the explainer is fitted on. Required by anchor_tabular "
        "and kernel_shap; tree_shap uses the trees' own path statistics.",
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
        "{'<column index>': [category names]}, 'class_names': [...] (optional)}. "
        "Alternative to feature_names / category_map / class_names.",
    )
    output: NonEmptyStr = Field(
        default="probabilities",
        description="Name of the model output explained: a [batch, classes] probability "
        "output (e.g. 'probabilities') or, for anchor_tabular only, a [batch] class output "
        "(e.g. 'label').",
    )
    sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Fraction of decisions explained (0..1)."
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
    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes that compute explanations."
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
        description="tree_shap: model key -> path of a joblib-saved tree model (for example "
        "sklearn GradientBoostingClassifier) explained locally.",
    )

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
        if self.method == "tree_shap" and not self.model_artifact:
            raise ValueError("tree_shap needs model_artifact (model key -> joblib tree model path)")
        if self.method != "tree_shap" and self.reference_data is None:
            raise ValueError(f"{self.method} needs reference_data (a .npy or .csv of encoded rows)")
        if self.method == "kernel_shap" and self.output == "label":
            raise ValueError("kernel_shap needs a probability output, not 'label'")
        if self.reference_data is not None and self.reference_data.suffix not in _DATA_SUFFIXES:
            raise ValueError(
                f"reference_data must be a .npy or .csv file, got {self.reference_data}"
            )
        return self

    def schema(self) -> FeatureSchema:
        """The feature names, categories and class names, read from ``encoding`` if given.

        Raises:
            OSError: the encoding file cannot be read.
            ValueError: the encoding file is not valid JSON of the documented shape.
        """
        if self.encoding is None:
            return FeatureSchema(
                list(self.feature_names or []), dict(self.category_map or {}), self.class_names
            )
        raw = orjson.loads(self.encoding.read_bytes())
        try:
            names = [str(n) for n in raw["feature_names"]]
            categorical = {
                int(k): [str(c) for c in v] for k, v in raw.get("categorical", {}).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.encoding}: not an encoding.json ({exc!r})") from exc
        classes = raw.get("class_names")
        return FeatureSchema(names, categorical, [str(c) for c in classes] if classes else None)

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


def _header_lines(path: Path) -> int:
    """1 when the first line of a CSV is not numeric (a header), else 0."""
    with path.open() as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
    except ValueError:
        return 1
    return 0
