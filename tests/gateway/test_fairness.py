"""The fairness figures (``gateway.fairness``, ``gateway.tally``, ``gateway.groups``)
against fairlearn and scipy on the same data, and the intervals against published
examples."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy.stats import binomtest
from scipy.stats.contingency import relative_risk
from sklearn.metrics import accuracy_score

from gateway.fairness import (
    Counts,
    group_fairness,
    group_figures,
    katz_ratio_interval,
    newcombe_difference,
    wilson_interval,
)
from gateway.groups import OTHER, MonitoringSpec, attributes_of, resolved
from gateway.tally import Tally

ENCODING = Path(__file__).resolve().parents[2] / "examples" / "credit" / "models" / "encoding.json"


@pytest.mark.parametrize("x, n", [(81, 263), (0, 10), (10, 10), (1, 29), (150, 300)])
def test_wilson_matches_scipy(x: int, n: int) -> None:
    expected = binomtest(x, n).proportion_ci(0.95, method="wilson")
    assert wilson_interval(x, n, 0.95) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_newcombe_hybrid_score_matches_the_paper() -> None:
    # Newcombe (1998), example (a): 56/70 - 48/80 = 0.2000, method 10: 0.0524 to 0.3339
    d = newcombe_difference(56, 70, 48, 80, 0.95)
    assert d.value == pytest.approx(0.2)
    assert (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("x1, n1, x2, n2", [(10, 50, 20, 40), (30, 31, 5, 100), (7, 9, 60, 80)])
def test_katz_ratio_matches_scipy(x1: int, n1: int, x2: int, n2: int) -> None:
    expected = relative_risk(x1, n1, x2, n2)
    ci = expected.confidence_interval(0.95)
    got = katz_ratio_interval(x1, n1, x2, n2, 0.95)
    assert got.value == pytest.approx(expected.relative_risk)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high))


def test_ratio_of_a_group_never_approved_has_a_finite_upper_bound() -> None:
    got = katz_ratio_interval(0, 40, 30, 60, 0.95)
    assert got.value == 0.0 and 0 < got.low and got.high < 0.5  # below 0.8: alerts
    assert katz_ratio_interval(3, 40, 0, 60).value is None  # reference never approved


def _world(seed: int = 3, n: int = 2000):
    """Rows (FP32 [n, 20] like the credit input), truth and two models' labels."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 20), np.float32)
    x[:, 8] = rng.choice(4, n, p=[0.3, 0.1, 0.1, 0.5])      # personal_status_and_sex
    x[:, 12] = rng.integers(19, 76, n)                      # age_in_years
    x[:, 19] = rng.choice(2, n, p=[0.1, 0.9])               # foreign_worker
    truth = (rng.random(n) < 0.7).astype(int)
    fair = np.where(rng.random(n) < 0.8, truth, 1 - truth)
    female = x[:, 8] == 0
    biased = np.where(female & (rng.random(n) < 0.6), 0, fair)
    return x, truth, {"fair": fair, "biased": biased}


SPEC = {
    "encoding": str(ENCODING),
    "groups": [
        {"name": "sex", "feature": "personal_status_and_sex",
         "categories": {"female": ["female : divorced/separated/married"],
                        "male": ["male : divorced/separated", 2, 3]}},
        {"name": "age", "feature": "age_in_years", "bands": [0, 25, 40, 60, 200]},
        {"name": "foreign", "column": 19, "categories": {"yes": [1], "no": [0]}},
    ],
    "reference": {"sex": "male", "age": "40-60", "foreign": "no"},
}


def _tally(x, truth, labels) -> Tally:
    spec = MonitoringSpec.model_validate(SPEC)
    tally = Tally(attributes_of(spec), spec.approval)
    for i in range(len(x)):
        decision = SimpleNamespace(
            status="ok", time=1_700_000_000.0 + i, parameters={},
            inputs={"input": {"datatype": "FP32", "shape": [1, 20],
                              "data": x[i].tolist()}},
            outputs={m: {"label": {"datatype": "INT64", "shape": [1],
                                   "data": [int(v[i])]}} for m, v in labels.items()},
            feedback={"truth": [int(truth[i])], "time": 0.0})
        tally.add_decision(decision)
    return tally


def test_group_figures_match_fairlearn() -> None:
    x, truth, labels = _world()
    tally = _tally(x, truth, labels)
    sex = np.where(x[:, 8] == 0, "female", "male")
    age = np.select([x[:, 12] < 25, x[:, 12] < 40, x[:, 12] < 60], ["0-25", "25-40", "40-60"],
                    "60-200")
    for model, predicted in labels.items():
        for attribute, groups in (("sex", sex), ("age", age)):
            frame = MetricFrame(
                metrics={"selection_rate": selection_rate, "accuracy": accuracy_score,
                         "tpr": true_positive_rate, "fpr": false_positive_rate},
                y_true=truth, y_pred=predicted, sensitive_features=groups)
            for group, row in frame.by_group.iterrows():
                mine = group_figures(tally.total((model, attribute, str(group))))
                assert mine["decisions"] == int(np.sum(groups == group))
                assert mine["approval_rate"] == pytest.approx(row["selection_rate"])
                assert mine["accuracy"] == pytest.approx(row["accuracy"])
                assert mine["tpr"] == pytest.approx(row["tpr"])
                assert mine["fpr"] == pytest.approx(row["fpr"])
        female, male = (tally.total((model, "sex", g)) for g in ("female", "male"))
        rates = sorted(c.approved / c.decisions for c in (female, male))
        fairness = group_fairness(female, male)
        assert min(fairness["disparate_impact"].value,
                   1 / fairness["disparate_impact"].value) == pytest.approx(
            demographic_parity_ratio(truth, predicted, sensitive_features=sex))
        assert rates[0] / rates[1] == pytest.approx(
            demographic_parity_ratio(truth, predicted, sensitive_features=sex))
        assert abs(fairness["equal_opportunity_difference"].value) == pytest.approx(
            equal_opportunity_difference(truth, predicted, sensitive_features=sex))
        tpr_d = fairness["equal_opportunity_difference"].value
        fpr_d = female.false_positives / female.negatives - male.false_positives / male.negatives
        assert max(abs(tpr_d), abs(fpr_d)) == pytest.approx(
            equalized_odds_difference(truth, predicted, sensitive_features=sex))
        assert fairness["average_odds_difference"].value == pytest.approx((tpr_d + fpr_d) / 2)


def test_biased_model_fails_the_four_fifths_rule_and_the_fair_one_passes() -> None:
    x, truth, labels = _world()
    tally = _tally(x, truth, labels)
    verdicts = {}
    for model in labels:
        di = group_fairness(tally.total((model, "sex", "female")),
                            tally.total((model, "sex", "male")))["disparate_impact"]
        assert di.low < di.value < di.high
        verdicts[model] = di.high < 0.8
    assert verdicts == {"fair": False, "biased": True}


def test_attributes_resolve_names_through_the_encoding() -> None:
    spec = MonitoringSpec.model_validate(SPEC)
    sex, age, foreign = attributes_of(spec)
    assert sex.column == 8 and sex.groups == ("female", "male", OTHER)
    assert [sex.group_of(v) for v in (0.0, 1.0, 2.0, 3.0, 7.0, "NaN")] == \
        ["female", "male", "male", "male", OTHER, OTHER]
    assert [age.group_of(v) for v in (19.0, 25.0, 59.9, 75.0, 250.0)] == \
        ["0-25", "25-40", "40-60", "60-200", OTHER]
    assert foreign.reference == "no" and foreign.group_of(1.0) == "yes"
    stored = resolved(spec).model_dump(mode="json")
    assert stored["encoding"] is None and stored["groups"][0]["column"] == 8
    assert stored["groups"][0]["categories"] == {"female": [0], "male": [1, 2, 3]}
    assert attributes_of(MonitoringSpec.model_validate(json.loads(json.dumps(stored)))) == \
        attributes_of(spec)


def test_parameter_attribute_and_windows() -> None:
    spec = MonitoringSpec.model_validate({
        "groups": [{"name": "channel", "parameter": "channel",
                    "categories": {"web": ["web"], "branch": ["branch"]}}],
        "windows": ["hour", "day", "day_of_week"], "timezone": "Europe/Berlin"})
    tally = Tally(attributes_of(spec), spec.approval)
    monday_2330_utc = 1_700_436_600.0  # 2023-11-19 23:30 UTC = Monday 00:30 in Berlin
    for when, channel, label in ((monday_2330_utc, "web", 1), (monday_2330_utc + 3600,
                                 "branch", 0), (monday_2330_utc, None, 1)):
        decision = SimpleNamespace(
            status="ok", time=when, parameters={"channel": channel} if channel else {},
            inputs={"input": {"shape": [1, 2], "data": [0, 0]}},
            outputs={"m": {"label": {"data": [label]}}}, feedback=None)
        tally.add_decision(decision)
    zone = ZoneInfo("Europe/Berlin")
    days = tally.buckets("day", zone)
    assert list(days) == ["2023-11-20"]
    assert list(tally.buckets("day_of_week", zone)) == ["monday"]
    assert list(tally.buckets("hour", zone)) == ["2023-11-19T23:00Z", "2023-11-20T00:00Z"]
    assert days["2023-11-20"][("m", "channel", "web")] == Counts(1, 1)
    assert days["2023-11-20"][("m", "channel", OTHER)] == Counts(1, 1)
    tally.trim(monday_2330_utc + 1800)
    assert tally.total(("m", "channel", "web")) == Counts()
    assert tally.total(("m", "channel", "branch")) == Counts(1, 0)


@pytest.mark.parametrize("bad, message", [
    ({"groups": [{"name": "a", "column": 1, "feature": "x", "bands": [0, 1]}]},
     "exactly one of feature, column, parameter"),
    ({"groups": [{"name": "a", "column": 1, "bands": [5, 1]}]}, "increasing"),
    ({"groups": [{"name": "a", "column": 1, "categories": {"other": [1]}}]}, "reserved"),
    ({"groups": [{"name": "a", "column": 1, "bands": [0, 1]}], "reference": {"a": "x"}},
     "is not one of"),
    ({"groups": [{"name": "a", "column": 1, "bands": [0, 1]}],
      "alerts": [{"metric": "disparate_impact"}]}, "exactly one of below, above"),
])
def test_bad_specs_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitoringSpec.model_validate(bad)


def test_unknown_feature_or_category_is_refused() -> None:
    spec = MonitoringSpec.model_validate({**SPEC, "reference": {}, "groups": [
        {"name": "sex", "feature": "gender", "categories": {"f": [0]}}]})
    with pytest.raises(ValueError, match="'gender' is not in the encoding"):
        resolved(spec)
    spec = MonitoringSpec.model_validate({**SPEC, "reference": {}, "groups": [
        {"name": "sex", "feature": "personal_status_and_sex", "categories": {"f": ["woman"]}}]})
    with pytest.raises(ValueError, match="category 'woman' is not one of"):
        resolved(spec)


def test_estimates_are_finite_and_ordered() -> None:
    counts = Counts(decisions=40, approved=10, scored=30, correct=20, positives=20,
                    true_positives=8, negatives=10, false_positives=2)
    reference = Counts(100, 70, 90, 70, 60, 50, 30, 5)
    for name, estimate in group_fairness(counts, reference).items():
        assert estimate.low <= estimate.value <= estimate.high, name
        assert all(math.isfinite(v) for v in (estimate.low, estimate.high))
