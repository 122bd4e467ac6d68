"""JSON codec of the OIP REST API (with the hooks the binary extension builds on).

Tensor ``data`` may be nested or flat (row-major). BYTES elements are strings (UTF-8).
Non-finite floats, which JSON cannot carry, are written as the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``, and those strings are accepted in FP16/FP32/FP64
input data; every body Arbiter writes is therefore valid JSON.

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

from protos.errors import InferenceError, InvalidRequestError
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    dtype_of,
    element_count,
)

__all__ = [
    "BinaryOutputs",
    "finite_or_name",
    "loads",
    "request_from_json",
    "request_to_json",
    "response_from_json",
    "response_to_json",
    "tensor_from_doc",
    "tensor_to_doc",
]

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
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
) -> tuple[InferenceRequest, BinaryOutputs]:
    """Build a request from a parsed JSON document.

    Args:
        doc: the parsed body.
        model_name: model from the URL path.
        model_version: version from the URL path, or ``None``.
        binary: source of binary tensor data (binary extension), or ``None``.

    Returns:
        The request and the client's binary-output preference. The transport-only
        parameters ``binary_data_output``, ``binary_data`` and ``binary_data_size`` are
        consumed here; every other parameter is kept.

    Raises:
        InvalidRequestError: schema, shape or datatype violations, naming the field.
    """
    if not isinstance(doc, dict):
        raise InvalidRequestError("request body must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequestError("'inputs' must be a list of tensors")
    parameters = _parameters(doc.get("parameters"), "request")
    prefs = BinaryOutputs(default=bool(parameters.pop("binary_data_output", False)))
    tensors = [tensor_from_doc(item, binary) for item in inputs]
    outputs = _requested_outputs(doc.get("outputs"), prefs)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequestError("'id' must be a string")
    request = InferenceRequest(
        model_name, tensors, model_version, request_id, outputs, parameters
    )
    return request, prefs


def _requested_outputs(raw: Any, prefs: BinaryOutputs) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequestError("'outputs' must be a list")
    outputs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequestError("each requested output needs a string 'name'")
        params = _parameters(item.get("parameters"), f"output {item['name']!r}")
        if "binary_data" in params:
            prefs.names[item["name"]] = bool(params.pop("binary_data"))
        outputs.append(RequestedOutput(item["name"], params))
    return outputs


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"'parameters' of {where} must be an object")
    return dict(raw)


def tensor_from_doc(doc: Any, binary: BinarySource | None = None) -> Tensor:
    """Build a tensor from its JSON object (``name``, ``datatype``, ``shape``, ``data``
    or ``parameters.binary_data_size``).

    Raises:
        InvalidRequestError: missing fields, bad shape, data not matching shape or
            datatype.
        UnsupportedError: datatype BF16.
    """
    if not isinstance(doc, dict):
        raise InvalidRequestError("each tensor must be a JSON object")
    name = doc.get("name")
    if not isinstance(name, str):
        raise InvalidRequestError("each tensor needs a string 'name'")
    datatype = doc.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidRequestError(f"tensor {name!r} needs a string 'datatype'")
    shape = _shape(doc.get("shape"), name)
    params = _parameters(doc.get("parameters"), f"tensor {name!r}")
    size = params.pop("binary_data_size", None)
    if size is not None:
        if binary is None:
            raise InvalidRequestError(
                f"tensor {name!r} has binary_data_size but the body has no binary section"
            )
        from protos.codecs.raw import from_raw

        return Tensor(name, datatype, shape, from_raw(binary(name, size), datatype, shape), params)
    if "data" not in doc:
        raise InvalidRequestError(f"tensor {name!r} has no 'data'")
    return Tensor(name, datatype, shape, _array(doc["data"], datatype, shape, name), params)


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InvalidRequestError(
            f"tensor {name!r}: 'shape' must be a list of non-negative integers"
        )
    return tuple(raw)


def _array(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidRequestError(f"tensor {name!r}: 'data' must be a list")
    dtype = dtype_of(datatype)
    if datatype == "BYTES":
        array = _bytes_array(data, name)
    else:
        array = _numeric_array(data, dtype, name)
    if array.size != element_count(shape):
        raise InvalidRequestError(
            f"tensor {name!r}: shape {list(shape)} needs {element_count(shape)} elements, "
            f"data has {array.size}"
        )
    return array.reshape(shape)


def _numeric_array(data: list, dtype: np.dtype, name: str) -> np.ndarray:
    try:
        raw = np.asarray(data)
    except ValueError:
        raise InvalidRequestError(f"tensor {name!r}: 'data' is a ragged nested list") from None
    if dtype.kind in "iu" and raw.dtype.kind in "fO":
        # numpy falls back to float64 (or object) for ints past int64/uint64 range of
        # the others, e.g. [0, 2**64 - 1]: convert exactly via Python ints instead.
        return _exact_ints(data, raw.shape, dtype, name)
    if raw.dtype.kind in "OUS":
        raw = _with_nonfinite(data, raw.shape, dtype, name)
    return _convert(raw, dtype, name)


def _exact_ints(data: list, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    info = np.iinfo(dtype)
    values = []
    for v in _flatten(data):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidRequestError(f"tensor {name!r}: non-integer value for {_oip(dtype)}")
        if not info.min <= v <= info.max:
            raise InvalidRequestError(f"tensor {name!r}: value out of range for {_oip(dtype)}")
        values.append(v)
    return np.array(values, dtype=dtype).reshape(shape)


def _with_nonfinite(data: list, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    if dtype.kind != "f":
        raise InvalidRequestError(f"tensor {name!r}: data must be numbers for {_oip(dtype)}")
    try:
        values = [_NONFINITE[v] if isinstance(v, str) else v for v in _flatten(data)]
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            raise TypeError
        return np.asarray(values, dtype=np.float64).reshape(shape)
    except (KeyError, TypeError, ValueError):
        raise InvalidRequestError(
            f"tensor {name!r}: data must be numbers (or \"NaN\", \"Infinity\", \"-Infinity\")"
        ) from None


def _convert(raw: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    kind = raw.dtype.kind
    if dtype.kind == "b":
        zero_one = kind in "iu" and bool(np.isin(raw, (0, 1)).all())
        if kind == "b" or not raw.size or zero_one:
            return raw.astype(dtype)
        raise InvalidRequestError(f"tensor {name!r}: BOOL data must be true/false")
    if kind == "b":
        raise InvalidRequestError(f"tensor {name!r}: booleans sent for {_oip(dtype)} data")
    if dtype.kind in "iu":
        if kind == "f" and not np.all(np.mod(raw, 1) == 0):
            raise InvalidRequestError(f"tensor {name!r}: non-integer value for {_oip(dtype)}")
        info = np.iinfo(dtype)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise InvalidRequestError(f"tensor {name!r}: value out of range for {_oip(dtype)}")
    return raw.astype(dtype, copy=False)


def _oip(dtype: np.dtype) -> str:
    from protos.protocol import datatype_of

    return datatype_of(dtype)


def _bytes_array(data: list, name: str) -> np.ndarray:
    flat = _flatten(data)
    out = np.empty(len(flat), dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, str):
            out[i] = item.encode()
        else:
            raise InvalidRequestError(f"tensor {name!r}: BYTES data must be strings")
    return out


def _flatten(data: list) -> list:
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


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
