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


def test_framework_errors_reach_clients_without_model_source(credit_models) -> None:
    """A TorchScript error carries the model's source code; the client sees one line."""
    import pytest

    from protos.errors import InferenceError
    from wrappers.loader import wrapper_from_settings
    from wrappers.settings import load_settings

    wrapper = wrapper_from_settings(load_settings(credit_models["mlp_settings"]))
    wrapper.load()
    x = np.load(credit_models["reference"])[:1].astype(np.float32)
    x[0, 0] = 99  # a category code the model never saw
    with pytest.raises(InferenceError) as info:
        wrapper.predict({"input": x})
    message = info.value.message
    assert "\n" not in message and "File" not in message and len(message) < 400
    assert message.startswith("TorchScript model raised RuntimeError") and "99" in message


async def test_declared_contract_the_model_does_not_meet_fails_the_load(credit_models) -> None:
    """A settings file declaring 21 features for the 20-feature model fails at load, not
    on every request."""
    import pytest

    from protos.errors import InferenceError
    from wrappers.loader import wrapper_from_settings
    from wrappers.settings import load_settings
    from wrappers.target import ModelTarget

    settings = load_settings(credit_models["lr_settings"])
    wrong = settings.model_copy(update={"inputs": [
        settings.inputs[0].model_copy(update={"shape": [-1, 21]})]})
    target = ModelTarget(wrapper_from_settings(wrong), wrong)
    with pytest.raises(InferenceError, match=r"failed a probe row .*\[-1, 21\]"):
        await target.load()
    assert not target.ready()
    unchecked = wrong.model_copy(update={"probe_on_load": False})
    lenient = ModelTarget(wrapper_from_settings(unchecked), unchecked)
    await lenient.load()
    assert lenient.ready()
