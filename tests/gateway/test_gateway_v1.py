"""KServe V1 requests to a gateway deployment still make decisions."""

from __future__ import annotations

import json

import numpy as np

from tests.fakes import http_call


def test_v1_through_the_gateway_records_a_decision(gateway, holdout_x) -> None:
    status, headers, body = http_call("POST", f"{gateway.http_url}/v1/models/plain:predict",
                                      {"instances": holdout_x[:2].tolist()})
    assert status == 200
    predictions = json.loads(body)["predictions"]
    decision_id = headers["x-arbiter-decision-id"]
    record = json.loads(http_call("GET", f"{gateway.http_url}/v2/decisions/{decision_id}")[2])
    assert record["deployment"] == "plain"
    assert record["outputs"][record["routed"]]["label"]["data"] == predictions
    assert np.asarray(record["inputs"]["input"]["data"]).size == 40
