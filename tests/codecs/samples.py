"""One sample array per OIP datatype, with the extreme values of each type."""

from __future__ import annotations

import numpy as np

__all__ = ["SAMPLES", "JSON_SAMPLES", "assert_same"]


def _ints(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.array([[info.min, 0, 1], [7, info.max - 1, info.max]], dtype=dtype)


SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    **{name: _ints(dtype) for name, dtype in [
        ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32),
        ("UINT64", np.uint64), ("INT8", np.int8), ("INT16", np.int16),
        ("INT32", np.int32), ("INT64", np.int64),
    ]},
    "FP16": np.array([[0.5, -1.25, 65504.0], [np.nan, np.inf, -np.inf]], dtype=np.float16),
    "FP32": np.array([[1.5, -3.4e38, 1e-30], [np.nan, np.inf, -np.inf]], dtype=np.float32),
    "FP64": np.array([[0.1, -1.7e308, 5e-324], [np.nan, np.inf, -np.inf]], dtype=np.float64),
    "BYTES": np.array([[b"a", b"", b"\x00\xff raw"], [b"xyz", b"\xe2\x82\xac", b"b" * 300]],
                      dtype=object),
}
"""Datatype -> a [2, 3] array of it (BYTES holds non-UTF-8 bytes)."""

JSON_SAMPLES = {
    **SAMPLES,
    "BYTES": np.array([[b"a", b"", b"caf\xc3\xa9"], [b"xyz", b"\xe2\x82\xac", b"b" * 300]],
                      dtype=object),
}
"""As :data:`SAMPLES`, but BYTES are UTF-8 (JSON carries BYTES as strings)."""


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal dtype, shape and values (NaN equal to NaN; BYTES compared as bytes)."""
    assert got.shape == expected.shape
    if expected.dtype == object:
        got_list = [v.encode() if isinstance(v, str) else bytes(v) for v in got.ravel()]
        assert got_list == list(expected.ravel())
        return
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    np.testing.assert_array_equal(got, expected)
