"""One predict_proba pass serves both outputs only where predict is argmax by
construction; the served label always equals the estimator's own predict."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.svm import SVC

from wrappers.sklearn import SKLearnWrapper


def test_pipeline_label_derived_from_probabilities_equals_predict(credit_models) -> None:
    wrapper = SKLearnWrapper(credit_models["lr"])
    wrapper.load()
    model = joblib.load(credit_models["lr"])
    x = np.load(credit_models["reference"]).astype(np.float32)
    out = wrapper.predict({"input": x})
    assert wrapper._shared_label is not None
    np.testing.assert_array_equal(out["label"], model.predict(x))
    np.testing.assert_array_equal(out["probabilities"], model.predict_proba(x))


def test_svc_keeps_its_own_predict(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=120, n_features=4, random_state=0)
    path = tmp_path / "svc.joblib"
    model = SVC(probability=True, random_state=0).fit(x, y)
    joblib.dump(model, path)
    wrapper = SKLearnWrapper(path)
    wrapper.load()
    assert wrapper._shared_label is None
    out = wrapper.predict({"input": x.astype(np.float32)})
    np.testing.assert_array_equal(out["label"], model.predict(x.astype(np.float32)))
