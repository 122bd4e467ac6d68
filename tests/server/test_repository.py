"""The model repository extension (MLServer / Triton): index, unload, load."""

from __future__ import annotations

import json

import numpy as np
import tritonclient.http as httpclient

from tests.fakes import (
    CreditLikeWrapper,
    credit_like_settings,
    expected_credit_like,
    http_call,
    model_pod,
)
from tests.servers import ServerThread


def _infer(pod: ServerThread, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(pod.http_hostport)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer("credit-like", [tensor]).as_numpy("probabilities")


def test_unload_then_load() -> None:
    x = np.linspace(0, 1, 40, dtype=np.float32).reshape(2, 20)
    settings = credit_like_settings("credit-like")
    with ServerThread(model_pod(CreditLikeWrapper(), settings)) as pod:
        base = pod.http_url
        status, _, body = http_call("POST", base + "/v2/repository/index", {})
        assert status == 200
        assert json.loads(body) == [{"name": "credit-like", "version": "1", "state": "READY"}]

        assert http_call("POST", base + "/v2/repository/models/credit-like/unload", {})[0] == 200
        assert http_call("GET", base + "/v2/models/credit-like/ready")[0] == 503
        status, headers, body = http_call("POST", base + "/v2/models/credit-like/infer", {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 20],
                        "data": x.ravel().tolist()}]})
        assert status == 503 and headers["Retry-After"] == "1"
        assert "not ready" in json.loads(body)["error"]
        state = json.loads(http_call("POST", base + "/v2/repository/index", {})[2])[0]["state"]
        assert state == "UNAVAILABLE"

        assert http_call("POST", base + "/v2/repository/models/credit-like/load", {})[0] == 200
        assert http_call("GET", base + "/v2/models/credit-like/ready")[0] == 200
        np.testing.assert_allclose(_infer(pod, x), expected_credit_like(x)["probabilities"])

        status, _, body = http_call("POST", base + "/v2/repository/models/nope/load", {})
        assert status == 404 and "nope" in json.loads(body)["error"]
