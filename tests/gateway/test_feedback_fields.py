"""Feedback items are read strictly: a field the gateway does not know (a typo such as
``corection``) is refused with 400 naming it, never ignored; and the credit example
declares the labels its truth may take, so an out-of-range truth is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.decisions import Decision
from gateway.feedback import FIELDS, parse_feedback, score_truth
from protos.errors import InvalidRequestError
from tests.fakes import http_call
from tests.gateway.conftest import rest_infer
from tests.servers import ServerThread

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit" / "gateway.yaml"


def _feedback(gateway: ServerThread, body) -> tuple[int, object]:
    status, _, reply = http_call(
        "POST", f"{gateway.http_url}/v2/deployments/eg/feedback", body)
    return status, json.loads(reply)


def _record(gateway: ServerThread, decision_id: str) -> dict:
    return json.loads(http_call("GET", f"{gateway.http_url}/v2/decisions/{decision_id}")[2])


def test_a_misspelt_correction_is_refused_and_changes_nothing(gateway, holdout_x) -> None:
    status, _, doc = rest_infer(gateway.http_url, "eg", holdout_x[:1])
    assert status == 200
    decision_id = doc["parameters"]["decision_id"]
    assert _feedback(gateway, {"decision_id": decision_id, "reward": 1.0})[0] == 200

    status, reply = _feedback(gateway, {"decision_id": decision_id, "reward": 0.0,
                                        "corection": True})
    assert status == 400
    assert reply["error"].startswith("unknown feedback field 'corection'")
    status, reply = _feedback(gateway, [{"decision_id": decision_id, "reward": 0.0,
                                         "correction": True},
                                        {"decision_id": decision_id, "rewrad": 0.0}])
    assert status == 400 and "'rewrad'" in reply["error"]  # the list is refused whole
    record = _record(gateway, decision_id)
    assert record["feedback"]["reward"] == 1.0 and record["feedback_history"] == []

    status, reply = _feedback(gateway, {"decision_id": decision_id, "reward": 0.0,
                                        "correction": True})
    assert status == 200 and reply["status"] == "corrected"


@pytest.mark.parametrize("item", [
    {"decision_id": "d", "reward": 1, "extra": 1},
    {"decision_id": "d", "truth": [1], "Correction": True},
    {"decision_id": "d", "reward": 1, "feedback-token": "t"},
])
def test_every_unknown_field_is_named(item) -> None:
    unknown = next(k for k in item if k not in FIELDS)
    with pytest.raises(InvalidRequestError, match=f"unknown feedback field '{unknown}'"):
        parse_feedback(item)


def test_the_known_fields_are_accepted() -> None:
    parsed = parse_feedback({"decision_id": "d", "truth": [1], "correction": True,
                             "feedback_token": "t"})
    assert (parsed.decision_id, parsed.truth, parsed.correction) == ("d", [1], True)


def test_the_credit_example_refuses_a_truth_outside_its_labels() -> None:
    config = load_config(EXAMPLE)
    decision = Decision(
        id="d", time=0.0, deployment="credit", router="thompson", routed="lr",
        outputs={"lr": {"label": {"datatype": "INT64", "shape": [1], "data": [1]}}})
    for name, deployment in config.deployments.items():
        assert deployment.feedback.labels == [0, 1], name
        assert score_truth(decision, [0], deployment.feedback) == {"lr": 0.0}
        with pytest.raises(InvalidRequestError, match="not one of the labels"):
            score_truth(decision, [2], deployment.feedback)
