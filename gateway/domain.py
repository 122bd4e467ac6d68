"""Input domain checks: a deployment refuses input outside its models' domain before
any model sees it.

A deployment's optional ``input_schema`` (inline in the gateway config, or a JSON or
YAML file next to it) names, per column of one input tensor (the first by default),
the feature it holds and its domain: a closed range ``[min, max]``, a list of allowed
category codes, and whether NaN is allowed (not by default). A request with a value
outside the domain gets 400 naming the input, row, feature, column and value::

    input_schema:
      input: input                  # optional; default: the request's first input
      features:
        - {name: status_of_existing_checking_account, column: 0, categories: [0, 1, 2, 3]}
        - {name: duration_in_month, column: 1, min: 1, max: 120}
        - {name: credit_amount, column: 4, min: 0, max: 1000000, nan: true}

Infinities are outside every range and every category list; a feature with neither is
checked for NaN only. BYTES inputs are not checked (the schema describes numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protos.errors import InvalidRequestError
from protos.protocol import InferenceRequest, Tensor

__all__ = ["FeatureDomain", "InputSchemaSpec", "InputDomain", "load_input_schema"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureDomain(_Spec):
    """The domain of one feature: one column of the checked input."""

    name: str = Field(min_length=1, description="Feature name (used in error messages).")
    column: int = Field(ge=0, description="Column of the input tensor holding it (0-based).")
    min: float | None = Field(default=None, allow_inf_nan=False,
                              description="Smallest allowed value; None: no lower bound.")
    max: float | None = Field(default=None, allow_inf_nan=False,
                              description="Largest allowed value; None: no upper bound.")
    categories: list[float] | None = Field(
        default=None, min_length=1,
        description="Allowed category codes (for example [0, 1, 2, 3]); None: any number.",
    )
    nan: bool = Field(default=False, description="Whether NaN (a missing value) is allowed.")

    @model_validator(mode="after")
    def _range(self) -> FeatureDomain:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        return self


class InputSchemaSpec(_Spec):
    """Per-column domains of one input tensor of a deployment."""

    input: str | None = Field(
        default=None, description="Name of the input checked; None: the request's first.",
    )
    features: list[FeatureDomain] = Field(
        min_length=1, description="One domain per checked column; columns unique.",
    )

    @model_validator(mode="after")
    def _unique_columns(self) -> InputSchemaSpec:
        columns = [f.column for f in self.features]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"columns named by more than one feature: {repeated}")
        return self


def load_input_schema(path: Path) -> InputSchemaSpec:
    """Read an input schema from a JSON or YAML file.

    Raises:
        ValueError: missing file, not JSON/YAML, or not a valid schema (naming the field).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"input_schema file not found: {path}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"input_schema file {path} cannot be parsed: {exc}") from None
    try:
        return InputSchemaSpec.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"input_schema file {path} is invalid: {details}") from None


class InputDomain:
    """Checks requests against an :class:`InputSchemaSpec` (vectorised per request).

    Args:
        spec: the schema.
    """

    def __init__(self, spec: InputSchemaSpec) -> None:
        self.spec = spec
        features = spec.features
        self._columns = np.array([f.column for f in features], np.intp)
        self._width = int(self._columns.max()) + 1
        self._lo = np.array([-np.inf if f.min is None else f.min for f in features])
        self._hi = np.array([np.inf if f.max is None else f.max for f in features])
        self._nan = np.array([f.nan for f in features])
        self._categorical = [(i, np.array(f.categories)) for i, f in enumerate(features)
                             if f.categories is not None]

    def check(self, request: InferenceRequest) -> None:
        """Refuse a request with a value outside the domain.

        Raises:
            InvalidRequestError: the checked input is missing or too narrow, or a value
                is NaN where not allowed, outside its range, or not a category
                (naming input, row, feature, column and value).
        """
        tensor = self._tensor(request)
        if tensor is None or tensor.datatype == "BYTES":
            return
        rows = self._rows(tensor)
        values = rows[:, self._columns].astype(np.float64, copy=False)
        nan = np.isnan(values)
        bad = (nan & ~self._nan) | (values < self._lo) | (values > self._hi)
        for i, allowed in self._categorical:
            column = values[:, i]
            bad[:, i] |= ~(np.isin(column, allowed) | nan[:, i])
        if bad.any():
            row, i = (int(v[0]) for v in np.nonzero(bad))
            raise InvalidRequestError(self._message(tensor.name, row, i, float(values[row, i])))

    def _tensor(self, request: InferenceRequest) -> Tensor | None:
        if self.spec.input is None:
            return request.inputs[0] if request.inputs else None
        for tensor in request.inputs:
            if tensor.name == self.spec.input:
                return tensor
        raise InvalidRequestError(
            f"input {self.spec.input!r} is missing (the deployment's input_schema checks it)")

    def _rows(self, tensor: Tensor) -> np.ndarray:
        data = np.asarray(tensor.data)
        if data.size == 0:
            raise InvalidRequestError(
                f"input {tensor.name!r} is empty (shape {list(tensor.shape)})")
        rows = data.reshape(1, -1) if data.ndim < 2 else data.reshape(data.shape[0], -1)
        if rows.shape[1] < self._width:
            raise InvalidRequestError(
                f"input {tensor.name!r} has {rows.shape[1]} columns; its input_schema "
                f"checks column {self._width - 1}")
        return rows

    def _message(self, name: str, row: int, i: int, value: float) -> str:
        feature = self.spec.features[i]
        where = f"input {name!r} row {row}: feature {feature.name!r} (column {feature.column})"
        if np.isnan(value):
            return f"{where} is NaN, which its domain does not allow"
        shown = repr(int(value)) if value.is_integer() else repr(value)
        if value < self._lo[i]:
            return f"{where} is {shown}, below its minimum {_number(feature.min)}"
        if value > self._hi[i]:
            return f"{where} is {shown}, above its maximum {_number(feature.max)}"
        codes = [_number(c) for c in feature.categories or ()]
        listed = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")
        return f"{where} is {shown}, not one of its categories [{listed}]"


def _number(value: float | None) -> str:
    if value is None:
        return "none"
    return str(int(value)) if float(value).is_integer() else repr(value)
