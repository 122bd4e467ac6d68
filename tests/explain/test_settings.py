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
    assert (s.when, s.adverse.output, s.adverse.values, s.reasons_top_k) == (
        "refusals", "label", [0], 4)


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
        ({"method": "linear_shap"}, "linear_shap needs model_artifact"),
        ({"methods": {"gbm": "tree_shap"}}, r"methods.gbm: tree_shap needs model_artifact.gbm"),
        ({"methods": {"lr": "linear_shap"}, "model_artifact": {"gbm": "g.joblib"}},
         r"methods.lr: linear_shap needs model_artifact.lr"),
        ({"methods": {"mlp": "kernel_shap"}, "output": "label"},
         r"methods.mlp: kernel_shap needs a probability output"),
        ({"methods": {"mlp": "lime"}}, r"methods.mlp"),
        ({"adverse": {"output": "label", "values": []}}, r"adverse.values"),
        ({"adverse": {"values": [0, 0]}}, "values must be distinct"),
        ({"adverse": {"values": [-1]}}, "adverse.values.0"),
        ({"when": "sometimes"}, "refusals"),
        ({"when": "refusals", "sample_rate": 0.5},
         "sample_rate 0.5 applies only with when: sample"),
        ({"reasons_top_k": 0}, "reasons_top_k"),
        ({"reference_outcomes": "y.parquet"}, "reference_outcomes must be a .npy or .csv"),
        ({"max_batch": 0}, "max_batch"),
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


def test_methods_per_model():
    s = spec(method="kernel_shap", methods={"lr": "linear_shap", "gbm": "tree_shap"},
             model_artifact={"lr": "lr.joblib", "gbm": "gbm.joblib"})
    assert [s.method_for(m) for m in ("lr", "gbm", "mlp")] == [
        "linear_shap", "tree_shap", "kernel_shap"]
    s.check_models(["lr", "gbm", "mlp"])
    tree = spec(method="tree_shap", reference_data=None, model_artifact={"gbm": "gbm.joblib"})
    with pytest.raises(ValueError, match="model_artifact lacks 'lr' \\(tree_shap explains it"):
        tree.check_models(["gbm", "lr"])


def test_sample_rate_alone_means_sample():
    """A spec written before 'when' existed keeps its meaning: a share of decisions."""
    assert spec(sample_rate=0.1).when == "sample"
    assert spec().when == "refusals"
    assert spec(when="all").sample_rate == 1.0


def test_resolved_paths(tmp_path):
    s = spec(reference_outcomes="y.npy", encoding=None, model_artifact={"lr": "/m/lr.joblib"})
    r = s.resolved(tmp_path)
    assert (r.reference_data, r.reference_outcomes) == (tmp_path / "ref.npy", tmp_path / "y.npy")
    assert str(r.model_artifact["lr"]) == "/m/lr.joblib" and r.encoding is None


def test_reference_outcomes(credit, tmp_path):
    np.save(tmp_path / "y.npy", credit.y[:800])
    s = spec(reference_data=credit.reference_path, reference_outcomes=tmp_path / "y.npy")
    np.testing.assert_array_equal(s.load_outcomes(), credit.y[:800])
    (tmp_path / "y.csv").write_text("outcome\n1\n0\n1\n")
    assert spec(reference_outcomes=tmp_path / "y.csv").load_outcomes().tolist() == [1, 0, 1]
    (tmp_path / "bad.csv").write_text("0.5\n1\n")
    with pytest.raises(ValueError, match="one integer label per row"):
        spec(reference_outcomes=tmp_path / "bad.csv").load_outcomes()
    assert spec().load_outcomes() is None


def test_encoding_errors_name_the_key(tmp_path):
    import orjson

    base = {"feature_names": ["a", "b"], "categorical": {"1": ["x", "y"]},
            "class_names": ["n", "p"]}
    cases = [({"descriptions": {"c": "?"}}, "descriptions: unknown feature 'c'"),
             ({"category_descriptions": {"b": {"z": "?"}}},
              r"category_descriptions.b: unknown categories \['z'\]"),
             ({"class_descriptions": {"q": "?"}}, "class_descriptions: unknown class 'q'"),
             ({"protected": ["d"]}, "protected: unknown feature 'd'")]
    for extra, message in cases:
        path = tmp_path / "encoding.json"
        path.write_bytes(orjson.dumps({**base, **extra}))
        with pytest.raises(ValueError, match=message):
            spec(feature_names=None, encoding=path).schema()
