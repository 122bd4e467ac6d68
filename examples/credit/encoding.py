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

And it publishes how to speak of each column to an applicant: :data:`DESCRIPTIONS`,
:data:`UNITS`, :data:`CATEGORY_DESCRIPTIONS`, :data:`REASON_CODES`,
:data:`CLASS_DESCRIPTIONS` and :data:`PROTECTED`, from which explanations write their
reasons ("Checking account balance below 0 DM").
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
    "DESCRIPTIONS",
    "UNITS",
    "CATEGORY_DESCRIPTIONS",
    "REASON_CODES",
    "CLASS_DESCRIPTIONS",
    "PROTECTED",
    "FAVOURABLE",
    "ADVERSE_DIRECTION",
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

DESCRIPTIONS: dict[str, str] = {
    "status_of_existing_checking_account": "Checking account",
    "duration_in_month": "Loan duration",
    "credit_history": "Credit history",
    "purpose": "Purpose of the loan",
    "credit_amount": "Credit amount",
    "savings_account_and_bonds": "Savings",
    "present_employment_since": "Employment",
    "installment_rate_in_percentage_of_disposable_income":
        "Instalment share of disposable income in class {value} of 4 (4 the largest)",
    "personal_status_and_sex": "Personal status and sex",
    "other_debtors_or_guarantors": "Other debtors or guarantors",
    "present_residence_since":
        "Length of stay at the present address in class {value} of 4 (4 the longest)",
    "property": "Property",
    "age_in_years": "Age",
    "other_installment_plans": "Other installment plans",
    "housing": "Housing",
    "number_of_existing_credits_at_this_bank": "{value} existing credits at this bank",
    "job": "Job",
    "number_of_people_being_liable_to_provide_maintenance_for":
        "{value} people the applicant provides maintenance for",
    "telephone": "Telephone",
    "foreign_worker": "Foreign worker",
}
"""Attribute -> what it is, in plain words; ``{value}`` marks where a numeric value goes
(otherwise the value follows "of": "Loan duration of 36 months"). The data set codes
installment rate and residence length as classes 1 to 4, not as percentages or years."""

UNITS: dict[str, str] = {"duration_in_month": "months", "credit_amount": "DM",
                         "age_in_years": "years"}
"""Numeric attribute -> unit of its values."""

CATEGORY_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "status_of_existing_checking_account": {
        "... < 0 DM": "Checking account balance below 0 DM",
        "... >= 200 DM / salary assignments for at least 1 year":
            "Checking account balance of 200 DM or more, or salary paid into it for a year",
        "0 <= ... < 200 DM": "Checking account balance between 0 and 200 DM",
        "no checking account": "No checking account",
    },
    "credit_history": {
        "all credits at this bank paid back duly": "All credits at this bank repaid on time",
        "critical account/ other credits existing (not at this bank)":
            "Critical account, or credits at other banks",
        "delay in paying off in the past": "Delays in repaying credits in the past",
        "existing credits paid back duly till now": "Current credits repaid on time so far",
        "no credits taken/ all credits paid back duly":
            "No credits taken, or all credits repaid on time",
    },
    "purpose": {
        "business": "Loan for a business", "car (new)": "Loan for a new car",
        "car (used)": "Loan for a used car",
        "domestic appliances": "Loan for domestic appliances",
        "education": "Loan for education",
        "furniture/equipment": "Loan for furniture or equipment",
        "others": "Loan for another purpose", "radio/television": "Loan for a radio or television",
        "repairs": "Loan for repairs", "retraining": "Loan for retraining",
    },
    "savings_account_and_bonds": {
        "... < 100 DM": "Savings below 100 DM",
        "... >= 1000 DM": "Savings of 1,000 DM or more",
        "100 <= ... < 500 DM": "Savings between 100 and 500 DM",
        "500 <= ... < 1000 DM": "Savings between 500 and 1,000 DM",
        "unknown/ no savings account": "No savings account, or savings unknown",
    },
    "present_employment_since": {
        "... < 1 year": "Employed for less than a year",
        "... >= 7 years": "Employed for 7 years or more",
        "1 <= ... < 4 years": "Employed for 1 to 4 years",
        "4 <= ... < 7 years": "Employed for 4 to 7 years",
        "unemployed": "Unemployed",
    },
    "personal_status_and_sex": {
        "female : divorced/separated/married": "Female, divorced, separated or married",
        "male : divorced/separated": "Male, divorced or separated",
        "male : married/widowed": "Male, married or widowed",
        "male : single": "Male, single",
    },
    "other_debtors_or_guarantors": {
        "co-applicant": "A co-applicant on the loan", "guarantor": "A guarantor for the loan",
        "none": "No co-applicant or guarantor",
    },
    "property": {
        "building society savings agreement/ life insurance":
            "Most valuable property: building society savings or life insurance",
        "car or other, not in attribute Savings account/bonds":
            "Most valuable property: a car or other property",
        "real estate": "Owns real estate",
        "unknown / no property": "No known property",
    },
    "other_installment_plans": {
        "bank": "Other installment plans with a bank", "none": "No other installment plans",
        "stores": "Other installment plans with stores",
    },
    "housing": {"for free": "Lives rent-free", "own": "Owns their home",
                "rent": "Rents their home"},
    "job": {
        "management/ self-employed/ highly qualified employee/ officer":
            "Manager, self-employed, highly qualified employee or officer",
        "skilled employee / official": "Skilled employee or official",
        "unemployed/ unskilled - non-resident": "Unemployed or unskilled, non-resident",
        "unskilled - resident": "Unskilled, resident",
    },
    "telephone": {"none": "No telephone registered",
                  "yes, registered under the customers name":
                      "Telephone registered in the applicant's name"},
    "foreign_worker": {"no": "Not a foreign worker", "yes": "Foreign worker"},
}
"""Categorical attribute -> category -> a phrase saying the applicant has it."""

REASON_CODES: dict[str, str] = {
    "status_of_existing_checking_account": "checking_account",
    "duration_in_month": "loan_duration",
    "credit_history": "credit_history",
    "purpose": "loan_purpose",
    "credit_amount": "credit_amount",
    "savings_account_and_bonds": "savings",
    "present_employment_since": "employment_length",
    "installment_rate_in_percentage_of_disposable_income": "installment_rate",
    "personal_status_and_sex": "personal_status",
    "other_debtors_or_guarantors": "other_debtors",
    "present_residence_since": "residence_length",
    "property": "property",
    "age_in_years": "age",
    "other_installment_plans": "other_installment_plans",
    "housing": "housing",
    "number_of_existing_credits_at_this_bank": "existing_credits",
    "job": "job",
    "number_of_people_being_liable_to_provide_maintenance_for": "dependants",
    "telephone": "telephone",
    "foreign_worker": "foreign_worker",
}
"""Attribute -> short stable reason code."""

CLASS_DESCRIPTIONS: dict[str, str] = {"good": "repaid loans", "bad": "loans not repaid"}
"""Class name -> plural noun phrase for the reference rows of that class."""

PROTECTED: list[str] = ["personal_status_and_sex", "age_in_years", "foreign_worker"]
"""Attributes never given to an applicant as a reason for a refusal: sex and marital
status, age, and national origin are prohibited bases (explanations still report what
they contributed, apart, for review)."""

FAVOURABLE: dict[str, list[str]] = {
    "status_of_existing_checking_account": [
        "... >= 200 DM / salary assignments for at least 1 year",
    ],
    "credit_history": [
        "all credits at this bank paid back duly",
        "existing credits paid back duly till now",
        "no credits taken/ all credits paid back duly",
    ],
    "savings_account_and_bonds": ["... >= 1000 DM"],
    "present_employment_since": ["... >= 7 years"],
    "other_debtors_or_guarantors": ["guarantor"],
    "property": ["real estate"],
    "other_installment_plans": ["none"],
    "housing": ["own"],
    "job": ["management/ self-employed/ highly qualified employee/ officer"],
}
"""Categorical attribute -> the categories that count in an applicant's favour and are
therefore never given as a reason for a refusal (a lender cannot refuse because credits
were repaid on time). Only categories that are plainly favourable on their face: the
best balance, savings, employment length and job class, a clean repayment record, a
guarantor, real estate, an owned home, no other instalment plans."""

ADVERSE_DIRECTION: dict[str, str] = {
    "duration_in_month": "higher",
    "credit_amount": "higher",
    "installment_rate_in_percentage_of_disposable_income": "higher",
}
"""Numeric attribute -> the side of the median that counts against an applicant: a
longer loan, a larger amount and a larger share of income going to instalments. Age,
residence length, number of credits and dependants have no side that is plainly adverse
and are left out (age is protected in any case)."""

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
    """The content of ``encoding.json`` (feature names, categories, label, input, and
    the wording of reasons)."""
    return {
        "feature_names": list(FEATURE_NAMES),
        "categorical": {str(i): list(CATEGORIES[FEATURE_NAMES[i]]) for i in CATEGORICAL_INDICES},
        "label": {str(k): v for k, v in LABEL.items()},
        "class_names": [LABEL[k] for k in sorted(LABEL)],
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, len(FEATURE_NAMES)]},
        "descriptions": dict(DESCRIPTIONS),
        "units": dict(UNITS),
        "category_descriptions": {k: dict(v) for k, v in CATEGORY_DESCRIPTIONS.items()},
        "reason_codes": dict(REASON_CODES),
        "class_descriptions": dict(CLASS_DESCRIPTIONS),
        "protected": list(PROTECTED),
        "favourable": {k: list(v) for k, v in FAVOURABLE.items()},
        "adverse_direction": dict(ADVERSE_DIRECTION),
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
