"""kernel_shap batched across decisions: one model call for many rows, each row's values
equal to Alibi 0.9.4's KernelShap called alone with the same seed.

Tolerance: 1e-9 for a float64 scikit-learn model (the values are the same computation);
1e-6 for the credit MLP, a float32 TorchScript model whose outputs for a row vary in the
last bit with the size of the batch it is computed in (the documented tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest
from alibi.explainers import KernelShap

from examples.credit.encoding import load_frame
from explain.kernel import KernelShapExplainer
from explain.predictors import TorchScriptPredictor
from explain.settings import ExplainSpec

SEED = 7
NSAMPLES = 64
BACKGROUND = 10


class Counting:
    """Batch predict_fn that counts model calls and rows."""

    def __init__(self, fn):
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, X):
        self.calls += 1
        self.rows += len(X)
        return self.fn(X)


@pytest.fixture(scope="module")
def lr64(credit):
    """The session's logistic regression computed in float64 (fitted on float32 rows, it
    would compute in float32, whose results vary in the last bit with the batch)."""
    return lambda X: credit.lr.predict_proba(np.asarray(X, dtype=np.float64))


def direct(fn, schema, reference, row, nsamples=NSAMPLES, link="identity"):
    shap = KernelShap(fn, link=link, feature_names=schema.feature_names,
                      categorical_names=schema.category_map, seed=SEED)
    shap.fit(reference, summarise_background=True, n_background_samples=BACKGROUND)
    np.random.seed(SEED)
    return shap.explain(row, nsamples=nsamples, silent=True)


def values(explanation, names):
    return np.array([explanation.shap_values[n] for n in names])


@pytest.mark.parametrize("link", ["identity", "logit"])
def test_batch_is_one_call_and_equals_alibi_row_by_row(credit, lr64, link):
    explainer = KernelShapExplainer("lr", credit.schema, seed=SEED, nsamples=NSAMPLES,
                                    link=link, background_size=BACKGROUND)
    explainer.fit(credit.reference)
    explainer.explain(credit.row(0), lr64)  # fits the background
    predict = Counting(lr64)
    rows = credit.X[800:808]
    ours = explainer.explain_batch(rows, predict)
    assert predict.calls == 1
    assert predict.rows == 8 + 8 * NSAMPLES * BACKGROUND
    for i, explanation in enumerate(ours):
        theirs = direct(lr64, credit.schema, credit.reference,
                        rows[i : i + 1], link=link)
        label = int(theirs.data["raw"]["prediction"][0])
        assert explanation.explained_class == label
        np.testing.assert_allclose(values(explanation, credit.schema.feature_names),
                                   theirs.shap_values[label][0], rtol=0, atol=1e-9)
        assert explanation.expected_value == pytest.approx(theirs.expected_value[label],
                                                           abs=1e-12)
        assert explanation.prediction == pytest.approx(
            lr64(rows[i : i + 1])[0].tolist())


def test_auto_nsamples_and_large_batches_split(credit, lr64):
    """'auto' (2 * features + 2048 coalitions); a batch beyond max_rows_per_call is sent
    in several calls, with the same values."""
    explainer = KernelShapExplainer("lr", credit.schema, seed=SEED, background_size=BACKGROUND,
                                    max_rows_per_call=50_000)
    explainer.fit(credit.reference)
    explainer.explain(credit.row(0), lr64)
    predict = Counting(lr64)
    ours = explainer.explain_batch(credit.X[810:814], predict)
    assert predict.calls == 2  # 2 rows x (1 + 2088 x 10) per call
    theirs = direct(lr64, credit.schema, credit.reference,
                    credit.X[813:814], nsamples="auto")
    label = ours[3].explained_class
    np.testing.assert_allclose(values(ours[3], credit.schema.feature_names),
                               theirs.shap_values[label][0], rtol=0, atol=1e-9)


def test_row_where_at_most_one_feature_varies(credit, lr64):
    """shap needs no coalition when a single feature differs from the background; the
    row still gets its values (all of the difference on that feature)."""
    background = np.repeat(credit.reference[:1], 5, axis=0)
    explainer = KernelShapExplainer("lr", credit.schema, seed=SEED, nsamples=NSAMPLES,
                                    background_size=5)
    explainer.fit(background)
    row = background[:1].copy()
    row[0, 1] += 12  # a longer loan, nothing else changed
    ours = explainer.explain_batch(np.concatenate([row, credit.row(2)]),
                                   lr64)
    proba = lr64(np.concatenate([row, background[:1]]))
    label = ours[0].explained_class
    assert ours[0].shap_values["duration_in_month"] == pytest.approx(
        proba[0, label] - proba[1, label], abs=1e-12)
    assert sum(abs(v) for v in ours[0].shap_values.values()) == pytest.approx(
        abs(proba[0, label] - proba[1, label]), abs=1e-12)


def test_credit_mlp_within_documented_tolerance(credit_models):
    """The example's TorchScript MLP (float32): equal to Alibi within 1e-6."""
    spec = ExplainSpec(method="kernel_shap", encoding=credit_models["encoding"],
                       reference_data=credit_models["reference"])
    schema, reference = spec.schema(), spec.load_reference()
    mlp = TorchScriptPredictor(credit_models["mlp"])()
    explainer = KernelShapExplainer("mlp", schema, seed=SEED, nsamples=NSAMPLES,
                                    background_size=BACKGROUND)
    explainer.fit(reference)
    rows = load_frame(credit_models["holdout"])[0][:6]
    ours = explainer.explain_batch(rows, mlp)
    for i, explanation in enumerate(ours):
        theirs = direct(mlp, schema, reference, rows[i : i + 1])
        label = explanation.explained_class
        np.testing.assert_allclose(values(explanation, schema.feature_names),
                                   theirs.shap_values[label][0], rtol=0, atol=1e-6)
