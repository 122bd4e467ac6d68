"""The three explainers give exactly what Alibi 0.9.4 gives for the same model, row and seed."""

from __future__ import annotations

import logging

import numpy as np
import orjson
import pytest
from alibi.explainers import AnchorTabular, KernelShap, TreeShap

from explain.alibi import AnchorTabularExplainer, TreeShapExplainer
from explain.base import ExplainerError
from explain.kernel import KernelShapExplainer

SEED = 11
NSAMPLES = 64
BACKGROUND = 20


class CountingPredictor:
    """Batch predict_fn that counts model calls and rows evaluated."""

    def __init__(self, fn):
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        assert X.ndim == 2 and X.dtype == np.float32
        self.calls += 1
        self.rows += len(X)
        return self.fn(X)


def direct_anchor(credit, model, row, **kw):
    anchor = AnchorTabular(
        model.predict_proba, credit.schema.feature_names, credit.schema.category_map, seed=SEED
    ).fit(credit.reference)
    np.random.seed(SEED)
    return anchor.explain(row[0], **kw)


@pytest.fixture(scope="module")
def anchors(credit):
    explainer = AnchorTabularExplainer("gb", credit.schema, seed=SEED, threshold=0.9)
    explainer.fit(credit.reference)
    return explainer


@pytest.mark.parametrize("i", [0, 3, 7])
def test_anchor_equals_alibi(credit, anchors, i):
    row = credit.row(i)
    ours = anchors.explain(row, CountingPredictor(credit.gb.predict_proba))
    theirs = direct_anchor(credit, credit.gb, row, threshold=0.9)
    assert ours.anchor_features == [int(f) for f in theirs.data["raw"]["feature"]]
    assert ours.precision == theirs.precision
    assert ours.coverage == theirs.coverage
    assert ours.explained_class == int(theirs.data["raw"]["prediction"][0])
    cats = credit.schema.category_map
    conditions = zip(ours.anchor_features, ours.anchor, theirs.anchor, strict=True)
    for feature, mine, alibi_text in conditions:
        if feature in cats:  # rendered from the row, in the data's terms
            value = cats[feature][int(row[0, feature])]
            assert mine == f'{credit.schema.feature_names[feature]} = "{value}"'
            assert alibi_text.endswith(value)
        else:  # numerical ranges keep Alibi's text
            assert mine == alibi_text


def test_anchor_restores_column_names_alibi_drops(credit, anchors):
    """Alibi prints a category containing '<' without its column; we keep the column."""
    row = credit.row(5)
    ours = anchors.explain(row, credit.gb.predict_proba)
    theirs = direct_anchor(credit, credit.gb, row, threshold=0.9)
    assert 'status_of_existing_checking_account = "... < 0 DM"' in ours.anchor
    assert "... < 0 DM" in theirs.anchor
    assert "duration_in_month > 24.00" in ours.anchor
    assert ours.summary.startswith(
        'The model predicts "bad" because duration_in_month > 24.00 and '
        'status_of_existing_checking_account = "... < 0 DM" and '
    )


def test_anchor_is_independent_of_previous_calls(credit, anchors):
    first = anchors.explain(credit.row(5), credit.gb.predict_proba)
    anchors.explain(credit.row(6), credit.gb.predict_proba)
    again = anchors.explain(credit.row(5), credit.gb.predict_proba)
    assert (again.anchor, again.precision, again.coverage) == (
        first.anchor,
        first.precision,
        first.coverage,
    )


def test_anchor_calls_model_in_batches(credit, anchors):
    predict = CountingPredictor(credit.gb.predict_proba)
    ours = anchors.explain(credit.row(1), predict)
    assert predict.rows >= 2000
    assert predict.calls * 50 <= predict.rows  # about 100 perturbed rows per call
    assert ours.prediction == pytest.approx(credit.gb.predict_proba(credit.row(1))[0].tolist())


def test_anchor_summary_and_json(credit, anchors):
    ours = anchors.explain(credit.row(0), credit.gb.predict_proba)
    doc = orjson.loads(orjson.dumps(ours.to_dict()))
    assert doc["method"] == "anchor_tabular" and doc["model"] == "gb"
    assert doc["summary"].startswith(f'The model predicts "{ours.explained_class_name}" because')
    assert ours.explained_class_name in ("bad", "good")
    assert "shap_values" not in doc
    assert doc["feature_values"]["purpose"] in credit.schema.category_map[3]


def test_anchor_label_output(credit):
    explainer = AnchorTabularExplainer("gb", credit.schema, seed=SEED, label_output=True)
    explainer.fit(credit.reference)
    ours = explainer.explain(credit.row(1), credit.gb.predict)
    theirs = direct_anchor(credit, credit.gb, credit.row(1))
    assert ours.anchor_features == [int(f) for f in theirs.data["raw"]["feature"]]
    assert ours.precision == theirs.precision


def direct_kernel_shap(credit, row, link="identity"):
    shap = KernelShap(
        credit.lr.predict_proba,
        link=link,
        feature_names=credit.schema.feature_names,
        categorical_names=credit.schema.category_map,
        seed=SEED,
    )
    shap.fit(credit.reference, summarise_background=True, n_background_samples=BACKGROUND)
    return shap.explain(row, nsamples=NSAMPLES, silent=True)


@pytest.mark.parametrize("link", ["identity", "logit"])
def test_kernel_shap_equals_alibi(credit, link):
    explainer = KernelShapExplainer(
        "lr", credit.schema, seed=SEED, nsamples=NSAMPLES, link=link, background_size=BACKGROUND
    )
    explainer.fit(credit.reference)
    explainer.explain(credit.row(4), credit.lr.predict_proba)  # earlier calls change nothing
    predict = CountingPredictor(credit.lr.predict_proba)
    ours = explainer.explain(credit.row(2), predict)
    theirs = direct_kernel_shap(credit, credit.row(2), link)
    label = int(theirs.data["raw"]["prediction"][0])
    assert ours.explained_class == label
    expected = np.asarray(theirs.shap_values[label][0])
    got = np.array([ours.shap_values[n] for n in credit.schema.feature_names])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert ours.expected_value == pytest.approx(theirs.expected_value[label], abs=1e-6)
    assert ours.output_units == ("probability" if link == "identity" else "log-odds")
    assert predict.calls <= 4 and predict.rows >= NSAMPLES * BACKGROUND // 2


def test_kernel_shap_summary_names_top_attributes(credit):
    explainer = KernelShapExplainer(
        "lr", credit.schema, seed=SEED, nsamples=NSAMPLES, background_size=BACKGROUND
    )
    explainer.fit(credit.reference)
    ours = explainer.explain(credit.row(0), credit.lr.predict_proba)
    top = max(ours.shap_values, key=lambda n: abs(ours.shap_values[n]))
    assert f"moved it most were {top} = " in ours.summary
    total = ours.expected_value + sum(ours.shap_values.values())
    assert total == pytest.approx(ours.prediction[ours.explained_class], abs=1e-4)


def test_tree_shap_equals_alibi(credit, caplog):
    explainer = TreeShapExplainer("gb", credit.schema, artifact=credit.gb_path, seed=SEED)
    with caplog.at_level(logging.WARNING, logger="alibi"):
        explainer.fit(credit.reference)
    # the raw margin is what is explained: Alibi's "scalar value" warning is not logged
    assert not [r for r in caplog.records if "scalar value" in r.getMessage()]
    row = credit.row(9)
    ours = explainer.explain(row)
    theirs = (
        TreeShap(
            credit.gb,
            model_output="raw",
            feature_names=credit.schema.feature_names,
            categorical_names=credit.schema.category_map,
            task="classification",
            seed=SEED,
        )
        .fit()
        .explain(row)
    )
    assert any("scalar value" in r.getMessage() for r in caplog.records)  # Alibi's own fit
    got = np.array([ours.shap_values[n] for n in credit.schema.feature_names])
    np.testing.assert_allclose(got, theirs.shap_values[0][0], atol=1e-6, rtol=0)
    assert ours.expected_value == pytest.approx(float(theirs.expected_value[0]), abs=1e-6)
    raw = float(credit.gb.decision_function(row)[0])
    assert ours.expected_value + got.sum() == pytest.approx(raw, abs=1e-5)
    assert ours.explained_class_name == "good" and ours.output_units == "log-odds"


def test_explain_before_fit_and_bad_row(credit):
    explainer = AnchorTabularExplainer("gb", credit.schema)
    with pytest.raises(ExplainerError, match="not fitted"):
        explainer.explain(credit.row(0), credit.gb.predict_proba)
    explainer.fit(credit.reference)
    with pytest.raises(ExplainerError, match="20 features"):
        explainer.explain(credit.row(0)[:, :5], credit.gb.predict_proba)
    with pytest.raises(ExplainerError, match=r"reference must be \[rows, 20\]"):
        explainer.fit(credit.reference[:, :5])
