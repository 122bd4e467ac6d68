"""A served prediction equals the framework's own prediction for the same rows, over
tritonclient HTTP (binary and JSON) and gRPC, for the scikit-learn, ONNX Runtime and
PyTorch pods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.servers import ServerThread

ROWS = slice(0, 37)
PODS = {"lr": "credit-lr", "gbm": "credit-gbm", "mlp": "credit-mlp"}


def _framework_prediction(key: str, credit_models: dict[str, Path], x: np.ndarray):
    """(label INT64 [n], probabilities FP32 [n, 2]) from the framework itself."""
    if key == "lr":
        import joblib

        model = joblib.load(credit_models["lr"])
        return model.predict(x).astype(np.int64), model.predict_proba(x).astype(np.float32)
    if key == "gbm":
        import onnxruntime as ort

        session = ort.InferenceSession(str(credit_models["gbm"]),
                                       providers=["CPUExecutionProvider"])
        label, probabilities = session.run(["label", "probabilities"], {"input": x})
        return np.asarray(label, np.int64), np.asarray(probabilities, np.float32)
    import torch

    module = torch.jit.load(str(credit_models["mlp"]))
    with torch.no_grad():
        label, probabilities = module(torch.from_numpy(x))
    return label.numpy().astype(np.int64), probabilities.numpy().astype(np.float32)


def _http(pod: ServerThread, name: str, x: np.ndarray, binary: bool):
    client = httpclient.InferenceServerClient(pod.http_hostport)
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary)
                   for n in ("label", "probabilities")]
        result = client.infer(name, [tensor], outputs=outputs, model_version="1")
    finally:
        client.close()
    return result.as_numpy("label"), result.as_numpy("probabilities")


def _grpc(pod: ServerThread, name: str, x: np.ndarray):
    client = grpcclient.InferenceServerClient(pod.grpc_target)
    try:
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(name, [tensor])
    finally:
        client.close()
    return result.as_numpy("label"), result.as_numpy("probabilities")


@pytest.mark.parametrize("transport", ["http-binary", "http-json", "grpc"])
@pytest.mark.parametrize("key", sorted(PODS))
def test_served_prediction_equals_framework_prediction(
    request: pytest.FixtureRequest, credit_models, holdout_x, key: str, transport: str
) -> None:
    pod: ServerThread = request.getfixturevalue(f"{key}_pod")
    x = np.ascontiguousarray(holdout_x[ROWS])
    if transport == "grpc":
        label, probabilities = _grpc(pod, PODS[key], x)
    else:
        label, probabilities = _http(pod, PODS[key], x, binary=transport == "http-binary")
    want_label, want_probabilities = _framework_prediction(key, credit_models, x)
    assert label.dtype == np.int64 and probabilities.dtype == np.float32
    np.testing.assert_array_equal(label, want_label)
    # JSON carries float32 values as shortest-repr decimals: exact after float32 parsing.
    np.testing.assert_array_equal(probabilities, want_probabilities)
    assert probabilities.shape == (len(x), 2)


def test_concurrent_requests_each_get_their_own_rows(lr_pod: ServerThread, credit_models,
                                                      holdout_x) -> None:
    from concurrent.futures import ThreadPoolExecutor

    chunks = [np.ascontiguousarray(holdout_x[i : i + 5]) for i in range(0, 60, 5)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda x: _grpc(lr_pod, "credit-lr", x), chunks))
    for x, (label, probabilities) in zip(chunks, results, strict=True):
        want_label, want_probabilities = _framework_prediction("lr", credit_models, x)
        np.testing.assert_array_equal(label, want_label)
        np.testing.assert_array_equal(probabilities, want_probabilities)
