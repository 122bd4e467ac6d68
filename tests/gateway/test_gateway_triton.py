"""Triton's model-configuration, statistics and repository extensions on a real
gateway (each deployment is a model), driven by tritonclient over HTTP and gRPC."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def _http(gateway) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(gateway.http_hostport)


def _grpc(gateway) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(gateway.grpc_target)


def test_deployment_config_over_http_and_grpc(gateway) -> None:
    config = _http(gateway).get_model_config("plain")
    assert config == {
        "name": "plain", "platform": "sklearn", "backend": "sklearn",
        "max_batch_size": 0,  # the gateway does not merge requests; its pods do
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 20]}],
        "output": [{"name": "label", "data_type": "TYPE_INT64", "dims": [-1]},
                   {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1, 2]}],
        "parameters": {"router": {"string_value": "weighted"},
                       "primary": {"string_value": "lr"}},
    }
    reply = _grpc(gateway).get_model_config("plain").config
    assert (reply.name, reply.platform, reply.max_batch_size) == ("plain", "sklearn", 0)
    assert [list(t.dims) for t in reply.input] == [[-1, 20]]
    assert reply.parameters["router"].string_value == "weighted"
    with pytest.raises(InferenceServerException) as info:
        _grpc(gateway).get_model_config("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_deployment_statistics_count_the_requests_sent(gateway, holdout_x) -> None:
    [before] = _http(gateway).get_inference_statistics("trees")["model_stats"]
    grpc_before = _grpc(gateway).get_inference_statistics("trees").model_stats[0]
    for i in range(4):
        x = np.asarray(holdout_x[i:i + 2], np.float32)
        if i % 2:
            tensor = httpclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            _http(gateway).infer("trees", [tensor])
        else:
            tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            _grpc(gateway).infer("trees", [tensor])
    [after] = _http(gateway).get_inference_statistics("trees")["model_stats"]
    assert (after["name"], after["version"]) == ("trees", "")
    stats, was = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - was["success"]["count"] == 4
    assert stats["compute_infer"]["count"] - was["compute_infer"]["count"] == 4
    assert stats["success"]["ns"] > was["success"]["ns"]
    assert after["inference_count"] - before["inference_count"] == 8  # rows
    assert after["execution_count"] - before["execution_count"] == 4
    grpc_after = _grpc(gateway).get_inference_statistics("trees").model_stats[0]
    assert (grpc_after.inference_stats.success.count
            - grpc_before.inference_stats.success.count) == 4
    assert grpc_after.inference_count - grpc_before.inference_count == 8


def test_deployment_failures_are_counted(gateway) -> None:
    [before] = _http(gateway).get_inference_statistics("trees")["model_stats"]
    tensor = httpclient.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException):
        _http(gateway).infer("trees", [tensor])  # the pod answers 400
    [after] = _http(gateway).get_inference_statistics("trees")["model_stats"]
    assert (after["inference_stats"]["fail"]["count"]
            - before["inference_stats"]["fail"]["count"]) == 1
    assert after["inference_stats"]["success"] == before["inference_stats"]["success"]


def test_all_deployments_statistics(gateway) -> None:
    names = {s["name"] for s in _http(gateway).get_inference_statistics()["model_stats"]}
    assert {"plain", "trees", "ts", "shadow"} <= names
    grpc_names = {s.name for s in _grpc(gateway).get_inference_statistics().model_stats}
    assert grpc_names == names


def test_repository_index_lists_the_deployments(gateway) -> None:
    index = {m["name"]: m for m in _http(gateway).get_model_repository_index()}
    assert index["plain"] == {"name": "plain", "version": "", "state": "READY"}
    grpc_index = {m.name: m for m in _grpc(gateway).get_model_repository_index().models}
    assert set(grpc_index) == set(index)
    assert grpc_index["plain"].state == "READY"
    with pytest.raises(InferenceServerException) as info:
        _grpc(gateway).unload_model("plain")  # deployments are not unloaded
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"


def test_gateway_advertises_the_extensions(gateway) -> None:
    extensions = set(_grpc(gateway).get_server_metadata().extensions)
    assert {"model_configuration", "statistics", "model_repository"} <= extensions
