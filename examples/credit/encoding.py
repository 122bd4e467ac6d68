"""The published encoding of the German credit data for the credit example models.

Each of the 20 attributes becomes one FP32 column, in CSV order: a numeric attribute
as its value, a categorical attribute as the index of its category in the fixed,
sorted category list :data:`CATEGORIES`. All three credit models (``lr``, ``gbm``,
``mlp``) take this ``input`` tensor, FP32 ``[-1, 20]``; explainers read the same
encoding from ``encoding.json`` to turn columns back into named attributes.

The encoding also publishes each column's domain (:data:`NUMERIC_DOMAINS` and the
category codes): :func:`input_schema` is what a gateway deployment's ``input_schema``
reads (``input_schema.json``), so a value the models were never meant to see is refused
before any of them sees it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FEATURE_NAMES",
    "CATEGORIES",
    "CATEGORICAL_INDICES",
    "NUMERIC_INDICES",
    "LABEL",
    "LABEL_COLUMN",
    "DATA_CSV",
    "NUMERIC_DOMAINS",
    "input_schema",
    "write_input_schema",
    "encoding_spec",
    "encode_frame",
    "encode_rows",
    "load_frame",
    "write_encoding",
]

DATA_CSV = Path(__file__).parent / "data" / "german_credit.csv"
LABEL_COLUMN = "creditability"
LABEL = {1: "good", 0: "bad"}

FEATURE_NAMES: list[str] = [
    "status_of_existing_checking_account",
    "duration_in_month",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings_account_and_bonds",
    "present_employment_since",
    "installment_rate_in_percentage_of_disposable_income",
    "personal_status_and_sex",
    "other_debtors_or_guarantors",
    "present_residence_since",
    "property",
    "age_in_years",
    "other_installment_plans",
    "housing",
    "number_of_existing_credits_at_this_bank",
    "job",
    "number_of_people_being_liable_to_provide_maintenance_for",
    "telephone",
    "foreign_worker",
]

CATEGORIES: dict[str, list[str]] = {
    "status_of_existing_checking_account": [
        "... < 0 DM",
        "... >= 200 DM / salary assignments for at least 1 year",
        "0 <= ... < 200 DM",
        "no checking account",
    ],
    "credit_history": [
        "all credits at this bank paid back duly",
        "critical account/ other credits existing (not at this bank)",
        "delay in paying off in the past",
        "existing credits paid back duly till now",
        "no credits taken/ all credits paid back duly",
    ],
    "purpose": [
        "business", "car (new)", "car (used)", "domestic appliances", "education",
        "furniture/equipment", "others", "radio/television", "repairs", "retraining",
    ],
    "savings_account_and_bonds": [
        "... < 100 DM",
        "... >= 1000 DM",
        "100 <= ... < 500 DM",
        "500 <= ... < 1000 DM",
        "unknown/ no savings account",
    ],
    "present_employment_since": [
        "... < 1 year",
        "... >= 7 years",
        "1 <= ... < 4 years",
        "4 <= ... < 7 years",
        "unemployed",
    ],
    "personal_status_and_sex": [
        "female : divorced/separated/married",
        "male : divorced/separated",
        "male : married/widowed",
        "male : single",
    ],
    "other_debtors_or_guarantors": ["co-applicant", "guarantor", "none"],
    "property": [
        "building society savings agreement/ life insurance",
        "car or other, not in attribute Savings account/bonds",
        "real estate",
        "unknown / no property",
    ],
    "other_installment_plans": ["bank", "none", "stores"],
    "housing": ["for free", "own", "rent"],
    "job": [
        "management/ self-employed/ highly qualified employee/ officer",
        "skilled employee / official",
        "unemployed/ unskilled - non-resident",
        "unskilled - resident",
    ],
    "telephone": ["none", "yes, registered under the customers name"],
    "foreign_worker": ["no", "yes"],
}
"""Categorical attribute -> its categories, sorted; the code of a category is its index."""

NUMERIC_DOMAINS: dict[str, dict[str, Any]] = {
    "duration_in_month": {"min": 1, "max": 120},
    "credit_amount": {"min": 1, "max": 100_000},
    "installment_rate_in_percentage_of_disposable_income": {"categories": [1, 2, 3, 4]},
    "present_residence_since": {"categories": [1, 2, 3, 4]},
    "age_in_years": {"min": 18, "max": 100},
    "number_of_existing_credits_at_this_bank": {"categories": [1, 2, 3, 4]},
    "number_of_people_being_liable_to_provide_maintenance_for": {"categories": [1, 2]},
}
"""Numeric attribute -> its domain: a range in its unit (months, Deutsche Mark, years),
wider than the data (4-72 months, 250-18,424 DM, 19-75 years) because a longer loan is
still an applicant, or the ordinal codes the data set documents (installment rate,
residence, credits and dependants are coded 1-4 and 1-2)."""

CATEGORICAL_INDICES: list[int] = [i for i, n in enumerate(FEATURE_NAMES) if n in CATEGORIES]
NUMERIC_INDICES: list[int] = [i for i, n in enumerate(FEATURE_NAMES) if n not in CATEGORIES]

_CODES: dict[str, dict[str, int]] = {
    name: {category: code for code, category in enumerate(cats)}
    for name, cats in CATEGORIES.items()
}


def _encode_value(name: str, value: Any) -> float:
    """Encode one attribute value; raises ``ValueError`` naming an unknown category."""
    codes = _CODES.get(name)
    if codes is None:
        return float(value)
    try:
        return float(codes[str(value)])
    except KeyError:
        raise ValueError(f"{name}: unknown category {value!r}") from None


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Encode raw rows (attribute name -> value, as in the CSV) for the models.

    Args:
        rows: mappings holding every name of :data:`FEATURE_NAMES` (extra keys, such
            as the label, are ignored).

    Returns:
        FP32 array ``[n, 20]``.

    Raises:
        KeyError: a row lacks an attribute.
        ValueError: a categorical value is not in :data:`CATEGORIES`.
    """
    encoded = [[_encode_value(n, row[n]) for n in FEATURE_NAMES] for row in rows]
    return np.asarray(encoded, dtype=np.float32).reshape(-1, len(FEATURE_NAMES))


def encode_frame(frame: pd.DataFrame) -> np.ndarray:
    """Encode a data frame with the CSV's columns; FP32 ``[n, 20]`` (see :func:`encode_rows`)."""
    return encode_rows(frame.to_dict(orient="records"))


def load_frame(csv: str | Path = DATA_CSV) -> tuple[np.ndarray, np.ndarray]:
    """Read a credit CSV and encode it.

    Args:
        csv: path to a CSV with the 20 attributes and ``creditability`` (good/bad).

    Returns:
        ``(X, y)``: FP32 ``[n, 20]`` and INT64 ``[n]`` with good = 1, bad = 0.
    """
    frame = pd.read_csv(csv)
    x = encode_frame(frame)
    y = (frame[LABEL_COLUMN].to_numpy() == LABEL[1]).astype(np.int64)
    return x, y


def encoding_spec() -> dict[str, Any]:
    """The content of ``encoding.json`` (feature names, categories, label, input)."""
    return {
        "feature_names": list(FEATURE_NAMES),
        "categorical": {str(i): list(CATEGORIES[FEATURE_NAMES[i]]) for i in CATEGORICAL_INDICES},
        "label": {str(k): v for k, v in LABEL.items()},
        "class_names": [LABEL[k] for k in sorted(LABEL)],
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, len(FEATURE_NAMES)]},
    }


def input_schema() -> dict[str, Any]:
    """The domain of every column of ``input``, in the gateway's ``input_schema`` form:
    category codes for categorical attributes, :data:`NUMERIC_DOMAINS` for the others,
    NaN nowhere."""
    features = []
    for column, name in enumerate(FEATURE_NAMES):
        domain = ({"categories": list(range(len(CATEGORIES[name])))} if name in CATEGORIES
                  else NUMERIC_DOMAINS[name])
        features.append({"name": name, "column": column, **domain, "nan": False})
    return {"input": "input", "features": features}


def write_input_schema(out_dir: Path) -> Path:
    """Write ``input_schema.json`` into ``out_dir`` and return its path."""
    path = Path(out_dir) / "input_schema.json"
    path.write_text(json.dumps(input_schema(), indent=2) + "\n")
    return path


def write_encoding(out_dir: Path) -> Path:
    """Write ``encoding.json`` into ``out_dir`` and return its path."""
    path = Path(out_dir) / "encoding.json"
    path.write_text(json.dumps(encoding_spec(), indent=2) + "\n")
    return path
