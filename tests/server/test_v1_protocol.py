"""KServe V1 protocol: instances in, predictions (the first output) out, same errors,
and gateway deployments still record decisions."""

from __future__ import annotations

import json

import joblib

from tests.fakes import http_call


def test_v1_predict_equals_sklearn_predict(lr_pod, credit_models, holdout_x) -> None:
    x = holdout_x[:4]
    status, _, body = http_call("POST", f"{lr_pod.http_url}/v1/models/credit-lr:predict",
                                {"instances": x.tolist()})
    assert status == 200
    expected = joblib.load(credit_models["lr"]).predict(x)
    assert json.loads(body)["predictions"] == expected.tolist()
    models = json.loads(http_call("GET", f"{lr_pod.http_url}/v1/models")[2])
    assert models == {"models": ["credit-lr"]}
    status, _, body = http_call("GET", f"{lr_pod.http_url}/v1/models/credit-lr")
    assert status == 200 and json.loads(body) == {"name": "credit-lr", "ready": True}


def test_v1_errors(lr_pod) -> None:
    url = f"{lr_pod.http_url}/v1/models"
    cases = [
        ("credit-lr:predict", {"rows": []}, 400, "instances"),
        ("credit-lr:predict", {"instances": []}, 400, "empty"),
        ("credit-lr:predict", {"instances": [["a"] * 20]}, 400, "FP32"),
        ("credit-lr:predict", {"instances": [[1.0] * 3]}, 400, "shape"),
        ("nope:predict", {"instances": [[1.0] * 20]}, 404, "nope"),
        ("credit-lr:explain", {"instances": [[1.0] * 20]}, 501, "decisions"),
    ]
    for path, body, status, words in cases:
        got, _, reply = http_call("POST", f"{url}/{path}", body)
        assert got == status, (path, body, reply)
        assert words in json.loads(reply)["error"]
