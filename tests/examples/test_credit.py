"""The credit example: encoding, training artifacts, determinism and model quality."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from examples.credit.encoding import (
    CATEGORIES,
    DATA_CSV,
    FEATURE_NAMES,
    encode_rows,
    encoding_spec,
    load_frame,
)
from examples.credit.train import train


def test_load_frame_matches_encode_rows():
    x, y = load_frame(DATA_CSV)
    assert (x.shape, x.dtype, y.dtype) == ((1000, 20), np.float32, np.int64)
    assert y.sum() == 700  # 700 good, 300 bad
    rows = pd.read_csv(DATA_CSV).head(5).to_dict(orient="records")
    np.testing.assert_array_equal(encode_rows(rows), x[:5])
    first = rows[0]
    assert x[0, 0] == CATEGORIES[FEATURE_NAMES[0]].index(first[FEATURE_NAMES[0]])
    assert x[0, 1] == first["duration_in_month"]


def test_categories_are_sorted_and_cover_the_data():
    frame = pd.read_csv(DATA_CSV)
    for name, categories in CATEGORIES.items():
        assert categories == sorted(categories)
        assert set(frame[name]) <= set(categories)


def test_unknown_category_is_named():
    row = pd.read_csv(DATA_CSV).iloc[0].to_dict()
    row["housing"] = "castle"
    with pytest.raises(ValueError, match="housing: unknown category 'castle'"):
        encode_rows([row])


def test_encoding_json(credit_models):
    spec = json.loads(credit_models["encoding"].read_text())
    assert spec == encoding_spec()
    assert spec["feature_names"] == FEATURE_NAMES and len(spec["feature_names"]) == 20
    assert spec["categorical"]["0"] == CATEGORIES["status_of_existing_checking_account"]
    assert "1" not in spec["categorical"]  # duration is numeric
    assert spec["label"] == {"1": "good", "0": "bad"}
    assert spec["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, 20]}


def test_holdout_and_reference(credit_models):
    holdout = pd.read_csv(credit_models["holdout"])
    assert len(holdout) == 200 and (holdout["creditability"] == "good").sum() == 140
    reference = np.load(credit_models["reference"])
    assert (reference.shape, reference.dtype) == ((800, 20), np.float32)
    x_all, _ = load_frame(DATA_CSV)
    x_holdout, _ = load_frame(credit_models["holdout"])
    together = np.concatenate([reference, x_holdout])
    assert sorted(map(tuple, together)) == sorted(map(tuple, x_all))  # a partition


def test_models_beat_the_majority_class_and_differ(credit_models):
    metrics = json.loads(credit_models["metrics"].read_text())
    majority = metrics["majority_class"]
    assert majority == 0.7
    assert metrics["gbm"] > metrics["lr"] > metrics["mlp"] > majority


def test_training_is_deterministic(credit_models, tmp_path):
    import joblib
    import onnxruntime as ort
    import torch

    again = train(tmp_path, seed=0)
    assert json.loads(again["metrics"].read_text()) == json.loads(
        credit_models["metrics"].read_text())
    x = np.load(credit_models["reference"])
    for key in ("lr", "gbm_sklearn"):
        np.testing.assert_array_equal(joblib.load(again[key]).predict_proba(x),
                                      joblib.load(credit_models[key]).predict_proba(x))
    for key in ("gbm",):  # ONNX bytes differ (generated names); outputs must not
        first, second = (ort.InferenceSession(str(p[key])).run(None, {"input": x})
                         for p in (credit_models, again))
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)
    with torch.no_grad():
        first, second = (torch.jit.load(str(p["mlp"]))(torch.from_numpy(x))[1].numpy()
                         for p in (credit_models, again))
    np.testing.assert_array_equal(first, second)


def test_input_schema_admits_the_data_and_names_what_it_refuses(credit_models, tmp_path):
    """input_schema.json is the published encoding's domain: every applicant of the data
    set is inside it, and the example gateway config checks it on every deployment."""
    import shutil

    from examples.credit.encoding import input_schema
    from gateway.config import load_config
    from gateway.domain import InputDomain, InputSchemaSpec
    from protos.errors import InvalidRequestError
    from protos.protocol import InferenceRequest, Tensor

    spec = json.loads(credit_models["input_schema"].read_text())
    assert spec == input_schema() and len(spec["features"]) == 20
    domain = InputDomain(InputSchemaSpec.model_validate(spec))
    x, _ = load_frame(DATA_CSV)
    domain.check(InferenceRequest("credit", [Tensor("input", "FP32", list(x.shape), x)]))
    bad = x[:2].copy()
    bad[1, FEATURE_NAMES.index("purpose")] = len(CATEGORIES["purpose"])
    with pytest.raises(InvalidRequestError, match="row 1: feature 'purpose' \\(column 3\\) "
                                                  "is 10, not one of its categories"):
        domain.check(InferenceRequest("credit", [Tensor("input", "FP32", [2, 20], bad)]))
    here = DATA_CSV.parents[1]
    (tmp_path / "models").mkdir()
    shutil.copy(credit_models["input_schema"], tmp_path / "models" / "input_schema.json")
    shutil.copy(credit_models["input_schema"].parent / "encoding.json",  # for monitoring
                tmp_path / "models" / "encoding.json")
    shutil.copy(here / "gateway.yaml", tmp_path / "gateway.yaml")
    config = load_config(tmp_path / "gateway.yaml")
    assert {name: d.input_schema == InputSchemaSpec.model_validate(spec)
            for name, d in config.deployments.items()} == {
        "credit": True, "credit-eg": True, "credit-cc": True, "credit-shadow": True}
