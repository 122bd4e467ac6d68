"""Idempotency-Key: a request's digest, kept with its key, and the error of a key
reused for another request.

A request carrying an ``Idempotency-Key`` header (gRPC metadata ``idempotency-key``)
that repeats within ``store.idempotency_window_s`` gets the original decision back
(``gateway.deployment``), provided it is the same request: the store keeps with each
key the SHA-256 of the request that took it (:func:`request_digest`), and the same key
with another digest is refused with :class:`IdempotencyKeyReusedError` (422 over REST,
``ALREADY_EXISTS`` over gRPC) instead of replaying another request's decision.

Why ``ALREADY_EXISTS`` and not ``INVALID_ARGUMENT``: the request itself is valid, and
every malformed request already gets ``INVALID_ARGUMENT``; this status tells a client
that the key is taken by another request, so it needs a new key (retrying the same
call is useless either way). REST's 422 follows the IETF Idempotency-Key draft.
"""

from __future__ import annotations

import hashlib

import numpy as np
import orjson

from protos.errors import ArbiterError
from protos.protocol import InferenceRequest, Tensor

__all__ = ["IdempotencyKeyReusedError", "request_digest"]


class IdempotencyKeyReusedError(ArbiterError):
    """An Idempotency-Key sent again with a different request (422, ALREADY_EXISTS)."""

    status = 422
    grpc_code = "ALREADY_EXISTS"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was used with a different request; send a new key "
            "for a new request (a retry must repeat the request exactly)")


def request_digest(request: InferenceRequest) -> str:
    """SHA-256 (hex) of what makes a request the same request, whatever its transport:
    each input's name, datatype, shape and data (little-endian values; BYTES elements
    length-prefixed), the request's parameters (canonical JSON, sorted keys; the
    transport-only ``binary_data*`` ones are gone by now) and the names of the outputs
    asked for. Not in it: the request ``id`` (each request echoes its own) and headers.

    Args:
        request: the decoded request.

    Returns:
        64 hex digits.
    """
    digest = hashlib.sha256()
    inputs = sorted(request.inputs, key=lambda t: t.name)
    outputs = None if request.outputs is None else sorted(o.name for o in request.outputs)
    digest.update(orjson.dumps(
        {"inputs": [[t.name, t.datatype, list(t.shape)] for t in inputs], "outputs": outputs,
         "parameters": request.parameters},
        option=orjson.OPT_SORT_KEYS, default=str,
    ))
    for tensor in inputs:
        digest.update(_data_bytes(tensor))
    return digest.hexdigest()


def _data_bytes(tensor: Tensor) -> bytes:
    data = tensor.data
    if tensor.datatype != "BYTES":
        return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()
    parts = []
    for value in data.ravel():
        raw = value.encode() if isinstance(value, str) else bytes(value)
        parts += [len(raw).to_bytes(8, "little"), raw]
    return b"".join(parts)
