"""Input domain checks: ranges, category codes and NaN per column, each refusal naming
input, row, feature, column and value; schema files are validated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from gateway.domain import InputDomain, InputSchemaSpec, load_input_schema
from protos.errors import InvalidRequestError
from protos.protocol import InferenceRequest, Tensor

SCHEMA = InputSchemaSpec.model_validate({"features": [
    {"name": "status", "column": 0, "categories": [0, 1, 2, 3]},
    {"name": "duration", "column": 1, "min": 1, "max": 120},
    {"name": "amount", "column": 2, "min": 0, "nan": True},
]})


def _request(rows: list[list[float]], name: str = "input") -> InferenceRequest:
    data = np.asarray(rows, np.float32)
    return InferenceRequest("credit", [Tensor(name, "FP32", list(data.shape), data)])


@pytest.mark.parametrize(("rows", "message"), [
    ([[0, 12, 100], [4, 12, 100]],
     "input 'input' row 1: feature 'status' (column 0) is 4, not one of its categories "
     "[0, 1, 2, 3]"),
    ([[1, 0.5, 100]], "feature 'duration' (column 1) is 0.5, below its minimum 1"),
    ([[1, 121, 100]], "feature 'duration' (column 1) is 121, above its maximum 120"),
    ([[1, float("nan"), 100]], "feature 'duration' (column 1) is NaN, which its domain"),
    ([[1, float("inf"), 100]], "feature 'duration' (column 1) is inf, above its maximum"),
    ([[1.5, 12, 100]], "feature 'status' (column 0) is 1.5, not one of its categories"),
])
def test_out_of_domain_values_are_named(rows, message) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        InputDomain(SCHEMA).check(_request(rows))


def test_in_domain_rows_pass_and_nan_where_allowed() -> None:
    InputDomain(SCHEMA).check(_request([[0, 1, 0, 7], [3, 120, float("nan"), -5]]))


def test_too_few_columns_or_missing_input() -> None:
    with pytest.raises(InvalidRequestError, match="has 2 columns; its input_schema checks "
                                                  "column 2"):
        InputDomain(SCHEMA).check(_request([[0, 1]]))
    named = InputSchemaSpec(input="features", features=SCHEMA.features)
    with pytest.raises(InvalidRequestError, match="input 'features' is missing"):
        InputDomain(named).check(_request([[0, 1, 2]]))


def test_schema_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min 5.0 is above max 1.0"):
        InputSchemaSpec.model_validate({"features": [{"name": "a", "column": 0, "min": 5,
                                                      "max": 1}]})
    with pytest.raises(ValueError, match=r"more than one feature: \[0\]"):
        InputSchemaSpec.model_validate({"features": [{"name": "a", "column": 0},
                                                     {"name": "b", "column": 0}]})
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"features": [{"name": "a", "column": 0, "mx": 1}]}))
    with pytest.raises(ValueError, match="schema.json is invalid: features.0.mx"):
        load_input_schema(path)
    path.write_text(json.dumps(SCHEMA.model_dump()))
    assert load_input_schema(path) == SCHEMA
    with pytest.raises(ValueError, match="not found"):
        load_input_schema(tmp_path / "nope.json")
