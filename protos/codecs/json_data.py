"""Tensor ``data`` of the JSON codec: nested or flat JSON lists into numpy arrays.

Data is flat (row-major), or nested exactly as the tensor's ``shape`` (one list level
per dimension), flattened level by level without recursion. No value is changed on the
way in: an integer out of its datatype's range, a finite number too large for its float
datatype (it would become an infinity), a boolean in numeric data, or a value of
another kind is refused, naming the tensor and the value. The strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` stand for the non-finite floats in FP16/FP32/FP64
data.

Source: OIP ``inference_rest.md``, "Tensor Data".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protos.codecs.limits import DEFAULT_MAX_ELEMENTS, MAX_RANK, checked_shape
from protos.errors import InvalidRequestError
from protos.protocol import dtype_of, element_count

__all__ = ["NONFINITE", "data_array", "nested_array"]

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""The strings JSON data uses for the non-finite floats."""


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
    return data_array(data, datatype, checked_shape(shape, name, max_elements), name)


def data_array(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The array of a tensor's JSON ``data``: flat (row-major), or nested exactly as
    ``shape``.

    Args:
        data: the ``data`` member as parsed.
        datatype: the tensor's OIP datatype.
        shape: its shape, already checked by :func:`~protos.codecs.limits.checked_shape`.
        name: the tensor's name, for messages.

    Returns:
        An array of ``shape`` and the datatype's dtype (BYTES: object array of bytes).

    Raises:
        InvalidRequestError: not a list, nesting off the shape, an element count other
            than the shape's, or a value the datatype cannot hold unchanged.
        UnsupportedError: datatype BF16.
    """
    if not isinstance(data, list):
        raise InvalidRequestError(f"tensor {name!r}: 'data' must be a list")
    dtype = dtype_of(datatype)
    types = set(map(type, data))
    if list in types:
        flat = _flat(data, shape, name)
        types = set(map(type, flat))
    else:
        flat = data
    count = element_count(shape)
    if len(flat) != count:
        raise InvalidRequestError(
            f"tensor {name!r}: shape {list(shape)} needs {count} elements, "
            f"data has {len(flat)}"
        )
    if datatype == "BYTES":
        array = _bytes_array(flat, name)
    else:
        array = _numeric_array(flat, types, dtype, datatype, name)
    return array.reshape(shape)


def _flat(data: list, shape: tuple[int, ...], name: str) -> list:
    """The elements of nested data that follows ``shape`` exactly (one level per
    dimension), flattened level by level without recursion."""
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


def _numeric_array(flat: list, types: set[type], dtype: np.dtype, datatype: str,
                   name: str) -> np.ndarray:
    """A ``dtype`` array of JSON scalars (of the Python ``types``); every value must
    survive unchanged (up to the rounding of a decimal to the nearest float)."""
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
            if v not in NONFINITE:
                raise InvalidRequestError(
                    f"tensor {name!r}: {datatype} data must be numbers (or \"NaN\", "
                    f"\"Infinity\", \"-Infinity\"), got {v!r}")
            v = NONFINITE[v]
        out.append(v)
    return out


_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32)}
_SCAN_IN_PYTHON = 256
"""Up to this many values, their extremes are found by ``min``/``max`` on the list
(cheaper than two numpy reductions on a small array)."""


def _floats(flat: list, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    """Floats of ``dtype``; a finite value too large for it is refused, not turned into
    an infinity."""
    wide = np.asarray(flat, dtype=np.float64)
    if dtype == wide.dtype or not flat:
        return wide.astype(dtype, copy=False)
    if len(flat) <= _SCAN_IN_PYTHON:
        low, high = min(flat), max(flat)
    else:
        low, high = wide.min(), wide.max()
    limit = _FLOAT_MAX[dtype]
    if -limit <= low and high <= limit:  # all finite and in range (NaN fails both)
        return wide.astype(dtype)
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
