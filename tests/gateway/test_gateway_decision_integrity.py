"""Feedback and decision records lose nothing: truth values are checked before anything
is counted, immediate feedback waits for the shadows, and a reused request id never
overwrites an earlier decision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fakes import http_call
from tests.gateway.conftest import rest_infer


def _feedback(url: str, deployment: str, body) -> tuple[int, dict]:
    status, _, reply = http_call("POST", f"{url}/v2/deployments/{deployment}/feedback", body)
    return status, json.loads(reply)


def _decision(url: str, decision_id: str) -> dict:
    return json.loads(http_call("GET", f"{url}/v2/decisions/{decision_id}")[2])


@pytest.mark.parametrize("truth", [["yes"], [None], [0.5], [{}], ["1"], [True, 1]])
def test_truth_of_the_wrong_kind_is_400_and_keeps_the_slot(gateway, holdout_x, truth) -> None:
    status, _, doc = rest_infer(gateway.http_url, "plain", holdout_x[:1])
    decision_id = doc["parameters"]["decision_id"]
    status, reply = _feedback(gateway.http_url, "plain", {"decision_id": decision_id,
                                                         "truth": truth})
    assert status == 400 and "truth" in reply["error"]
    label = next(o["data"] for o in doc["outputs"] if o["name"] == "label")
    status, reply = _feedback(gateway.http_url, "plain", {"decision_id": decision_id,
                                                         "truth": label})
    assert status == 200 and reply["status"] == "accepted"
    # a bad truth on a decision that has feedback is still a 400, not "duplicate"
    status, reply = _feedback(gateway.http_url, "plain", {"decision_id": decision_id,
                                                         "truth": ["yes"]})
    assert status == 400


def test_immediate_feedback_scores_every_challenger(gateway, holdout_x) -> None:
    for row in range(10):
        status, _, doc = rest_infer(gateway.http_url, "cc", holdout_x[row : row + 1])
        assert status == 200
        status, reply = _feedback(gateway.http_url, "cc", {
            "decision_id": doc["parameters"]["decision_id"], "truth": [1]})
        assert status == 200 and reply["status"] == "accepted"
        assert sorted(reply["rewards"]) == ["gbm", "lr", "mlp"]


def test_decision_ids_are_the_servers_never_the_clients(gateway, holdout_x) -> None:
    """A client's request id is echoed (OIP) but never becomes a decision id, so it can
    neither be predicted nor claimed first: reusing it makes a second decision."""
    url = gateway.http_url
    request_id = f"reused-{np.random.default_rng().integers(1 << 40)}"
    status, _, first = rest_infer(url, "plain", holdout_x[:1], id=request_id)
    assert status == 200 and first["id"] == request_id
    first_id = first["parameters"]["decision_id"]
    assert first_id != request_id and len(first_id) == 32 and int(first_id, 16) >= 0
    assert _feedback(url, "plain", {"decision_id": first_id, "reward": 1})[0] == 200
    assert _feedback(url, "plain", {"decision_id": request_id, "reward": 1})[0] == 404

    status, _, second = rest_infer(url, "ab", holdout_x[1:2], id=request_id)
    assert status == 200 and second["id"] == request_id  # the OIP id is echoed
    second_id = second["parameters"]["decision_id"]
    assert second_id not in (request_id, first_id)

    original = _decision(url, first_id)
    assert original["deployment"] == "plain" and original["feedback"]["reward"] == 1
    assert original["request_id"] == request_id
    assert _decision(url, second_id)["deployment"] == "ab"
    status, reply = _feedback(url, "plain", {"decision_id": first_id, "reward": 0})
    assert status == 200 and reply["status"] == "duplicate"


def test_non_finite_inputs_are_recorded_as_names(gateway, holdout_x) -> None:
    data: list = holdout_x[0].astype(float).tolist()
    data[1], data[4] = "NaN", "Infinity"
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": data}]}
    # the ONNX trees take NaN (the sklearn pipeline rejects it: a 500 from the model)
    status, _, reply = http_call("POST", f"{gateway.http_url}/v2/models/trees/infer", body)
    assert status == 200, reply
    decision_id = json.loads(reply)["parameters"]["decision_id"]
    recorded = _decision(gateway.http_url, decision_id)["inputs"]["input"]["data"]
    assert recorded[1] == "NaN" and recorded[4] == "Infinity"
    assert recorded[0] == pytest.approx(holdout_x[0, 0])
