"""What every request decoder checks before it sizes anything from the request.

A request names its shapes, and a shape can claim far more elements than the body
carries (``[100000000]`` in a 115-byte body). The decoders therefore allocate nothing
from a shape until it has passed :func:`checked_shape` (non-negative integer
dimensions, at most :data:`MAX_RANK` of them, an element count within the server's
limit) and, for raw bytes, :func:`check_raw_size` (the bytes actually present can hold
that many elements). Parameters and requested outputs are checked here too, so REST and
gRPC refuse the same things.

Source: OIP ``inference_rest.md`` ("Parameters": values are string, number or
boolean); Triton ``extension_binary_data.md`` (BYTES elements carry a 4-byte length).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protos.errors import InvalidRequestError
from protos.protocol import dtype_of

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "MAX_RANK",
    "BYTES_LENGTH_PREFIX",
    "check_parameters",
    "check_raw_size",
    "check_requested_outputs",
    "checked_shape",
]

DEFAULT_MAX_ELEMENTS = 2**27
"""Default largest element count of one tensor (2**27: 512 MiB of FP32)."""

MAX_RANK = 32
"""Most dimensions of a tensor (numpy's limit)."""

BYTES_LENGTH_PREFIX = 4
"""Bytes of the little-endian ``uint32`` length before each raw BYTES element."""

_KIND_NAMES = {type(None): "null (no value)", dict: "an object", list: "a list"}


def checked_shape(raw: Any, name: str, max_elements: int | None) -> tuple[int, ...]:
    """Validate a requested shape before anything is sized from it.

    Args:
        raw: the shape as sent (a JSON list, or a tuple of a protobuf's int64s).
        name: the tensor's name, for messages.
        max_elements: most elements allowed, or ``None`` for no limit (responses).

    Returns:
        The shape as a tuple of ints.

    Raises:
        InvalidRequestError: not a sequence of non-negative integers, more than
            :data:`MAX_RANK` dimensions, or the product of its non-zero dimensions
            over ``max_elements`` (the product is computed exactly, so it cannot
            overflow).
    """
    if not isinstance(raw, list | tuple):
        raise InvalidRequestError(
            f"tensor {name!r}: 'shape' must be a list of non-negative integers")
    shape = tuple(raw)
    if len(shape) <= MAX_RANK:  # the common case in one pass: plain ints
        extent = 1
        for dim in shape:
            if type(dim) is not int or dim < 0:
                break
            extent *= dim or 1
        else:
            if max_elements is None or extent <= max_elements:
                return shape
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidRequestError(
                f"tensor {name!r}: 'shape' must be a list of non-negative integers, "
                f"got {list(shape)[:MAX_RANK + 1]}")
    if len(shape) > MAX_RANK:
        raise InvalidRequestError(
            f"tensor {name!r}: shape has {len(shape)} dimensions; at most {MAX_RANK} allowed")
    extent = 1
    for dim in shape:
        extent *= dim or 1
    if max_elements is not None and extent > max_elements:
        counted = "implies" if 0 not in shape else "without its zero dimensions implies"
        raise InvalidRequestError(
            f"tensor {name!r}: shape {list(shape)} {counted} {extent} elements, more "
            f"than the server's limit of {max_elements}")
    return shape


def check_raw_size(name: str, datatype: str, shape: tuple[int, ...], nbytes: int) -> None:
    """Check that ``nbytes`` of raw data can hold a tensor of ``shape``.

    Fixed-size datatypes need exactly ``count * itemsize`` bytes; BYTES needs at least
    ``4 * count`` (each element's length prefix), so a shape can never claim more
    elements than the body carries.

    Raises:
        InvalidRequestError: the byte count cannot hold the shape.
        UnsupportedError: datatype BF16.
    """
    count = 1
    for dim in shape:
        count *= dim
    if datatype == "BYTES":
        needed = BYTES_LENGTH_PREFIX * count
        if nbytes < needed:
            raise InvalidRequestError(
                f"tensor {name!r}: shape {list(shape)} of BYTES needs at least {needed} "
                f"bytes ({BYTES_LENGTH_PREFIX}-byte length per element); the data has "
                f"{nbytes}")
        return
    needed = count * dtype_of(datatype).itemsize
    if nbytes != needed:
        raise InvalidRequestError(
            f"tensor {name!r}: raw data has {nbytes} bytes; shape {list(shape)} of "
            f"{datatype} needs {needed}")


def check_parameters(raw: Any, where: str) -> dict[str, Any]:
    """Validate request, input or output ``parameters``.

    Args:
        raw: the parameters as decoded (``None`` when absent).
        where: what they belong to, for messages (``"the request"``, ``"input 'x'"``).

    Returns:
        A new dict of the parameters.

    Raises:
        InvalidRequestError: not an object, or a value that is not a string, number
            or boolean (null, object, list; over gRPC, an ``InferParameter`` with no
            value set).
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"'parameters' of {where} must be an object")
    for key, value in raw.items():
        if not isinstance(value, str | bool | int | float):
            kind = _KIND_NAMES.get(type(value), type(value).__name__)
            raise InvalidRequestError(
                f"parameter {key!r} of {where} is {kind}; parameter values must be a "
                "string, number or boolean")
    return dict(raw)


def check_requested_outputs(names: Iterable[str]) -> None:
    """Refuse an output requested more than once.

    Raises:
        InvalidRequestError: naming the first repeated output.
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidRequestError(f"output {name!r} is requested more than once")
        seen.add(name)
