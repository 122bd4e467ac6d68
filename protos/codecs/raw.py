"""Raw tensor bytes, shared by the binary tensor extension and gRPC ``raw_*_contents``.

Encoding: little-endian, row-major, no padding; BOOL is one byte (0 or 1); a BYTES
tensor is each element as a little-endian ``uint32`` length followed by its bytes.
Source: Triton ``docs/protocol/extension_binary_data.md``; OIP gRPC spec, "Raw
Contents".
"""

from __future__ import annotations

import struct

import numpy as np

from protos.errors import InvalidRequestError
from protos.protocol import dtype_of, element_count

__all__ = ["to_raw", "from_raw"]

_U32 = struct.Struct("<I")


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Serialise ``array`` (any shape) of OIP ``datatype`` to raw bytes."""
    if datatype == "BYTES":
        parts = []
        for item in array.ravel():
            value = item.encode() if isinstance(item, str) else bytes(item)
            parts.append(_U32.pack(len(value)))
            parts.append(value)
        return b"".join(parts)
    dtype = dtype_of(datatype).newbyteorder("<")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def from_raw(buffer: bytes | memoryview, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Parse raw bytes into an array of ``shape``; numeric data is a zero-copy view.

    Raises:
        InvalidRequestError: the byte count does not match ``shape`` and ``datatype``.
    """
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_from_raw(memoryview(buffer), count).reshape(shape)
    dtype = dtype_of(datatype).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidRequestError(
            f"raw data has {len(buffer)} bytes; shape {list(shape)} of {datatype} "
            f"needs {expected}"
        )
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _bytes_from_raw(view: memoryview, count: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset, end = 0, len(view)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidRequestError(f"BYTES raw data ends before element {i} of {count}")
        (length,) = _U32.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidRequestError(f"BYTES element {i} runs past the end of the raw data")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != end:
        raise InvalidRequestError(
            f"BYTES raw data has {end - offset} bytes left after {count} elements"
        )
    return out
