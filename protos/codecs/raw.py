"""Raw tensor bytes, shared by the binary tensor extension and gRPC ``raw_*_contents``.

Encoding: little-endian, row-major, no padding; BOOL is one byte (0 or 1); a BYTES
tensor is each element as a little-endian ``uint32`` length followed by its bytes.
Source: Triton ``docs/protocol/extension_binary_data.md``; OIP gRPC spec, "Raw
Contents".
"""

from __future__ import annotations

import struct
import sys

import numpy as np

from protos.codecs.limits import check_raw_size
from protos.errors import InvalidRequestError
from protos.protocol import dtype_of, element_count

__all__ = ["to_raw", "from_raw"]

_U32 = struct.Struct("<I")
_NATIVE_LE = sys.byteorder == "little"


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Serialise ``array`` (any shape) of OIP ``datatype`` to raw bytes."""
    if datatype == "BYTES":
        parts = []
        for item in array.ravel():
            value = item.encode() if isinstance(item, str) else bytes(item)
            parts.append(_U32.pack(len(value)))
            parts.append(value)
        return b"".join(parts)
    dtype = dtype_of(datatype)
    if _NATIVE_LE and array.dtype == dtype and array.flags.c_contiguous:
        return array.tobytes()
    return np.ascontiguousarray(array, dtype=dtype.newbyteorder("<")).tobytes()


def from_raw(
    buffer: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str
) -> np.ndarray:
    """Parse raw bytes into an array of ``shape``; numeric data is a zero-copy view.

    The byte count is checked against ``shape`` before anything is allocated: fixed-size
    datatypes need exactly ``count * itemsize`` bytes, BYTES at least 4 per element.

    Args:
        buffer: the tensor's raw bytes.
        datatype: OIP datatype.
        shape: the tensor's shape (already checked by
            :func:`~protos.codecs.limits.checked_shape`).
        name: the tensor's name, for messages.

    Raises:
        InvalidRequestError: the byte count does not match ``shape`` and ``datatype``,
            or a BOOL byte is neither 0 nor 1.
        UnsupportedError: datatype BF16.
    """
    check_raw_size(name, datatype, shape, len(buffer))
    if datatype == "BYTES":
        return _bytes_from_raw(memoryview(buffer), element_count(shape), name).reshape(shape)
    if datatype == "BOOL":
        _check_bool_bytes(buffer, name)
    dtype = dtype_of(datatype)
    if _NATIVE_LE:
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)
    array = np.frombuffer(buffer, dtype=dtype.newbyteorder("<")).reshape(shape)
    return array.astype(dtype, copy=False)


def _check_bool_bytes(buffer: bytes | memoryview, name: str) -> None:
    """BOOL is one byte, 0 or 1; any other byte would be read as an unnamed truth."""
    octets = np.frombuffer(buffer, dtype=np.uint8)
    if octets.size and int(octets.max()) > 1:
        bad = int(octets[np.argmax(octets > 1)])
        raise InvalidRequestError(
            f"tensor {name!r}: BOOL raw data holds byte {bad}; each element must be 0 or 1")


def _bytes_from_raw(view: memoryview, count: int, name: str) -> np.ndarray:
    """Decode ``count`` length-prefixed elements, iteratively (``count`` is already
    known to fit the buffer's length prefixes)."""
    out = np.empty(count, dtype=object)
    offset, end = 0, len(view)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidRequestError(
                f"tensor {name!r}: BYTES raw data ends before element {i} of {count}")
        (length,) = _U32.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidRequestError(
                f"tensor {name!r}: BYTES element {i} (length {length}) runs past the end "
                "of the raw data")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != end:
        raise InvalidRequestError(
            f"tensor {name!r}: BYTES raw data has {end - offset} bytes left after "
            f"{count} elements")
    return out
