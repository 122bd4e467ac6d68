"""Triton's model-configuration, statistics and repository extensions on a real pod,
driven by tritonclient over HTTP and gRPC."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.servers import ServerThread
from wrappers.settings import ModelSettings

MODEL = "triton-like"


@pytest.fixture(scope="module")
def pod() -> Iterator[ServerThread]:
    """A credit-like pod batching up to 8 rows, waiting at most 1.5 ms."""
    settings = ModelSettings(name=MODEL, version="1", max_batch_size=8, max_batch_wait_ms=1.5)
    with ServerThread(model_pod(CreditLikeWrapper(), settings)) as server:
        yield server


def _rows(n: int = 1) -> np.ndarray:
    return np.linspace(-1, 1, 20 * n, dtype=np.float32).reshape(n, 20)


def _http_infer(pod: ServerThread, x: np.ndarray, model: str = MODEL):
    client = httpclient.InferenceServerClient(pod.http_hostport)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor])


def _grpc_infer(pod: ServerThread, x: np.ndarray, model: str = MODEL):
    client = grpcclient.InferenceServerClient(pod.grpc_target)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor])


EXPECTED_CONFIG = {
    "name": MODEL,
    "platform": "test",
    "backend": "test",
    "max_batch_size": 8,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [20]}],
    "output": [
        {"name": "label", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [2]},
    ],
    "dynamic_batching": {"max_queue_delay_microseconds": 1500},
}


def test_model_config_over_http(pod: ServerThread) -> None:
    client = httpclient.InferenceServerClient(pod.http_hostport)
    assert client.get_model_config(MODEL) == EXPECTED_CONFIG
    assert client.get_model_config(MODEL, "1") == EXPECTED_CONFIG


def test_model_config_over_grpc(pod: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(pod.grpc_target)
    config = client.get_model_config(MODEL).config
    assert (config.name, config.platform, config.backend) == (MODEL, "test", "test")
    assert config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    [x] = config.input
    assert (x.name, x.data_type, list(x.dims)) == ("input", 11, [20])  # 11: TYPE_FP32
    label, probabilities = config.output
    assert (label.name, label.data_type, list(label.dims)) == ("label", 9, [1])  # TYPE_INT64
    assert label.HasField("reshape") and list(label.reshape.shape) == []
    assert (probabilities.name, list(probabilities.dims)) == ("probabilities", [2])
    as_json = client.get_model_config(MODEL, "1", as_json=True)["config"]
    assert as_json["input"][0]["data_type"] == "TYPE_FP32"


def test_model_config_without_batching_keeps_the_full_shape() -> None:
    settings = credit_like_settings("unbatched", max_batch_size=1)
    with ServerThread(model_pod(CreditLikeWrapper(), settings)) as server:
        config = httpclient.InferenceServerClient(server.http_hostport).get_model_config(
            "unbatched")
        assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
        assert config["input"][0]["dims"] == [-1, 20]
        assert config["output"][0]["dims"] == [-1]
        grpc_config = grpcclient.InferenceServerClient(server.grpc_target).get_model_config(
            "unbatched").config
        assert grpc_config.max_batch_size == 0 and list(grpc_config.input[0].dims) == [-1, 20]


@pytest.mark.parametrize("path", ["/v2/models/nope/config", "/v2/models/nope/stats",
                                  f"/v2/models/{MODEL}/versions/9/config",
                                  f"/v2/models/{MODEL}/versions/9/stats"])
def test_unknown_model_or_version_is_404(pod: ServerThread, path: str) -> None:
    status, _, body = http_call("GET", pod.http_url + path)
    assert status == 404 and b"error" in body


def test_unknown_model_config_over_grpc_is_not_found(pod: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(pod.grpc_target)
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def _http_stats(pod: ServerThread) -> dict:
    [stats] = httpclient.InferenceServerClient(pod.http_hostport).get_inference_statistics(
        MODEL)["model_stats"]
    return stats


def _grpc_stats(pod: ServerThread):
    [stats] = grpcclient.InferenceServerClient(pod.grpc_target).get_inference_statistics(
        MODEL).model_stats
    return stats


def test_statistics_count_every_request_served(pod: ServerThread) -> None:
    before = _http_stats(pod)
    for i in range(6):  # sequential: each request is one execution
        (_http_infer if i % 2 else _grpc_infer)(pod, _rows(1 + i % 3))
    after = _http_stats(pod)
    assert (after["name"], after["version"]) == (MODEL, "1")
    stats, was = after["inference_stats"], before["inference_stats"]
    for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[phase]["count"] - was[phase]["count"] == 6, phase
    assert stats["success"]["ns"] > was["success"]["ns"]
    assert stats["compute_infer"]["ns"] > was["compute_infer"]["ns"]
    assert stats["fail"] == was["fail"]
    assert after["inference_count"] - before["inference_count"] == 1 + 2 + 3 + 1 + 2 + 3
    assert after["execution_count"] - before["execution_count"] == 6
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert {1, 2, 3} <= set(sizes)
    success = stats["success"]
    phases = sum(stats[p]["ns"] - was[p]["ns"] for p in
                 ("queue", "compute_input", "compute_infer", "compute_output"))
    assert phases <= success["ns"] - was["success"]["ns"]  # the phases lie within the requests


def test_statistics_over_grpc_match_http(pod: ServerThread) -> None:
    before = _grpc_stats(pod)
    for _ in range(3):
        _grpc_infer(pod, _rows())
    after = _grpc_stats(pod)
    assert after.inference_stats.success.count - before.inference_stats.success.count == 3
    assert after.inference_count - before.inference_count == 3
    http = _http_stats(pod)
    assert http["inference_stats"]["success"]["count"] == after.inference_stats.success.count
    all_models = grpcclient.InferenceServerClient(pod.grpc_target).get_inference_statistics()
    assert [s.name for s in all_models.model_stats] == [MODEL]


def test_statistics_count_failures(pod: ServerThread) -> None:
    before = _http_stats(pod)["inference_stats"]
    with pytest.raises(InferenceServerException):
        _http_infer(pod, np.zeros((1, 7), np.float32))  # wrong width: 400
    after = _http_stats(pod)["inference_stats"]
    assert after["fail"]["count"] - before["fail"]["count"] == 1
    assert after["success"] == before["success"]


def test_all_models_statistics_over_http(pod: ServerThread) -> None:
    status, _, _ = http_call("GET", pod.http_url + "/v2/models/stats")
    assert status == 200
    doc = httpclient.InferenceServerClient(pod.http_hostport).get_inference_statistics()
    assert [s["name"] for s in doc["model_stats"]] == [MODEL]


def test_repository_over_grpc_and_http() -> None:
    settings = credit_like_settings("repo")
    with ServerThread(model_pod(CreditLikeWrapper(), settings)) as server:
        grpc_client = grpcclient.InferenceServerClient(server.grpc_target)
        http_client = httpclient.InferenceServerClient(server.http_hostport)
        [entry] = grpc_client.get_model_repository_index().models
        assert (entry.name, entry.version, entry.state) == ("repo", "1", "READY")
        assert http_client.get_model_repository_index() == [
            {"name": "repo", "version": "1", "state": "READY"}]

        grpc_client.unload_model("repo")
        assert not grpc_client.is_model_ready("repo")
        [entry] = grpc_client.get_model_repository_index().models
        assert entry.state == "UNAVAILABLE" and entry.reason
        status, _, body = http_call("POST", server.http_url + "/v2/repository/index",
                                    {"ready": True})
        assert status == 200 and body == b"[]"

        grpc_client.load_model("repo")
        assert grpc_client.is_model_ready("repo")
        np.testing.assert_equal(
            _grpc_infer(server, _rows(), "repo").as_numpy("label").shape, (1,))
        with pytest.raises(InferenceServerException) as info:
            grpc_client.load_model("nope")
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_server_metadata_lists_the_extensions(pod: ServerThread) -> None:
    extensions = httpclient.InferenceServerClient(pod.http_hostport).get_server_metadata()[
        "extensions"]
    assert {"model_configuration", "statistics", "model_repository",
            "binary_tensor_data"} <= set(extensions)
    grpc_meta = grpcclient.InferenceServerClient(pod.grpc_target).get_server_metadata()
    assert "statistics" in grpc_meta.extensions
