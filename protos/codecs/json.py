"""JSON codec of the OIP REST API (with the hooks the binary extension builds on).

Tensor ``data`` may be flat (row-major), or nested exactly as its ``shape``; it is
decoded by :mod:`protos.codecs.json_data`, which changes no value on the way in. Shapes
and parameters are checked by :mod:`protos.codecs.limits` before anything is sized from
them. BYTES elements are strings (UTF-8). Non-finite floats, which JSON cannot carry,
are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, and those
strings are accepted in FP16/FP32/FP64 input data; every body Arbiter writes is
therefore valid JSON.

Source: OIP ``inference_rest.md``, "Inference Request JSON Object", "Inference Response
JSON Object", "Tensor Data".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from protos.codecs.json_data import data_array, nested_array
from protos.codecs.limits import (
    DEFAULT_MAX_ELEMENTS,
    check_parameters,
    check_requested_outputs,
    checked_shape,
)
from protos.errors import InferenceError, InvalidRequestError
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
)

__all__ = [
    "BinaryOutputs",
    "finite_or_name",
    "loads",
    "nested_array",
    "request_from_json",
    "request_to_json",
    "response_from_json",
    "response_to_json",
    "tensor_from_doc",
    "tensor_to_doc",
]

_DUMP_OPTS = orjson.OPT_SERIALIZE_NUMPY

BinarySource = Callable[[str, int], memoryview]
"""Returns the next ``size`` bytes of the binary section for tensor ``name``."""


@dataclass(slots=True)
class BinaryOutputs:
    """Which response outputs the client asked for in binary form
    (``binary_data_output`` on the request, ``binary_data`` per requested output)."""

    default: bool = False
    names: dict[str, bool] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        """Whether output ``name`` goes in the binary section."""
        return self.names.get(name, self.default)

    @property
    def any(self) -> bool:
        """Whether any output may be binary."""
        return self.default or any(self.names.values())


def loads(body: bytes | memoryview) -> Any:
    """Parse JSON.

    Raises:
        InvalidRequestError: the body is not valid JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"malformed JSON: {exc}") from None


def request_from_json(
    doc: Any,
    model_name: str,
    model_version: str | None = None,
    binary: BinarySource | None = None,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[InferenceRequest, BinaryOutputs]:
    """Build a request from a parsed JSON document.

    Args:
        doc: the parsed body.
        model_name: model from the URL path.
        model_version: version from the URL path, or ``None``.
        binary: source of binary tensor data (binary extension), or ``None``.
        max_elements: most elements one tensor's shape may imply.

    Returns:
        The request and the client's binary-output preference. The transport-only
        parameters ``binary_data_output``, ``binary_data`` and ``binary_data_size`` are
        consumed here; every other parameter is kept.

    Raises:
        InvalidRequestError: schema, shape, data, datatype or parameter violations,
            naming the tensor (and the value where there is one).
    """
    if not isinstance(doc, dict):
        raise InvalidRequestError("request body must be a JSON object")
    inputs = doc.get("inputs")
    if inputs is None and any(k in doc for k in ("data", "jsonData", "strData")):
        raise InvalidRequestError(
            'this path expects an Open Inference Protocol request ({"inputs": [...]}); the '
            "body is a Seldon Core SeldonMessage: send it to a gateway's "
            "POST /api/v1.0/predictions")
    if not isinstance(inputs, list):
        raise InvalidRequestError("'inputs' must be a list of tensors")
    parameters = check_parameters(doc.get("parameters"), "the request")
    prefs = BinaryOutputs(default=_flag(parameters, "binary_data_output", "the request"))
    tensors = [_tensor(item, binary, max_elements, "input") for item in inputs]
    outputs = _requested_outputs(doc.get("outputs"), prefs)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequestError("'id' must be a string")
    request = InferenceRequest(
        model_name, tensors, model_version, request_id, outputs, parameters
    )
    return request, prefs


def _flag(params: dict[str, Any], key: str, where: str) -> bool:
    """Pop the boolean transport parameter ``key`` (``False`` when absent)."""
    value = params.pop(key, False)
    if not isinstance(value, bool):
        raise InvalidRequestError(f"parameter {key!r} of {where} must be a boolean, "
                                  f"got {value!r}")
    return value


def _requested_outputs(raw: Any, prefs: BinaryOutputs) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequestError("'outputs' must be a list")
    outputs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequestError("each requested output needs a string 'name'")
        where = f"output {item['name']!r}"
        params = check_parameters(item.get("parameters"), where)
        if "binary_data" in params:
            prefs.names[item["name"]] = _flag(params, "binary_data", where)
        outputs.append(RequestedOutput(item["name"], params))
    check_requested_outputs(o.name for o in outputs)
    return outputs


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    """Response parameters: any JSON values, kept as given."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"'parameters' of {where} must be an object")
    return dict(raw)


def tensor_from_doc(
    doc: Any, binary: BinarySource | None = None, *, max_elements: int | None = None
) -> Tensor:
    """Build a tensor from its JSON object (``name``, ``datatype``, ``shape``, and one of
    ``data`` or ``parameters.binary_data_size``). Its parameters are kept as given (a
    request's inputs are decoded by :func:`request_from_json`, which also refuses
    parameter values that are not a string, number or boolean).

    Args:
        doc: the tensor's JSON object.
        binary: source of binary tensor data, or ``None``.
        max_elements: most elements its shape may imply (``None``: no limit).

    Raises:
        InvalidRequestError: missing fields, bad shape, both ``data`` and
            ``binary_data_size``, data not matching shape or datatype.
        UnsupportedError: datatype BF16.
    """
    return _tensor(doc, binary, max_elements, "tensor")


def _tensor(doc: Any, binary: BinarySource | None, max_elements: int | None,
            role: str) -> Tensor:
    if not isinstance(doc, dict):
        raise InvalidRequestError("each tensor must be a JSON object")
    name = doc.get("name")
    if not isinstance(name, str):
        raise InvalidRequestError("each tensor needs a string 'name'")
    datatype = doc.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidRequestError(f"tensor {name!r} needs a string 'datatype'")
    shape = checked_shape(doc.get("shape"), name, max_elements)
    where = f"{role} {name!r}"
    params = (check_parameters if role == "input" else _parameters)(doc.get("parameters"), where)
    size = params.pop("binary_data_size", None)
    if size is not None:
        if "data" in doc:
            raise InvalidRequestError(
                f"tensor {name!r} has both 'data' and binary_data_size {size}; send one")
        if binary is None:
            raise InvalidRequestError(
                f"tensor {name!r} has binary_data_size but the body has no binary section"
            )
        from protos.codecs.raw import from_raw

        data = from_raw(binary(name, size), datatype, shape, name)
        return Tensor(name, datatype, shape, data, params)
    if "data" not in doc:
        raise InvalidRequestError(f"tensor {name!r} has no 'data'")
    return Tensor(name, datatype, shape, data_array(doc["data"], datatype, shape, name), params)


def tensor_to_doc(tensor: Tensor, binary_size: int | None = None) -> dict[str, Any]:
    """The JSON object of a tensor, with flat ``data`` (or ``binary_data_size`` when the
    data travels in the binary section)."""
    doc: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    params = tensor.parameters
    if binary_size is not None:
        params = {**params, "binary_data_size": binary_size}
    else:
        doc["data"] = _json_data(tensor)
    if params:
        doc["parameters"] = params
    return doc


def _json_data(tensor: Tensor) -> Any:
    array = tensor.data
    if tensor.datatype == "BYTES":
        try:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        except UnicodeDecodeError:
            raise InferenceError(
                f"output {tensor.name!r} holds non-UTF-8 bytes; request it in binary form"
            ) from None
    flat = np.ascontiguousarray(array).ravel()
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [_finite_or_name(v) for v in flat.tolist()]
    if flat.dtype.byteorder not in "=|":
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat


def finite_or_name(value: float) -> float | str:
    """``value``, or ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"`` when not finite."""
    return _finite_or_name(value)


def _finite_or_name(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def dumps(doc: Any) -> bytes:
    """Serialise a document (numpy arrays and scalars included)."""
    return orjson.dumps(doc, option=_DUMP_OPTS)


def response_doc(response: InferenceResponse, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The response JSON object around already-built output objects."""
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        doc["model_version"] = response.model_version
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    return doc


def response_to_json(response: InferenceResponse) -> bytes:
    """Serialise a response as a JSON body."""
    return dumps(response_doc(response, [tensor_to_doc(t) for t in response.outputs]))


def response_from_json(doc: Any, binary: BinarySource | None = None) -> InferenceResponse:
    """Build a response from a parsed JSON document (the gateway's upstream client).

    Raises:
        InvalidRequestError: the document is not an OIP response.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise InvalidRequestError("response body must be an object with an 'outputs' list")
    outputs = [tensor_from_doc(item, binary) for item in doc["outputs"]]
    return InferenceResponse(
        model_name=str(doc.get("model_name", "")),
        outputs=outputs,
        model_version=doc.get("model_version"),
        id=doc.get("id"),
        parameters=_parameters(doc.get("parameters"), "response"),
    )


def request_doc(request: InferenceRequest, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The request JSON object around already-built input objects."""
    doc: dict[str, Any] = {"inputs": inputs}
    if request.id is not None:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = request.parameters
    if request.outputs is not None:
        doc["outputs"] = [
            {"name": o.name, **({"parameters": o.parameters} if o.parameters else {})}
            for o in request.outputs
        ]
    return doc


def request_to_json(request: InferenceRequest) -> bytes:
    """Serialise a request as a JSON body."""
    return dumps(request_doc(request, [tensor_to_doc(t) for t in request.inputs]))
