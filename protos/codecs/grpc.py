"""Protobuf codec of the OIP gRPC API (``inference.GRPCInferenceService``).

Inputs arrive either as typed ``contents`` or as ``raw_input_contents`` (never both in
one request); FP16 travels only raw. Outputs are always written raw, as Triton does,
which every OIP client reads. Parameters map to ``InferParameter`` (bool, int64,
uint64, double, string); a request parameter with no value set is refused, as REST
refuses null, objects and lists. A response parameter of another kind (a JSON object or
list a REST upstream sent) travels as its JSON text in ``string_param``, so nothing is
dropped.

Source: OIP ``open_inference_grpc.proto`` and its "Tensor Data" section.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from protos import open_inference_pb2 as pb
from protos.codecs.limits import (
    DEFAULT_MAX_ELEMENTS,
    check_parameters,
    check_requested_outputs,
    checked_shape,
)
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
    """``map<string, InferParameter>`` -> plain dict (an ``InferParameter`` with no
    value set becomes ``None``)."""
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


_WIDE_DTYPES: dict[str, np.dtype] = {
    "int_contents": np.dtype(np.int32),
    "uint_contents": np.dtype(np.uint32),
}
"""Element type of the typed-contents fields that several datatypes share."""


def _from_contents(tensor: Any, shape: tuple[int, ...]) -> np.ndarray:
    datatype, name = tensor.datatype, tensor.name
    dtype = dtype_of(datatype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequestError(
            f"tensor {name!r}: {datatype} data must be sent in raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidRequestError(
            f"tensor {name!r}: shape {list(shape)} needs {count} elements, "
            f"contents has {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    wide = np.fromiter(values, dtype=_WIDE_DTYPES.get(field, dtype), count=count)
    if wide.dtype != dtype and wide.size:
        _check_range(wide, dtype, datatype, name)
    return wide.astype(dtype, copy=False).reshape(shape)


def _check_range(wide: np.ndarray, dtype: np.dtype, datatype: str, name: str) -> None:
    """INT8/INT16 travel in ``int_contents`` (int32), UINT8/UINT16 in ``uint_contents``
    (uint32): a value outside the datatype is refused, never wrapped."""
    info = np.iinfo(dtype)
    low, high = int(wide.min()), int(wide.max())
    if low < info.min or high > info.max:
        value = low if low < info.min else high
        raise InvalidRequestError(f"tensor {name!r}: value {value} is out of range for {datatype}")


def _check_contents_kind(tensor: Any, name: str) -> None:
    """Reject contents in a field that does not belong to the tensor's datatype."""
    expected = CONTENTS_FIELD.get(tensor.datatype)
    for descriptor, _ in tensor.contents.ListFields():
        if descriptor.name != expected:
            raise InvalidRequestError(
                f"tensor {name!r}: {tensor.datatype} data sent in {descriptor.name}"
            )


def request_from_pb(message: Any, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> InferenceRequest:
    """Decode a ``ModelInferRequest``.

    Every shape is checked against ``max_elements`` and against the contents or raw
    bytes its tensor actually has before anything is allocated. Raw inputs become
    read-only numpy views over the message's bytes (no copy).

    Args:
        message: the request.
        max_elements: most elements one tensor's shape may imply.

    Raises:
        InvalidRequestError: raw and typed contents mixed, raw count not matching the
            inputs, sizes or contents not matching the shape and datatype, a value
            out of its datatype's range, a parameter with no value, an output
            requested twice.
        UnsupportedError: datatype BF16.
    """
    raw = message.raw_input_contents
    tensors = message.inputs
    if raw:
        _check_raw_inputs(tensors, len(raw))
        inputs = [_raw_input(t, raw[i], max_elements) for i, t in enumerate(tensors)]
    else:
        inputs = [_typed_input(t, max_elements) for t in tensors]
    outputs = None
    if message.outputs:
        outputs = [RequestedOutput(o.name, _parameters(o.parameters, f"output {o.name!r}"))
                   for o in message.outputs]
        check_requested_outputs(o.name for o in outputs)
    return InferenceRequest(
        model_name=message.model_name,
        inputs=inputs,
        model_version=message.model_version or None,
        id=message.id or None,
        outputs=outputs,
        parameters=_parameters(message.parameters, "the request"),
    )


def _parameters(params: Any, where: str) -> dict[str, Any]:
    """Checked request, input or output parameters (a new dict; empty at no cost)."""
    if not params:
        return {}
    return check_parameters(parameters_from_pb(params), where)


def _check_raw_inputs(tensors: Any, count: int) -> None:
    typed = next((t.name for t in tensors if t.HasField("contents")), None)
    if typed is not None:
        raise InvalidRequestError(
            f"tensor {typed!r} has contents while the request has raw_input_contents; "
            "the two cannot be mixed")
    if count != len(tensors):
        raise InvalidRequestError(
            f"raw_input_contents has {count} entries for {len(tensors)} inputs"
        )


def _raw_input(tensor: Any, data: bytes, max_elements: int) -> Tensor:
    name = tensor.name
    shape = checked_shape(tuple(tensor.shape), name, max_elements)
    params = _parameters(tensor.parameters, f"input {name!r}")
    return Tensor(name, tensor.datatype, shape, from_raw(data, tensor.datatype, shape, name),
                  params)


def _typed_input(tensor: Any, max_elements: int) -> Tensor:
    name = tensor.name
    shape = checked_shape(tuple(tensor.shape), name, max_elements)
    params = _parameters(tensor.parameters, f"input {name!r}")
    dtype_of(tensor.datatype)
    _check_contents_kind(tensor, name)
    return Tensor(name, tensor.datatype, shape, _from_contents(tensor, shape), params)


def response_to_pb(response: InferenceResponse) -> Any:
    """Encode an ``InferenceResponse`` as ``ModelInferResponse`` with raw outputs."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    if response.parameters:
        parameters_to_pb(response.parameters, message.parameters)
    add = message.outputs.add
    contents = message.raw_output_contents
    for tensor in response.outputs:
        out = add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.parameters:
            parameters_to_pb(tensor.parameters, out.parameters)
        contents.append(to_raw(tensor.data, tensor.datatype))
    return message


def response_from_pb(message: Any) -> InferenceResponse:
    """Decode a ``ModelInferResponse`` (raw or typed outputs), for the upstream client.

    Raises:
        InvalidRequestError: sizes that do not add up.
    """
    raw = message.raw_output_contents
    outputs = []
    for i, tensor in enumerate(message.outputs):
        shape = checked_shape(tuple(tensor.shape), tensor.name, None)
        data = (from_raw(raw[i], tensor.datatype, shape, tensor.name) if raw
                else _from_contents(tensor, shape))
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
