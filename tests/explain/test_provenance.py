"""An explanation's provenance record reproduces it (same numbers), and refuses files
that are not the ones it was made with."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from examples.credit.encoding import load_frame
from explain.predictors import JoblibPredictor
from explain.provenance import (
    ProvenanceError,
    file_sha256,
    library_versions,
    provenance_record,
    reproduce,
)
from explain.registry import explainer_for, reason_writer
from explain.settings import ExplainSpec


def explained(spec, model, row, predict_fn=None):
    """Explain ``row`` as a worker process does; the explanation with its record."""
    schema, reference, outcomes = spec.schema(), spec.load_reference(), spec.load_outcomes()
    explainer = explainer_for(spec, model, schema, reason_writer(spec, schema, reference,
                                                                 outcomes))
    explainer.fit(reference)
    artifact = spec.model_artifact.get(model)
    record = provenance_record(spec, model, explainer, reference=reference, outcomes=outcomes,
                               schema=schema, model_version="1",
                               model_sha256=file_sha256(artifact) if artifact else None)
    explanation = explainer.explain(row, predict_fn)
    record = orjson.loads(orjson.dumps({**record, "input": row[0].tolist()}))  # stored as JSON
    return explanation, record


@pytest.fixture(scope="module")
def files(credit_models):
    return {"encoding": credit_models["encoding"], "reference_data": credit_models["reference"],
            "reference_outcomes": credit_models["reference_outcomes"]}


@pytest.fixture(scope="module")
def row(credit_models):
    return load_frame(credit_models["holdout"])[0][3:4]


def same(a, b):
    assert a.shap_values == b.shap_values and a.expected_value == b.expected_value
    assert a.reasons == b.reasons and a.prediction == b.prediction


def test_linear_shap_reproduced(credit_models, files, row):
    spec = ExplainSpec(method="linear_shap", model_artifact={"lr": credit_models["lr"]}, **files)
    explanation, record = explained(spec, "lr", row)
    assert record["explainer"] == "explain.linear.LinearShapExplainer"
    assert record["libraries"] == library_versions()
    assert record["libraries"]["alibi"] == "0.9.4" and record["libraries"]["shap"] == "0.42.1"
    assert (record["model"], record["model_version"], record["reference_rows"]) == ("lr", "1", 800)
    assert record["settings"] == {"reasons_top_k": 4, "adverse": {"output": "label", "values": [0]}}
    again = reproduce(record, model_artifact=credit_models["lr"], **files)
    same(again, explanation)


def test_kernel_shap_reproduced_with_its_seed_and_settings(credit_models, files, row):
    spec = ExplainSpec(method="kernel_shap", seed=11, kernel_shap_nsamples=64, background_size=10,
                       reasons_top_k=3, **files)
    lr = JoblibPredictor(credit_models["lr"])()
    explanation, record = explained(spec, "lr", row, lr)
    assert record["seed"] == 11 and record["settings"]["kernel_shap_nsamples"] == 64
    assert len(explanation.reasons) == 3
    same(reproduce(record, lr, **files), explanation)
    record["seed"] = 12  # another seed draws other coalitions
    assert reproduce(record, lr, **files).shap_values != explanation.shap_values


def test_tree_shap_reproduced(credit_models, files, row):
    spec = ExplainSpec(method="tree_shap", model_artifact={"gbm": credit_models["gbm_sklearn"]},
                       **files)
    explanation, record = explained(spec, "gbm", row)
    same(reproduce(record, model_artifact=credit_models["gbm_sklearn"], **files), explanation)


def test_other_files_are_refused(credit_models, files, row, tmp_path):
    spec = ExplainSpec(method="linear_shap", model_artifact={"lr": credit_models["lr"]}, **files)
    _, record = explained(spec, "lr", row)
    fewer = tmp_path / "reference.npy"
    np.save(fewer, np.load(credit_models["reference"])[:-1])
    with pytest.raises(ProvenanceError, match="reference_sha256 differs"):
        reproduce(record, model_artifact=credit_models["lr"],
                  **{**files, "reference_data": fewer, "reference_outcomes": None})
    with pytest.raises(ProvenanceError, match="model_sha256 differs"):
        reproduce(record, model_artifact=credit_models["gbm_sklearn"], **files)
    with pytest.raises(ProvenanceError, match="outcomes_sha256 differs"):
        reproduce(record, model_artifact=credit_models["lr"],
                  **{**files, "reference_outcomes": None})
    words = orjson.loads(credit_models["encoding"].read_bytes())
    words["descriptions"]["duration_in_month"] = "Term"
    (tmp_path / "encoding.json").write_bytes(orjson.dumps(words))
    with pytest.raises(ProvenanceError, match="encoding_sha256 differs"):
        reproduce(record, model_artifact=credit_models["lr"],
                  **{**files, "encoding": tmp_path / "encoding.json"})
