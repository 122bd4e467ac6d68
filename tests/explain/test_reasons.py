"""Reason codes in words: sentences from the encoding's wording, medians of the
favourable reference rows, top k, protected features withheld, favourable values set
aside as contrary reasons, anchors in words."""

from __future__ import annotations

import numpy as np
import pytest

from examples.credit.encoding import encoding_spec
from explain.alibi import AnchorTabularExplainer
from explain.base import FeatureSchema
from explain.reasons import ReasonWriter, format_number
from explain.registry import reason_writer
from explain.settings import ExplainSpec

CHECKING, DURATION, HISTORY, PURPOSE, AMOUNT, SAVINGS = 0, 1, 2, 3, 4, 5
INSTALMENT, CREDITS = 7, 15


@pytest.fixture(scope="module")
def credit_words(credit_models):
    spec = ExplainSpec(method="linear_shap", encoding=credit_models["encoding"],
                       reference_data=credit_models["reference"],
                       reference_outcomes=credit_models["reference_outcomes"],
                       model_artifact={"lr": credit_models["lr"]})
    schema, reference, outcomes = spec.schema(), spec.load_reference(), spec.load_outcomes()
    return schema, reference, outcomes, reason_writer(spec, schema, reference, outcomes)


def code(schema, column, category):
    return float(schema.category_map[column].index(category))


def adverse_row(schema, reference, outcomes):
    """A reference row set to values that all count against the applicant in the
    columns the tests push: no money on the checking account, a loan above the median
    duration and amount, savings below 100 DM, a delay in past repayments."""
    repaid = reference[outcomes == 1]
    row = reference[:1].copy()
    row[0, CHECKING] = code(schema, CHECKING, "... < 0 DM")
    row[0, HISTORY] = code(schema, HISTORY, "delay in paying off in the past")
    row[0, SAVINGS] = code(schema, SAVINGS, "... < 100 DM")
    row[0, DURATION] = np.median(repaid[:, DURATION]) + 12
    row[0, AMOUNT] = np.median(repaid[:, AMOUNT]) + 1000
    return row


def test_schema_reads_the_wording_of_the_encoding(credit_words):
    schema = credit_words[0]
    assert schema == FeatureSchema.from_encoding(encoding_spec())
    assert schema.description(DURATION) == "Loan duration" and schema.units[DURATION] == "months"
    assert schema.reason_code(0) == "checking_account"
    assert schema.class_descriptions == {0: "loans not repaid", 1: "repaid loans"}
    assert [schema.feature_names[j] for j in schema.protected] == [
        "personal_status_and_sex", "age_in_years", "foreign_worker"]
    assert schema.favourable[HISTORY] == [
        "all credits at this bank paid back duly", "existing credits paid back duly till now",
        "no credits taken/ all credits paid back duly"]
    assert schema.adverse_direction == {DURATION: "higher", AMOUNT: "higher",
                                        INSTALMENT: "higher"}


def test_schema_rejects_unknown_favourable_values():
    raw = {"feature_names": ["tenure_years", "region"], "categorical": {"1": ["north", "south"]}}
    with pytest.raises(ValueError, match=r"favourable.region: unknown categories \['west'\]"):
        FeatureSchema.from_encoding({**raw, "favourable": {"region": ["south", "west"]}})
    with pytest.raises(ValueError, match="adverse_direction.tenure_years: 'up'"):
        FeatureSchema.from_encoding({**raw, "adverse_direction": {"tenure_years": "up"}})
    with pytest.raises(ValueError, match="adverse_direction.region"):
        FeatureSchema.from_encoding({**raw, "adverse_direction": {"region": "higher"}})
    with pytest.raises(ValueError, match="favourable: unknown feature 'age'"):
        FeatureSchema.from_encoding({**raw, "favourable": {"age": []}})


def test_sentences(credit_words):
    schema, reference, outcomes, writer = credit_words
    repaid = reference[outcomes == 1]
    duration = float(np.median(repaid[:, DURATION]))
    amount = float(np.median(repaid[:, AMOUNT]))
    assert writer.population == "repaid loans"
    assert writer.sentence(0, code(schema, 0, "... < 0 DM")) == (
        "Checking account balance below 0 DM")
    assert writer.sentence(DURATION, 36) == (
        f"Loan duration of 36 months, above the median of {duration:g} months among "
        "repaid loans")
    assert writer.sentence(DURATION, duration - 6) == (
        f"Loan duration of {duration - 6:g} months, below the median of {duration:g} months "
        "among repaid loans")
    assert writer.sentence(AMOUNT, 14318) == (
        f"Credit amount of 14,318 DM, above the median of {format_number(amount)} DM among "
        "repaid loans")
    assert writer.sentence(CREDITS, 3) == (
        "3 existing credits at this bank, above the median of 1 among repaid loans")
    assert writer.sentence(DURATION, duration).endswith("equal to the median among repaid loans")
    assert writer.sentence(INSTALMENT, 4).startswith(
        "Instalment share of disposable income in class 4 of 4 (4 the largest), ")


def test_without_outcomes_the_median_is_of_every_reference_row(credit_words):
    schema, reference, _, _ = credit_words
    writer = ReasonWriter.fit(schema, reference)
    median = float(np.median(reference[:, DURATION]))
    assert writer.sentence(DURATION, 48) == (
        f"Loan duration of 48 months, above the median of {median:g} months among "
        "applicants in the reference data")
    with pytest.raises(ValueError, match="3 reference outcomes for 800 reference rows"):
        ReasonWriter.fit(schema, reference, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="no reference row has a favourable outcome"):
        ReasonWriter.fit(schema, reference, np.zeros(800, int))


def test_wording_is_data_not_code():
    """Any data set: the sentences come from its own encoding, and without wording
    from its column names."""
    raw = {"feature_names": ["tenure_years", "region"], "categorical": {"1": ["north", "south"]},
           "class_names": ["declined", "accepted"],
           "descriptions": {"tenure_years": "Time with the employer"},
           "units": {"tenure_years": "years"},
           "category_descriptions": {"region": {"south": "Lives in the south"}},
           "class_descriptions": {"accepted": "accepted applications"}}
    schema = FeatureSchema.from_encoding(raw)
    reference = np.array([[1, 0], [3, 1], [5, 1], [10, 0]], np.float32)
    writer = ReasonWriter.fit(schema, reference, np.array([0, 1, 1, 0]))
    assert writer.sentence(0, 2) == (
        "Time with the employer of 2 years, below the median of 4 years among accepted "
        "applications")
    assert writer.sentence(1, 1) == "Lives in the south"
    assert writer.sentence(1, 0) == "Region: north"  # no wording: the name and category
    bare = ReasonWriter(FeatureSchema(["duration_in_month"]))
    assert bare.sentence(0, 24) == "Duration in month of 24"


def test_top_k_order_and_protected_withheld(credit_words):
    schema, reference, outcomes, writer = credit_words
    row = adverse_row(schema, reference, outcomes)
    contributions = np.zeros(20)
    contributions[[0, 1, 8, 3, 4, 5, 12]] = [0.9, 0.5, 0.8, 0.3, 0.2, 0.1, -0.4]
    reasons, withheld, contrary = writer.from_contributions(row, contributions)
    assert [r.feature for r in reasons] == [schema.feature_names[j] for j in (0, 1, 3, 4)]
    assert [r.contribution for r in reasons] == [0.9, 0.5, 0.3, 0.2]
    assert [r.feature for r in withheld] == ["personal_status_and_sex"]  # 2nd of the top 4
    assert contrary == []
    first = reasons[0]
    assert first.code == "checking_account"
    assert first.value == schema.value(0, row[0, 0]) and isinstance(first.value, str)
    assert reasons[1].value == float(row[0, 1])
    assert writer.from_contributions(row, -np.abs(contributions)) == ([], [], [])


def test_favourable_category_is_a_contrary_reason_not_a_reason(credit_words):
    """A clean repayment record that SHAP says pushed toward refusal is set aside for
    review; the next adverse features fill the four reasons."""
    schema, reference, outcomes, writer = credit_words
    row = adverse_row(schema, reference, outcomes)
    row[0, HISTORY] = code(schema, HISTORY, "existing credits paid back duly till now")
    contributions = np.zeros(20)
    contributions[[HISTORY, CHECKING, DURATION, AMOUNT, SAVINGS, PURPOSE]] = [
        0.9, 0.8, 0.5, 0.3, 0.2, 0.1]
    reasons, withheld, contrary = writer.from_contributions(row, contributions)
    assert [r.feature for r in reasons] == [
        schema.feature_names[j] for j in (CHECKING, DURATION, AMOUNT, SAVINGS)]
    assert withheld == []
    assert [(r.code, r.sentence, r.contribution) for r in contrary] == [
        ("credit_history", "Current credits repaid on time so far", 0.9)]
    assert "Current credits repaid on time so far" not in [r.sentence for r in reasons]
    row[0, HISTORY] = code(schema, HISTORY, "delay in paying off in the past")  # adverse
    reasons, _, contrary = writer.from_contributions(row, contributions)
    assert reasons[0].sentence == "Delays in repaying credits in the past" and contrary == []


def test_numeric_value_on_the_favourable_side_is_a_contrary_reason(credit_words):
    """A loan amount below (or at) the median of repaid loans is not a reason for a
    refusal, however SHAP signs it; above the median it is."""
    schema, reference, outcomes, writer = credit_words
    median = float(np.median(reference[outcomes == 1][:, AMOUNT]))
    row = adverse_row(schema, reference, outcomes)
    contributions = np.zeros(20)
    contributions[[AMOUNT, CHECKING, DURATION, SAVINGS, PURPOSE]] = [0.9, 0.8, 0.5, 0.2, 0.1]
    for below in (median - 500, median):
        row[0, AMOUNT] = below
        reasons, _, contrary = writer.from_contributions(row, contributions)
        assert [r.feature for r in reasons] == [
            schema.feature_names[j] for j in (CHECKING, DURATION, SAVINGS, PURPOSE)]
        assert [r.feature for r in contrary] == ["credit_amount"]
        assert contrary[0].value == below
    row[0, AMOUNT] = median + 500
    reasons, _, contrary = writer.from_contributions(row, contributions)
    assert reasons[0].feature == "credit_amount" and contrary == []
    assert writer.favourable(AMOUNT, median - 500) and not writer.favourable(AMOUNT, median + 1)
    assert not writer.favourable(CREDITS, 1)  # no adverse direction: never favourable
    assert not ReasonWriter(schema).favourable(AMOUNT, 1)  # no median: never favourable


def test_favourable_anchor_condition_is_a_contrary_reason(credit_words):
    schema, reference, outcomes, writer = credit_words
    row = adverse_row(schema, reference, outcomes)
    row[0, CHECKING] = code(schema, CHECKING,
                            "... >= 200 DM / salary assignments for at least 1 year")
    conditions = ['status_of_existing_checking_account = "... >= 200 DM / salary '
                  'assignments for at least 1 year"', "duration_in_month > 24.00"]
    reasons, _, contrary = writer.from_anchor(row, [CHECKING, DURATION], conditions, [0.3, 0.1])
    assert [r.sentence for r in reasons] == ["Loan duration of more than 24 months"]
    assert [r.feature for r in contrary] == ["status_of_existing_checking_account"]


def test_contributions_toward_the_adverse_outcome(credit_words):
    schema = credit_words[0]
    values = np.arange(40, dtype=float).reshape(2, 20)
    bad = ReasonWriter(schema, adverse=[0])
    np.testing.assert_array_equal(bad.toward_adverse(values), values[0])
    np.testing.assert_array_equal(bad.toward_adverse(values[1:]), -values[1])  # log-odds of 1
    np.testing.assert_array_equal(ReasonWriter(schema, adverse=[1]).toward_adverse(values[1:]),
                                  values[1])
    three = np.arange(60, dtype=float).reshape(3, 20)
    np.testing.assert_array_equal(ReasonWriter(schema, adverse=[0, 2]).toward_adverse(three),
                                  three[0] + three[2])
    every = ReasonWriter(schema, adverse=[0, 1])
    assert not every.toward_adverse(values[1:]).any()  # always adverse: nothing pushes


def test_anchor_conditions_in_words(credit_words):
    schema, reference, outcomes, writer = credit_words
    row = adverse_row(schema, reference, outcomes)
    conditions = ['status_of_existing_checking_account = "... < 0 DM"',
                  "duration_in_month > 24.00", "12.00 < duration_in_month <= 24.00",
                  "credit_amount > 1262.00"]
    reasons, _, _ = writer.from_anchor(row, [0, 1, 1, 4], conditions, [0.05, 0.3, 0.1, 0.2])
    assert [r.sentence for r in reasons] == [
        "Loan duration of more than 24 months",
        "Credit amount of more than 1,262 DM",
        "Loan duration of more than 12 and at most 24 months",
        "Checking account balance below 0 DM",
    ]


def test_anchor_reasons_of_a_refusal(credit, credit_models):
    """The anchor explainer of a refused applicant: its conditions in words, ordered by
    the precision each brought, adding up from the model's rate on the reference."""
    writer = ReasonWriter.fit(credit.schema, credit.reference, credit.y[:800], top_k=10)
    explainer = AnchorTabularExplainer("gb", credit.schema, seed=1, threshold=0.9,
                                       reasons=writer)
    explainer.fit(credit.reference)
    refused = explainer.explain(credit.row(5), credit.gb.predict_proba)
    assert refused.explained_class_name == "bad"
    assert {r.feature for r in refused.reasons} == {
        credit.schema.feature_names[f] for f in refused.anchor_features}
    gains = [r.contribution for r in refused.reasons]
    assert gains == sorted(gains, reverse=True)
    base = float(np.mean(credit.gb.predict(credit.reference) == 0))
    assert base + sum(gains) == pytest.approx(refused.precision, abs=1e-12)
    assert any(r.sentence.startswith("Duration in month of more than 24") for r in refused.reasons)
    approved = next(e for e in (explainer.explain(credit.row(i), credit.gb.predict_proba)
                                for i in range(10)) if e.explained_class_name == "good")
    assert approved.reasons == [] and approved.anchor
