"""linear_shap: exact SHAP values of the credit example's logistic-regression pipeline,
equal to shap 0.42.1's LinearExplainer and PermutationExplainer on the same model."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import shap
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from examples.credit.encoding import load_frame
from explain.base import ExplainerError
from explain.linear import LinearShapExplainer
from explain.settings import ExplainSpec


@pytest.fixture(scope="module")
def credit_lr(credit_models):
    spec = ExplainSpec(method="linear_shap", encoding=credit_models["encoding"],
                       reference_data=credit_models["reference"],
                       model_artifact={"lr": credit_models["lr"]})
    schema, reference = spec.schema(), spec.load_reference()
    explainer = LinearShapExplainer("lr", schema, artifact=credit_models["lr"])
    explainer.fit(reference)
    holdout = load_frame(credit_models["holdout"])[0]
    return explainer, schema, reference, holdout, joblib.load(credit_models["lr"])


def values_of(explanations, names):
    return np.array([[e.shap_values[n] for n in names] for e in explanations])


def test_equals_shap_linear_explainer(credit_lr):
    """shap's LinearExplainer on the transformed columns, with the whole reference as
    background, summed over the columns each input column becomes."""
    explainer, schema, reference, holdout, pipeline = credit_lr
    ours = explainer.explain_batch(holdout[:50])
    transform = pipeline[:-1]
    background = np.asarray(transform.transform(reference), dtype=np.float64)
    theirs = shap.LinearExplainer(
        pipeline[-1], shap.maskers.Independent(background, max_samples=len(background))
    )
    per_column = theirs.shap_values(np.asarray(transform.transform(holdout[:50]), np.float64))
    one_hot_sizes = [len(schema.category_map[j]) for j in sorted(schema.category_map)]
    numeric = [j for j in range(20) if j not in schema.category_map]
    expected = np.zeros((50, 20))
    start = 0
    for j, size in zip(sorted(schema.category_map), one_hot_sizes, strict=True):
        expected[:, j] = per_column[:, start : start + size].sum(axis=1)
        start += size
    expected[:, numeric] = per_column[:, start:]
    np.testing.assert_allclose(values_of(ours, schema.feature_names), expected, rtol=0,
                               atol=1e-6)
    assert ours[0].expected_value == pytest.approx(float(theirs.expected_value), abs=1e-9)
    assert ours[0].output_units == "log-odds" and ours[0].explained_class_name == "good"


@pytest.mark.slow  # shap's permutation explainer compiles its numba kernels first
def test_equals_shap_permutation_on_the_pipeline(credit_lr, credit_models):
    """Model-agnostic check on the raw columns: for an additive model every permutation
    gives the exact Shapley values, so shap's PermutationExplainer on the pipeline's
    log-odds must agree without knowing anything about its columns."""
    _, schema, reference, holdout, pipeline = credit_lr
    explainer = LinearShapExplainer("lr", schema, artifact=credit_models["lr"])
    explainer.fit(reference[:100])  # the baseline is the mean of the rows it is fitted on
    rows = holdout[:1]
    ours = explainer.explain_batch(rows)
    masker = shap.maskers.Independent(reference[:100], max_samples=100)
    theirs = shap.PermutationExplainer(pipeline.decision_function, masker, seed=0)(
        rows, max_evals=2 * 20 + 1
    )
    np.testing.assert_allclose(values_of(ours, schema.feature_names), theirs.values,
                               rtol=0, atol=1e-6)


def test_values_add_up_to_the_log_odds(credit_lr):
    explainer, schema, _, holdout, pipeline = credit_lr
    ours = explainer.explain_batch(holdout)
    totals = [e.expected_value + sum(e.shap_values.values()) for e in ours]
    np.testing.assert_allclose(totals, pipeline.decision_function(holdout), rtol=0, atol=1e-9)
    np.testing.assert_allclose([e.prediction for e in ours], pipeline.predict_proba(holdout),
                               rtol=0, atol=1e-12)
    single = explainer.explain(holdout[7:8])  # alone: the same to float64 rounding
    np.testing.assert_allclose(values_of([single], schema.feature_names),
                               values_of(ours[7:8], schema.feature_names), rtol=0, atol=1e-12)


def test_reasons_are_the_log_odds_of_refusal(credit_lr):
    """Adverse class 0 ('bad'): reasons are the features with negative values for
    'good', largest push first, at most four, never a protected one (those among the
    first four are withheld apart), never a value in the applicant's favour (those among
    the first four are contrary reasons)."""
    explainer, schema, _, holdout, _ = credit_lr
    protected = {schema.feature_names[j] for j in schema.protected}
    checked = contrary = 0
    for row, e in zip(holdout, explainer.explain_batch(holdout), strict=True):
        pushes = [n for _, n in sorted((v, n) for n, v in e.shap_values.items() if v < 0)]
        open_ = [n for n in pushes if n not in protected]
        good = {n for n in open_ if explainer.reasons.favourable(
            schema.feature_names.index(n), row[schema.feature_names.index(n)])}
        assert [r.feature for r in e.reasons] == [n for n in open_ if n not in good][:4]
        assert [r.feature for r in e.withheld_reasons or []] == [
            n for n in pushes[:4] if n in protected]
        assert [r.feature for r in e.contrary_reasons or []] == [
            n for n in open_[:4] if n in good]
        assert all(r.contribution == -e.shap_values[r.feature] for r in e.reasons)
        checked += bool(e.withheld_reasons)
        contrary += bool(e.contrary_reasons)
    assert checked > 0  # some refusals owe part of their score to a protected attribute
    assert contrary > 0  # and some to a value in the applicant's favour


def test_refuses_models_it_cannot_explain_exactly(credit, tmp_path):
    interacting = Pipeline([
        ("columns", ColumnTransformer([("pairs", PolynomialFeatures(2, interaction_only=True),
                                        [1, 4])], remainder=StandardScaler())),
        ("lr", LogisticRegression(max_iter=100)),
    ]).fit(credit.reference[:200], credit.y[:200])
    joblib.dump(interacting, tmp_path / "pairs.joblib")
    explainer = LinearShapExplainer("p", credit.schema, artifact=tmp_path / "pairs.joblib")
    with pytest.raises(ExplainerError, match="depend on input columns .* not additive"):
        explainer.fit(credit.reference)
    three = LogisticRegression(max_iter=100).fit(credit.reference[:200], credit.X[:200, 0])
    joblib.dump(three, tmp_path / "three.joblib")
    explainer = LinearShapExplainer("t", credit.schema, artifact=tmp_path / "three.joblib")
    with pytest.raises(ExplainerError, match="binary classifiers; this one has 4 classes"):
        explainer.fit(credit.reference)
    with pytest.raises(ExplainerError, match="not fitted"):
        LinearShapExplainer("x", credit.schema, artifact=credit.lr_path).explain(credit.row(0))


def test_bare_logistic_regression(credit):
    """Without a pipeline the columns are the inputs: phi_j = w_j (x_j - mean_j)."""
    explainer = LinearShapExplainer("lr", credit.schema, artifact=credit.lr_path)
    explainer.fit(credit.reference)
    row = credit.row(3)
    ours = explainer.explain(row)
    expected = credit.lr.coef_[0] * (row[0] - credit.reference.astype(np.float64).mean(axis=0))
    got = [ours.shap_values[n] for n in credit.schema.feature_names]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
