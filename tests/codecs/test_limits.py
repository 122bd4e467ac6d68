"""The checks every request decoder makes before it sizes anything from a request, and
the rule that no value changes on the way in, at the codec level."""

from __future__ import annotations

import numpy as np
import pytest

from protos import open_inference_pb2 as pb
from protos.codecs import grpc as grpc_codec
from protos.codecs import json as jsonc
from protos.codecs.limits import (
    DEFAULT_MAX_ELEMENTS,
    check_parameters,
    check_raw_size,
    check_requested_outputs,
    checked_shape,
)
from protos.codecs.raw import from_raw
from protos.errors import InvalidRequestError


def _decode(datatype: str, shape, data, **tensor):
    doc = {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data,
                       **tensor}]}
    return jsonc.request_from_json(doc, "m")[0].inputs[0].data


@pytest.mark.parametrize(("shape", "words"), [
    ([-1], "non-negative"), ([1.5], "non-negative"), ([True], "non-negative"),
    ("3", "non-negative"), ([1] * 33, "at most 32"),
    ([DEFAULT_MAX_ELEMENTS + 1], "limit"), ([2**40, 2**40, 0], "zero dimensions"),
])
def test_bad_shapes_are_refused_naming_the_tensor(shape, words) -> None:
    with pytest.raises(InvalidRequestError, match=words) as info:
        checked_shape(shape, "x", DEFAULT_MAX_ELEMENTS)
    assert "'x'" in info.value.message


def test_shapes_within_the_limits_pass() -> None:
    assert checked_shape([0, 2**20], "x", 2**20) == (0, 2**20)
    assert checked_shape((2, 3), "x", 6) == (2, 3)
    assert checked_shape([2**40], "x", None) == (2**40,)  # responses: no count limit


def test_raw_sizes_are_checked_before_allocation() -> None:
    with pytest.raises(InvalidRequestError, match="at least 400000000 bytes"):
        check_raw_size("x", "BYTES", (10**8,), 3)
    with pytest.raises(InvalidRequestError, match="needs 8"):
        check_raw_size("x", "FP32", (2,), 7)
    check_raw_size("x", "BYTES", (2,), 8)
    assert from_raw(b"\x01\x00\x00\x00a\x00\x00\x00\x00", "BYTES", (2,), "x").tolist() == [
        b"a", b""]
    with pytest.raises(InvalidRequestError, match="byte 2"):
        from_raw(b"\x01\x02", "BOOL", (2,), "x")


@pytest.mark.parametrize("value", [None, {"a": 1}, [1]])
def test_parameter_values_must_be_scalars(value) -> None:
    with pytest.raises(InvalidRequestError, match="'k' of input 'x'"):
        check_parameters({"k": value}, "input 'x'")
    assert check_parameters({"s": "a", "i": 1, "f": 0.5, "b": False}, "the request") == {
        "s": "a", "i": 1, "f": 0.5, "b": False}


def test_an_output_requested_twice_is_refused() -> None:
    check_requested_outputs(["a", "b"])
    with pytest.raises(InvalidRequestError, match="'a' is requested more than once"):
        check_requested_outputs(["a", "b", "a"])


@pytest.mark.parametrize(("datatype", "data", "words"), [
    ("INT64", [2**63], "9223372036854775808"),
    ("INT32", [2**31], "2147483648"),
    ("UINT8", [-1], "-1"),
    ("FP16", [65520.0], "65520"),
    ("FP32", [-1e39], "-1e+39"),
    ("INT32", [1, True], "True"),
    ("FP64", [1.0, None], "None"),
    ("BYTES", ["a", 1], "1"),
    ("BOOL", [True, 2], "2"),
])
def test_json_values_that_would_change_are_refused(datatype, data, words) -> None:
    with pytest.raises(InvalidRequestError) as info:
        _decode(datatype, [len(data)], data)
    assert "'x'" in info.value.message and words in info.value.message


def test_json_values_at_the_edges_pass_unchanged() -> None:
    assert _decode("FP16", [2], [65504, -65504.0]).tolist() == [65504.0, -65504.0]
    assert _decode("INT64", [2], [-(2**63), 2**63 - 1]).tolist() == [-(2**63), 2**63 - 1]
    got = _decode("FP32", [3], ["Infinity", "-Infinity", "NaN"])
    assert np.isinf(got[:2]).all() and np.isnan(got[2])


@pytest.mark.parametrize(("shape", "data"), [
    ([2, 2], [[1, 2, 3], [4]]),          # ragged
    ([2, 2], [[1, 2], 3, 4]),            # mixed levels
    ([4], [[1, 2], [3, 4]]),             # nesting of another shape, same count
    ([1, 2], [[[1, 2]]]),                # deeper than the shape
])
def test_json_nested_data_must_follow_the_shape(shape, data) -> None:
    with pytest.raises(InvalidRequestError, match="'x'"):
        _decode("INT32", shape, data)


def test_json_deep_nesting_is_refused_without_recursion() -> None:
    data: object = "a"
    for _ in range(5000):
        data = [data]
    with pytest.raises(InvalidRequestError, match="nested deeper"):
        _decode("BYTES", [1], data)


def test_json_binary_data_size_and_data_together_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="both 'data' and binary_data_size"):
        _decode("FP32", [1], [1.0], parameters={"binary_data_size": 4})


def test_json_transport_flags_must_be_booleans() -> None:
    doc = {"inputs": [], "parameters": {"binary_data_output": "yes"}}
    with pytest.raises(InvalidRequestError, match="binary_data_output"):
        jsonc.request_from_json(doc, "m")


def test_v1_instances_decode_by_the_same_rules() -> None:
    array = jsonc.nested_array([[1, 2], [3, 4]], "INT32", "x")
    assert array.dtype == np.int32 and array.shape == (2, 2)
    for bad in ([[1, 2], [3]], [[70000.0]], [[[1]] * 2, [2, 2]]):
        with pytest.raises(InvalidRequestError, match="'x'"):
            jsonc.nested_array(bad, "FP16", "x")


@pytest.mark.parametrize(("datatype", "value"), [
    ("INT8", 128), ("INT16", -32769), ("UINT8", 256), ("UINT16", 65536),
])
def test_grpc_narrow_integers_in_wide_contents_are_range_checked(datatype, value) -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=[1])
    getattr(tensor.contents, grpc_codec.CONTENTS_FIELD[datatype]).append(value)
    with pytest.raises(InvalidRequestError, match=f"value {value} is out of range"):
        grpc_codec.request_from_pb(message)


def test_grpc_shape_limit_is_a_parameter() -> None:
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 40])
    message.inputs.add(name="x", datatype="FP32", shape=[10])
    assert grpc_codec.request_from_pb(message, max_elements=10).inputs[0].shape == (10,)
    with pytest.raises(InvalidRequestError, match="limit of 9"):
        grpc_codec.request_from_pb(message, max_elements=9)


def test_response_parameters_are_kept_as_given() -> None:
    doc = {"model_name": "m", "parameters": {"headers": {"a": "b"}},
           "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1.0],
                        "parameters": {"extra": None}}]}
    response = jsonc.response_from_json(doc)
    assert response.parameters == {"headers": {"a": "b"}}
    assert response.outputs[0].parameters == {"extra": None}
