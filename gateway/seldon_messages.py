"""Seldon Core v1 ``SeldonMessage`` JSON <-> Arbiter's OIP types, for the gateway's
Seldon endpoints (:mod:`gateway.seldon`).

A request's payload becomes one tensor of the deployment's first input, of its
declared datatype; the answer is the deployment's first declared output, in the form
the request used:

============================  ==================================  ====================
request                       tensor                              answer
============================  ==================================  ====================
``data.ndarray`` (rows)       nested lists -> shape of the nesting ``data.ndarray``
``data.tensor``               ``{shape, values}``                 ``data.tensor``
``jsonData`` (a list)         as ``ndarray``                      ``jsonData``
``jsonData`` (other), ``strData``  one BYTES element (BYTES inputs)  same field
============================  ==================================  ====================

Values are never converted across kinds: a string among numbers, a boolean, a null,
a row beside a value or rows of different lengths are refused with 400 naming the
position (``data.ndarray[1][3]``). Answer ``names`` are the output's columns
(``probabilities:0``, ``probabilities:1``), or its name for a one-value-per-row output.

Source: Seldon Core v1 "External Prediction API" (``SeldonMessage``, ``DefaultData``,
``Tensor``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protos.codecs import json as jsonc
from protos.codecs.json_data import data_array, nested_array
from protos.codecs.limits import MAX_RANK, checked_shape
from protos.errors import InvalidRequestError, UnsupportedError
from protos.protocol import Tensor, TensorMetadata

__all__ = [
    "PAYLOADS", "payload_kind", "request_tensor", "answer_payload", "output_names", "truth_value",
]

PAYLOADS = ("data", "jsonData", "strData", "binData", "customData")
"""The members of ``SeldonMessage``'s ``data_oneof``."""

_NON_FINITE = ("NaN", "Infinity", "-Infinity")


def payload_kind(message: Any, where: str = "body") -> str:
    """Which payload a SeldonMessage carries: ``ndarray``, ``tensor``, ``jsonData`` or
    ``strData``.

    Raises:
        InvalidRequestError: not an object, an OIP body, no payload or several,
            ``data`` without ``ndarray`` or ``tensor``, ``names`` not a list of strings.
        UnsupportedError: ``binData``, ``customData`` or ``data.tftensor``.
    """
    if not isinstance(message, dict):
        raise InvalidRequestError(f"{where} must be a SeldonMessage JSON object")
    if "inputs" in message and not any(k in message for k in PAYLOADS):
        raise InvalidRequestError(
            f"{where} is an Open Inference Protocol request ('inputs'); this path expects "
            'a Seldon Core SeldonMessage ({"data": {"ndarray": [[...]]}}). Send OIP '
            "bodies to POST /v2/models/{deployment}/infer")
    present = [k for k in PAYLOADS if message.get(k) is not None]
    if len(present) != 1:
        found = f"{present}" if present else "none"
        raise InvalidRequestError(
            f"{where} needs exactly one of 'data', 'jsonData' or 'strData'; found {found}")
    kind = present[0]
    if kind in ("binData", "customData"):
        raise UnsupportedError(f"{where}: '{kind}' is not served; send data.ndarray, "
                               "data.tensor, jsonData or strData")
    if kind != "data":
        return kind
    data = message["data"]
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{where}: 'data' must be an object")
    names = data.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidRequestError(f"{where}: data.names must be a list of strings")
    if "tftensor" in data:
        raise UnsupportedError(f"{where}: data.tftensor is not served; send data.ndarray "
                               "or data.tensor")
    forms = [k for k in ("ndarray", "tensor") if data.get(k) is not None]
    if len(forms) != 1:
        raise InvalidRequestError(f"{where}: 'data' needs exactly one of 'ndarray' or 'tensor'")
    return forms[0]


def request_tensor(message: dict, kind: str, spec: TensorMetadata, max_elements: int) -> Tensor:
    """The tensor of input ``spec`` a SeldonMessage carries (``kind`` from
    :func:`payload_kind`).

    Raises:
        InvalidRequestError: values of the wrong kind (naming the position), ragged or
            mixed rows, a shape that does not hold the values, ``names`` of the wrong
            length, a payload the input's datatype cannot take.
    """
    if kind == "ndarray":
        array = _rows_array(message["data"]["ndarray"], "data.ndarray", spec, max_elements)
    elif kind == "tensor":
        array = _tensor_array(message["data"]["tensor"], spec, max_elements)
    elif kind == "jsonData" and isinstance(message["jsonData"], list):
        array = _rows_array(message["jsonData"], "jsonData", spec, max_elements)
    else:
        array = _text_array(message, kind, spec)
    names = message.get("data", {}).get("names") if kind in ("ndarray", "tensor") else None
    if names and array.ndim == 2 and len(names) != array.shape[1]:
        raise InvalidRequestError(
            f"data.names has {len(names)} names for {array.shape[1]} columns")
    return Tensor(spec.name, spec.datatype, tuple(int(d) for d in array.shape), array)


def _position(where: str, index: tuple[int, ...]) -> str:
    return where + "".join(f"[{i}]" for i in index)


def _rows_array(rows: Any, where: str, spec: TensorMetadata, max_elements: int) -> np.ndarray:
    if not isinstance(rows, list) or not rows:
        raise InvalidRequestError(f"{where} must be a non-empty list of rows")
    level = [((i,), item) for i, item in enumerate(rows)]
    for _ in range(MAX_RANK):
        lists = [(p, x) for p, x in level if isinstance(x, list)]
        if not lists:
            break
        if len(lists) != len(level):
            value_at, value = next((p, x) for p, x in level if not isinstance(x, list))
            raise InvalidRequestError(
                f"{where} mixes rows and values: {_position(where, lists[0][0])} is a list "
                f"but {_position(where, value_at)} is {_describe(value)}")
        first_at, first = lists[0]
        for at, row in lists:
            if len(row) != len(first):
                raise InvalidRequestError(
                    f"{where} is ragged: {_position(where, first_at)} has {len(first)} "
                    f"values but {_position(where, at)} has {len(row)}; every row needs "
                    "the same length")
        level = [(p + (j,), y) for p, x in lists for j, y in enumerate(x)]
    for at, value in level:
        _check_value(value, spec, _position(where, at))
    return nested_array(rows, spec.datatype, spec.name, max_elements)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"the number {value!r}"


def _check_value(value: Any, spec: TensorMetadata, at: str) -> None:
    """Refuse a value of another kind than the input's datatype holds."""
    datatype = spec.datatype
    if datatype == "BYTES":
        ok = isinstance(value, str)
        wanted = "strings"
    elif datatype == "BOOL":
        ok = isinstance(value, bool)
        wanted = "booleans"
    else:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number or (datatype.startswith("FP") and isinstance(value, str)
                        and value in _NON_FINITE)
        wanted = "numbers"
    if not ok:
        raise InvalidRequestError(
            f"{at} is {_describe(value)}; input {spec.name!r} is {datatype}, so every value "
            f"must be one of the {wanted} (values are not converted)")


def _tensor_array(tensor: Any, spec: TensorMetadata, max_elements: int) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise InvalidRequestError("data.tensor must be {\"shape\": [...], \"values\": [...]}")
    shape, values = tensor.get("shape"), tensor.get("values")
    if not isinstance(values, list):
        raise InvalidRequestError("data.tensor.values must be a list of numbers")
    if spec.datatype in ("BYTES", "BOOL"):
        raise InvalidRequestError(
            f"data.tensor holds numbers; input {spec.name!r} is {spec.datatype}: "
            "send data.ndarray")
    checked = checked_shape(shape, spec.name, max_elements)
    if math.prod(checked) != len(values):
        raise InvalidRequestError(
            f"data.tensor.shape {list(checked)} needs {math.prod(checked)} values; "
            f"values has {len(values)}")
    for i, value in enumerate(values):
        _check_value(value, spec, f"data.tensor.values[{i}]")
    return data_array(values, spec.datatype, checked, spec.name)


def _text_array(message: dict, kind: str, spec: TensorMetadata) -> np.ndarray:
    value = message[kind]
    if spec.datatype != "BYTES":
        raise InvalidRequestError(
            f"'{kind}' carries text, but input {spec.name!r} is {spec.datatype} "
            f"{spec.shape}: send its rows as data.ndarray or data.tensor")
    text = value if kind == "strData" else jsonc.dumps(value).decode()
    if not isinstance(text, str):
        raise InvalidRequestError("'strData' must be a string")
    return np.array([text.encode()], dtype=object)


def _json_values(array: np.ndarray) -> Any:
    if array.dtype == object:
        flat = [v.decode(errors="replace") if isinstance(v, bytes) else v
                for v in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        flat = [jsonc.finite_or_name(float(v)) for v in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def output_names(tensor: Tensor) -> list[str]:
    """Column names of an output: ``name:i`` per column of a 2-D output, else its name."""
    if len(tensor.shape) == 2:
        return [f"{tensor.name}:{i}" for i in range(tensor.shape[1])]
    return [tensor.name]


def answer_payload(tensor: Tensor, kind: str) -> dict[str, Any]:
    """The payload member(s) of the answer for output ``tensor``, in the request's form."""
    if kind == "tensor" and tensor.datatype not in ("BYTES", "BOOL"):
        values = _json_values(tensor.data.ravel())
        return {"data": {"names": output_names(tensor),
                         "tensor": {"shape": list(tensor.shape), "values": values}}}
    if kind in ("ndarray", "tensor"):
        return {"data": {"names": output_names(tensor), "ndarray": _json_values(tensor.data)}}
    values = _json_values(tensor.data)
    if kind == "strData":
        single = tensor.datatype == "BYTES" and tensor.data.size == 1
        return {"strData": values[0] if single else jsonc.dumps(values).decode()}
    return {"jsonData": values}


def truth_value(truth: Any) -> Any:
    """The ground truth a feedback's ``truth`` SeldonMessage carries, as the gateway's
    feedback takes it: one row of one value -> that value; rows of one value each ->
    the list of values; anything else -> the list as sent.

    Raises:
        InvalidRequestError: not a SeldonMessage with ``data`` or ``jsonData``.
    """
    kind = payload_kind(truth, "feedback 'truth'")
    if kind == "ndarray":
        values = truth["data"]["ndarray"]
    elif kind == "tensor":
        tensor = truth["data"]["tensor"]
        shape = checked_shape(tensor.get("shape"), "truth", None)
        flat = tensor.get("values")
        if not isinstance(flat, list) or math.prod(shape) != len(flat):
            raise InvalidRequestError("feedback 'truth': data.tensor values do not fit its shape")
        values = np.array(flat, dtype=object).reshape(shape).tolist() if shape else flat
    elif kind == "jsonData":
        values = truth["jsonData"]
    else:
        values = [truth["strData"]]
    if not isinstance(values, list):
        return values
    rows = [row[0] if isinstance(row, list) and len(row) == 1 else row for row in values]
    return rows[0] if len(rows) == 1 else rows
