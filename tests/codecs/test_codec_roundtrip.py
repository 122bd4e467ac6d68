"""Wire <-> internal round trips of the JSON, binary and gRPC codecs, every datatype."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from protos import open_inference_pb2 as pb
from protos.codecs import binary
from protos.codecs import grpc as grpc_codec
from protos.codecs import json as jsonc
from protos.errors import InvalidRequestError, UnsupportedError
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestedOutput,
    Tensor,
    TensorMetadata,
)
from tests.codecs.samples import JSON_SAMPLES, SAMPLES, assert_same

PARAMS = {"s": "text", "i": 7, "f": 0.25, "b": True}


def _request(datatype: str, array: np.ndarray) -> InferenceRequest:
    tensor = Tensor("x", datatype, array.shape, array, {"content_type": "np"})
    return InferenceRequest(
        "m", [tensor], "2", "req-1", [RequestedOutput("y", {"k": 1})], dict(PARAMS)
    )


def _response(datatype: str, array: np.ndarray) -> InferenceResponse:
    tensor = Tensor("y", datatype, array.shape, array, {"unit": "none"})
    return InferenceResponse("m", [tensor], "2", "req-1", dict(PARAMS))


def _strict_json(body: bytes):
    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(body, parse_constant=reject)


def _check_request(got: InferenceRequest, datatype: str, array: np.ndarray) -> None:
    assert got.id == "req-1"
    assert got.parameters == PARAMS
    assert [(o.name, o.parameters) for o in got.outputs] == [("y", {"k": 1})]
    (tensor,) = got.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, array.shape)
    assert tensor.parameters == {"content_type": "np"}
    assert_same(tensor.data, array)


def _check_response(got: InferenceResponse, datatype: str, array: np.ndarray) -> None:
    assert (got.model_name, got.model_version, got.id) == ("m", "2", "req-1")
    assert got.parameters == PARAMS
    (tensor,) = got.outputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("y", datatype, array.shape)
    assert tensor.parameters == {"unit": "none"}
    assert_same(tensor.data, array)


@pytest.mark.parametrize("datatype", sorted(JSON_SAMPLES))
def test_json_request_round_trip(datatype: str) -> None:
    array = JSON_SAMPLES[datatype]
    body = jsonc.request_to_json(_request(datatype, array))
    _strict_json(body)
    got, prefs = jsonc.request_from_json(jsonc.loads(body), "m", "2")
    assert not prefs.any
    _check_request(got, datatype, array)


@pytest.mark.parametrize("datatype", sorted(JSON_SAMPLES))
def test_json_response_round_trip(datatype: str) -> None:
    array = JSON_SAMPLES[datatype]
    body = jsonc.response_to_json(_response(datatype, array))
    _strict_json(body)
    _check_response(jsonc.response_from_json(jsonc.loads(body)), datatype, array)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_binary_request_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    body, length = binary.request_to_binary(_request(datatype, array), binary_outputs=True)
    _strict_json(body[:length])
    got, prefs = binary.request_from_binary(body, length, "m", "2")
    assert prefs.default
    assert "binary_data_output" not in got.parameters
    _check_request(got, datatype, array)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_binary_response_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    body, length = binary.response_to_binary(
        _response(datatype, array), jsonc.BinaryOutputs(default=True)
    )
    assert length is not None
    header = _strict_json(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(body) - length
    _check_response(binary.response_from_binary(body, length), datatype, array)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_grpc_request_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    wire = grpc_codec.request_to_pb(_request(datatype, array)).SerializeToString()
    got = grpc_codec.request_from_pb(pb.ModelInferRequest.FromString(wire))
    got.model_name, got.model_version = "m", "2"
    _check_request(got, datatype, array)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_grpc_response_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    wire = grpc_codec.response_to_pb(_response(datatype, array)).SerializeToString()
    _check_response(grpc_codec.response_from_pb(pb.ModelInferResponse.FromString(wire)),
                    datatype, array)


@pytest.mark.parametrize("datatype", sorted(set(SAMPLES) - {"FP16"}))
def test_grpc_typed_contents_are_accepted(datatype: str) -> None:
    array = SAMPLES[datatype]
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=array.shape)
    field = grpc_codec.CONTENTS_FIELD[datatype]
    getattr(tensor.contents, field).extend(array.ravel().tolist())
    got = grpc_codec.request_from_pb(pb.ModelInferRequest.FromString(message.SerializeToString()))
    assert_same(got.inputs[0].data, array)


@pytest.mark.parametrize("data", [[0, 2**64 - 1], [2**63, 1.0], [18446744073709551615]])
def test_json_uint64_beyond_float_precision_is_exact(data) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "UINT64", "shape": [len(data)], "data": data}]}
    got = jsonc.request_from_json(doc, "m")[0].inputs[0].data
    assert got.dtype == np.uint64
    assert got.tolist() == [int(v) for v in data]


@pytest.mark.parametrize("data", [[0, 2**64], [-1, 2**63], [1.5, 2**63]])
def test_json_integers_out_of_range_or_not_integral_are_rejected(data) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "UINT64", "shape": [len(data)], "data": data}]}
    with pytest.raises(InvalidRequestError):
        jsonc.request_from_json(doc, "m")


def test_json_nested_and_flat_data_decode_alike() -> None:
    def decode(data):
        doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 3], "data": data}]}
        return jsonc.request_from_json(doc, "m")[0].inputs[0].data

    nested = decode([[1, 2, 3], [4, 5, 6]])
    flat = decode([1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(nested, flat)
    assert nested.dtype == np.int32 and nested.shape == (2, 3)


def test_json_non_finite_floats_are_named_strings() -> None:
    array = np.array([1.0, math.nan, math.inf, -math.inf], dtype=np.float32)
    body = jsonc.response_to_json(_response("FP32", array))
    doc = _strict_json(body)
    assert doc["outputs"][0]["data"] == [1.0, "NaN", "Infinity", "-Infinity"]
    doc_in = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [4],
                          "data": [1.0, "NaN", "Infinity", "-Infinity"]}]}
    got = jsonc.request_from_json(doc_in, "m")[0].inputs[0].data
    assert got.dtype == np.float64
    assert got[0] == 1.0 and math.isnan(got[1]) and got[2] == math.inf and got[3] == -math.inf


@pytest.mark.parametrize("data", [["nan"], ["1.0"], [None], [[1.0, "NaN"], "Infinity"]])
def test_json_other_strings_in_float_data_are_rejected(data) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(data)], "data": data}]}
    with pytest.raises(InvalidRequestError):
        jsonc.request_from_json(doc, "m")


def test_bf16_is_unsupported_in_every_codec() -> None:
    doc = {"inputs": [{"name": "x", "datatype": "BF16", "shape": [1], "data": [1.0]}]}
    with pytest.raises(UnsupportedError):
        jsonc.request_from_json(doc, "m")
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00\x00"])
    message.inputs.add(name="x", datatype="BF16", shape=[1])
    with pytest.raises(UnsupportedError):
        grpc_codec.request_from_pb(message)


def test_grpc_raw_and_typed_contents_mixed_are_rejected() -> None:
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\x01\x00\x00\x00"])
    message.inputs.add(name="x", datatype="INT32", shape=[1])
    typed = message.inputs.add(name="y", datatype="INT32", shape=[1])
    typed.contents.int_contents.append(1)
    with pytest.raises(InvalidRequestError, match="mixed"):
        grpc_codec.request_from_pb(message)


def test_grpc_fp16_in_typed_contents_is_rejected() -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP16", shape=[1])
    tensor.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidRequestError, match="FP16"):
        grpc_codec.request_from_pb(message)
    empty = pb.ModelInferRequest(model_name="m")
    empty.inputs.add(name="x", datatype="FP16", shape=[0]).contents.SetInParent()
    with pytest.raises(InvalidRequestError, match="raw_input_contents"):
        grpc_codec.request_from_pb(empty)


def test_grpc_contents_in_the_wrong_field_are_rejected() -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[1])
    tensor.contents.int_contents.append(1)
    with pytest.raises(InvalidRequestError):
        grpc_codec.request_from_pb(message)


def test_grpc_parameters_of_every_kind_survive() -> None:
    params = {"b": False, "i": -3, "big": 2**64 - 1, "f": 1.5, "s": "x", "obj": {"a": [1]}}
    message = pb.ModelInferRequest()
    grpc_codec.parameters_to_pb(params, message.parameters)
    got = grpc_codec.parameters_from_pb(
        pb.ModelInferRequest.FromString(message.SerializeToString()).parameters
    )
    assert got == {**params, "obj": '{"a":[1]}'}


def test_raw_binary_request_is_batch_one_of_the_single_input() -> None:
    meta = ModelMetadata("m", "t", [TensorMetadata("x", "FP32", [-1, 3])], [])
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    request, prefs = binary.request_from_binary(rows.tobytes(), 0, "m", None, meta)
    assert prefs.default
    np.testing.assert_array_equal(request.inputs[0].data, rows)
    with pytest.raises(InvalidRequestError):
        binary.request_from_binary(b"\x00" * 5, 0, "m", None, meta)
    two = ModelMetadata("m", "t", [TensorMetadata("x", "FP32", [-1]),
                                   TensorMetadata("y", "FP32", [-1])], [])
    with pytest.raises(InvalidRequestError):
        binary.request_from_binary(rows.tobytes(), 0, "m", None, two)


@pytest.mark.parametrize("size", [-1, 1000, "4", True])
def test_binary_sizes_that_do_not_add_up_are_rejected(size) -> None:
    header = jsonc.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1],
                                      "parameters": {"binary_data_size": size}}]})
    with pytest.raises(InvalidRequestError):
        binary.request_from_binary(header + b"\x01\x00\x00\x00", len(header), "m")


def test_binary_trailing_bytes_are_rejected() -> None:
    body, length = binary.request_to_binary(_request("INT32", SAMPLES["INT32"]))
    with pytest.raises(InvalidRequestError, match="unclaimed"):
        binary.request_from_binary(body + b"\x00", length, "m")
