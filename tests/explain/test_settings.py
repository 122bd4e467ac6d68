"""ExplainSpec: constrained fields, cross-field rules, encoding and reference files."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from explain.settings import ExplainSpec


def spec(**kw) -> ExplainSpec:
    base = {"method": "anchor_tabular", "reference_data": "ref.npy", "feature_names": ["a", "b"]}
    return ExplainSpec(**{**base, **kw})


def test_defaults():
    s = spec()
    assert (s.mode, s.sample_rate, s.output, s.workers) == ("async", 1.0, "probabilities", 1)


def test_every_field_is_described():
    assert all(f.description for f in ExplainSpec.model_fields.values())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"method": "tree_shap", "reference_data": None}, "tree_shap needs model_artifact"),
        ({"reference_data": None}, "anchor_tabular needs reference_data"),
        ({"encoding": "enc.json"}, "exactly one of feature_names"),
        ({"feature_names": None}, "exactly one of feature_names"),
        ({"category_map": {5: ["x"]}}, r"category_map columns \[5\] are beyond"),
        ({"method": "kernel_shap", "output": "label"}, "kernel_shap needs a probability output"),
        ({"reference_data": "ref.parquet"}, "must be a .npy or .csv"),
        ({"sample_rate": 1.5}, "less than or equal to 1"),
        ({"timeout_s": 0}, "greater than 0"),
        ({"max_queue": 0}, "greater than or equal to 1"),
        ({"method": "lime"}, "anchor_tabular"),
        ({"mode": "sometimes"}, "inline"),
        ({"workers_count": 2}, "Extra inputs"),
    ],
)
def test_invalid(kw, message):
    with pytest.raises(ValidationError, match=message):
        spec(**kw)


def test_tree_shap_without_reference():
    s = spec(method="tree_shap", reference_data=None, model_artifact={"gb": "gb.joblib"})
    assert str(s.model_artifact["gb"]) == "gb.joblib"


def test_schema_from_encoding(credit):
    s = ExplainSpec(
        method="kernel_shap", reference_data=credit.reference_path, encoding=credit.encoding_path
    )
    schema = s.schema()
    assert schema.feature_names == credit.schema.feature_names
    assert schema.category_map == credit.schema.category_map
    assert schema.class_names == ["bad", "good"]


def test_schema_inline():
    s = spec(category_map={1: ["no", "yes"]}, class_names=["bad", "good"])
    schema = s.schema()
    assert schema.condition(1, 1.0) == 'b = "yes"'
    assert schema.condition(0, 24.0) == "a = 24"
    assert schema.class_name(0) == "bad"


def test_reference_npy_and_csv(credit, tmp_path):
    s = spec(reference_data=credit.reference_path, feature_names=credit.schema.feature_names)
    np.testing.assert_array_equal(s.load_reference(), credit.reference)
    csv = tmp_path / "ref.csv"
    header = ",".join(credit.schema.feature_names)
    np.savetxt(csv, credit.reference[:10], delimiter=",", header=header, comments="")
    loaded = spec(reference_data=csv).load_reference()
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, credit.reference[:10])
    np.savetxt(csv, credit.reference[:3], delimiter=",")
    assert spec(reference_data=csv).load_reference().shape == (3, 20)
