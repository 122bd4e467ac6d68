"""JSON codec of the OIP REST API (with the hooks the binary extension builds on).

Tensor ``data`` may be flat (row-major), or nested exactly as its ``shape`` (one list
level per dimension). BYTES elements are strings (UTF-8). No value is changed on the
way in: an integer out of its datatype's range, a finite number too large for its
float datatype, a boolean in numeric data, or a non-numeric value is refused, naming
the tensor and the value. Non-finite floats, which JSON cannot carry, are written as
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, and those strings are
accepted in FP16/FP32/FP64 input data; every body Arbiter writes is therefore valid
JSON.

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

from protos.codecs.limits import (
    DEFAULT_MAX_ELEMENTS,
    MAX_RANK,
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
    dtype_of,
    element_count,
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
    return Tensor(name, datatype, shape, _array(doc["data"], datatype, shape, name), params)


def nested_array(
    data: Any, datatype: str, name: str, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> np.ndarray:
    """An array whose shape is the nesting of ``data`` (KServe V1 ``instances``), decoded
    by the same rules as tensor ``data``.

    Args:
        data: nested lists, rectangular.
        datatype: OIP datatype of the values.
        name: the tensor's name, for messages.
        max_elements: most elements allowed.

    Raises:
        InvalidRequestError: not a list, ragged, nested deeper than 32 levels, over
            ``max_elements``, or a value its datatype cannot hold unchanged.
    """
    if not isinstance(data, list):
        raise InvalidRequestError(f"tensor {name!r}: data must be a list")
    shape: list[int] = []
    node: Any = data
    while isinstance(node, list) and len(shape) <= MAX_RANK:
        shape.append(len(node))
        node = node[0] if node else None
    return _array(data, datatype, checked_shape(shape, name, max_elements), name)


def _array(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidRequestError(f"tensor {name!r}: 'data' must be a list")
    dtype = dtype_of(datatype)
    flat = _flat(data, shape, name)
    count = element_count(shape)
    if len(flat) != count:
        raise InvalidRequestError(
            f"tensor {name!r}: shape {list(shape)} needs {count} elements, "
            f"data has {len(flat)}"
        )
    if datatype == "BYTES":
        array = _bytes_array(flat, name)
    else:
        array = _numeric_array(flat, dtype, datatype, name)
    return array.reshape(shape)


def _flat(data: list, shape: tuple[int, ...], name: str) -> list:
    """The elements of flat data as is, or of nested data that follows ``shape``
    exactly (one level per dimension), flattened level by level without recursion."""
    if list not in set(map(type, data)):
        return data
    level: list = [data]
    for depth, dim in enumerate(shape):
        items: list = []
        for node in level:
            if not isinstance(node, list) or len(node) != dim:
                found = f"{len(node)} items" if isinstance(node, list) else f"value {node!r}"
                raise InvalidRequestError(
                    f"tensor {name!r}: nested 'data' does not follow shape {list(shape)}: "
                    f"at depth {depth} it has {found} where the shape has {dim}; send "
                    "flat data or nest it exactly as the shape")
            items.extend(node)
        level = items
    if list in set(map(type, level)):
        raise InvalidRequestError(
            f"tensor {name!r}: 'data' is nested deeper than shape {list(shape)}")
    return level


def _numeric_array(flat: list, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    """A ``dtype`` array of JSON scalars; every value must survive unchanged (up to the
    rounding of a decimal to the nearest float)."""
    types = set(map(type, flat))
    if dtype.kind == "b":
        return _bool_array(flat, types, name)
    if bool in types:
        raise InvalidRequestError(
            f"tensor {name!r}: boolean {_first(flat, bool)!r} in {datatype} data")
    if str in types and dtype.kind == "f":
        flat, types = _with_nonfinite(flat, datatype, name), types - {str} | {float}
    if not types <= {int, float}:
        odd = next(v for v in flat if type(v) not in (int, float))
        raise InvalidRequestError(
            f"tensor {name!r}: {datatype} data must be numbers, got {odd!r}")
    if dtype.kind == "f":
        return _floats(flat, dtype, datatype, name)
    raw = np.asarray(flat)
    if raw.dtype.kind in "fO":
        # numpy falls back to float64 (or object) for ints past int64/uint64 range of
        # the others, e.g. [0, 2**64 - 1]: convert exactly via Python ints instead.
        return _exact_ints(flat, dtype, datatype, name)
    return _checked_ints(raw, dtype, datatype, name)


def _first(flat: list, kind: type) -> Any:
    return next(v for v in flat if type(v) is kind)


def _bool_array(flat: list, types: set[type], name: str) -> np.ndarray:
    if types <= {bool} or (types <= {bool, int} and all(v in (0, 1) for v in flat)):
        return np.array(flat, dtype=np.bool_)
    odd = next(v for v in flat if v not in (0, 1) or type(v) not in (bool, int))
    raise InvalidRequestError(f"tensor {name!r}: BOOL data must be true/false, got {odd!r}")


def _with_nonfinite(flat: list, datatype: str, name: str) -> list:
    """Replace the names ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` by their floats."""
    out = []
    for v in flat:
        if isinstance(v, str):
            if v not in _NONFINITE:
                raise InvalidRequestError(
                    f"tensor {name!r}: {datatype} data must be numbers (or \"NaN\", "
                    f"\"Infinity\", \"-Infinity\"), got {v!r}")
            v = _NONFINITE[v]
        out.append(v)
    return out


def _floats(flat: list, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    """Floats of ``dtype``; a finite value too large for it is refused, not turned into
    an infinity."""
    wide = np.asarray(flat, dtype=np.float64)
    if dtype == wide.dtype:
        return wide
    with np.errstate(over="ignore"):
        narrow = wide.astype(dtype)
    overflow = np.isinf(narrow) & np.isfinite(wide)
    if overflow.any():
        value = flat[int(np.argmax(overflow))]
        raise InvalidRequestError(
            f"tensor {name!r}: value {value!r} overflows {datatype} "
            f"(largest finite {float(np.finfo(dtype).max):g})")
    return narrow


def _exact_ints(flat: list, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    info = np.iinfo(dtype)
    values = []
    for v in flat:
        if isinstance(v, float):
            if not v.is_integer():
                raise InvalidRequestError(
                    f"tensor {name!r}: non-integer value {v!r} for {datatype}")
            v = int(v)
        if not info.min <= v <= info.max:
            raise InvalidRequestError(
                f"tensor {name!r}: value {v} is out of range for {datatype}")
        values.append(v)
    return np.array(values, dtype=dtype)


def _checked_ints(raw: np.ndarray, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    """``raw`` (int64 or uint64) as ``dtype``, every value in range (compared exactly,
    as Python ints)."""
    if raw.size and raw.dtype != dtype:
        info = np.iinfo(dtype)
        low, high = int(raw.min()), int(raw.max())
        if low < info.min or high > info.max:
            value = low if low < info.min else high
            raise InvalidRequestError(
                f"tensor {name!r}: value {value} is out of range for {datatype}")
    return raw.astype(dtype, copy=False)


def _bytes_array(flat: list, name: str) -> np.ndarray:
    out = np.empty(len(flat), dtype=object)
    for i, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidRequestError(
                f"tensor {name!r}: BYTES data must be strings, got {item!r}")
        out[i] = item.encode()
    return out


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
