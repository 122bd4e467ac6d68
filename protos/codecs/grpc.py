"""Protobuf codec of the OIP gRPC API (``inference.GRPCInferenceService``).

Inputs arrive either as typed ``contents`` or as ``raw_input_contents`` (never both in
one request); FP16 travels only raw. Outputs are always written raw, as Triton does,
which every OIP client reads. Parameters map to ``InferParameter`` (bool, int64,
uint64, double, string); a parameter of any other kind (a JSON object or list from a
REST client) travels as its JSON text in ``string_param``, so nothing is dropped.

Source: OIP ``open_inference_grpc.proto`` and its "Tensor Data" section.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from protos import open_inference_pb2 as pb
from protos.codecs.raw import from_raw, to_raw
from protos.errors import InvalidRequestError
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestedOutput,
    Tensor,
    dtype_of,
    element_count,
)

__all__ = [
    "CONTENTS_FIELD",
    "metadata_to_pb",
    "parameters_from_pb",
    "parameters_to_pb",
    "request_from_pb",
    "request_to_pb",
    "response_from_pb",
    "response_to_pb",
]

CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_INT64_MAX = 2**63 - 1


def parameters_from_pb(params: Any) -> dict[str, Any]:
    """``map<string, InferParameter>`` -> plain dict."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        kind = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, kind) if kind else None
    return out


def parameters_to_pb(params: dict[str, Any], target: Any) -> None:
    """Fill a ``map<string, InferParameter>`` from a plain dict."""
    for key, value in params.items():
        slot = target[key]
        if isinstance(value, bool | np.bool_):
            slot.bool_param = bool(value)
        elif isinstance(value, int | np.integer):
            if int(value) > _INT64_MAX:
                slot.uint64_param = int(value)
            else:
                slot.int64_param = int(value)
        elif isinstance(value, float | np.floating):
            slot.double_param = float(value)
        elif isinstance(value, str):
            slot.string_param = value
        else:
            slot.string_param = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    shape = tuple(raw)
    if any(d < 0 for d in shape):
        raise InvalidRequestError(f"tensor {name!r}: shape {list(shape)} has a negative dimension")
    return shape


def _from_contents(tensor: Any, shape: tuple[int, ...]) -> np.ndarray:
    datatype = tensor.datatype
    dtype = dtype_of(datatype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequestError(
            f"tensor {tensor.name!r}: {datatype} data must be sent in raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidRequestError(
            f"tensor {tensor.name!r}: shape {list(shape)} needs {count} elements, "
            f"contents has {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def _check_contents_kind(tensor: Any, name: str) -> None:
    """Reject contents in a field that does not belong to the tensor's datatype."""
    expected = CONTENTS_FIELD.get(tensor.datatype)
    for descriptor, _ in tensor.contents.ListFields():
        if descriptor.name != expected:
            raise InvalidRequestError(
                f"tensor {name!r}: {tensor.datatype} data sent in {descriptor.name}"
            )


def request_from_pb(message: Any) -> InferenceRequest:
    """Decode a ``ModelInferRequest``.

    Raises:
        InvalidRequestError: raw and typed contents mixed, raw count not matching the
            inputs, sizes or contents not matching the shape and datatype.
        UnsupportedError: datatype BF16.
    """
    raw = message.raw_input_contents
    if raw and any(t.HasField("contents") for t in message.inputs):
        raise InvalidRequestError("raw_input_contents and contents cannot be mixed")
    if raw and len(raw) != len(message.inputs):
        raise InvalidRequestError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs = []
    for i, tensor in enumerate(message.inputs):
        shape = _shape(tensor.shape, tensor.name)
        if raw:
            data = from_raw(raw[i], tensor.datatype, shape)
        else:
            dtype_of(tensor.datatype)
            _check_contents_kind(tensor, tensor.name)
            data = _from_contents(tensor, shape)
        inputs.append(
            Tensor(tensor.name, tensor.datatype, shape, data, parameters_from_pb(tensor.parameters))
        )
    outputs = [
        RequestedOutput(o.name, parameters_from_pb(o.parameters)) for o in message.outputs
    ] or None
    return InferenceRequest(
        model_name=message.model_name,
        inputs=inputs,
        model_version=message.model_version or None,
        id=message.id or None,
        outputs=outputs,
        parameters=parameters_from_pb(message.parameters),
    )


def response_to_pb(response: InferenceResponse) -> Any:
    """Encode an ``InferenceResponse`` as ``ModelInferResponse`` with raw outputs."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    parameters_to_pb(response.parameters, message.parameters)
    for tensor in response.outputs:
        out = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_pb(tensor.parameters, out.parameters)
        message.raw_output_contents.append(to_raw(tensor.data, tensor.datatype))
    return message


def response_from_pb(message: Any) -> InferenceResponse:
    """Decode a ``ModelInferResponse`` (raw or typed outputs), for the upstream client.

    Raises:
        InvalidRequestError: sizes that do not add up.
    """
    raw = message.raw_output_contents
    outputs = []
    for i, tensor in enumerate(message.outputs):
        shape = tuple(tensor.shape)
        data = from_raw(raw[i], tensor.datatype, shape) if raw else _from_contents(tensor, shape)
        outputs.append(
            Tensor(tensor.name, tensor.datatype, shape, data, parameters_from_pb(tensor.parameters))
        )
    return InferenceResponse(
        model_name=message.model_name,
        outputs=outputs,
        model_version=message.model_version or None,
        id=message.id or None,
        parameters=parameters_from_pb(message.parameters),
    )


def request_to_pb(request: InferenceRequest) -> Any:
    """Encode a request as ``ModelInferRequest`` with raw inputs."""
    message = pb.ModelInferRequest(
        model_name=request.model_name,
        model_version=request.model_version or "",
        id=request.id or "",
    )
    parameters_to_pb(request.parameters, message.parameters)
    for tensor in request.inputs:
        item = message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_pb(tensor.parameters, item.parameters)
        message.raw_input_contents.append(to_raw(tensor.data, tensor.datatype))
    for output in request.outputs or ():
        parameters_to_pb(output.parameters, message.outputs.add(name=output.name).parameters)
    return message


def metadata_to_pb(metadata: ModelMetadata) -> Any:
    """Encode model metadata as ``ModelMetadataResponse`` (field 6 never set)."""
    message = pb.ModelMetadataResponse(
        name=metadata.name, versions=metadata.versions, platform=metadata.platform
    )
    for spec, target in ((metadata.inputs, message.inputs), (metadata.outputs, message.outputs)):
        for t in spec:
            target.add(name=t.name, datatype=t.datatype, shape=t.shape)
    return message
