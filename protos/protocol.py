"""Internal request and response types of the Open Inference Protocol (KServe V2).

These plain, numpy-backed objects are what routers, wrappers, explainers and the data
plane see; the codecs in ``protos/codecs`` turn JSON, the binary tensor extension and
protobuf into them and back. Nothing here knows about a transport.

Source: Open Inference Protocol, "Inference Request JSON Object", "Inference Response
JSON Object" and "Tensor Data Types" (kserve/open-inference-protocol,
specification/protocol/inference_rest.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from protos.errors import InvalidRequestError, UnsupportedError

__all__ = [
    "DATATYPES",
    "Parameters",
    "Tensor",
    "RequestedOutput",
    "InferenceRequest",
    "InferenceResponse",
    "TensorMetadata",
    "ModelMetadata",
    "Target",
    "datatype_of",
    "dtype_of",
    "new_id",
]

Parameters = dict[str, Any]
"""OIP ``parameters``: values are str, int, float or bool (kept as given)."""

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
"""OIP datatype name -> numpy dtype. BYTES tensors are object arrays of ``bytes``.
BF16 is absent from the OIP table and from MLServer; Arbiter answers it with
:class:`~protos.errors.UnsupportedError` (501)."""

_DATATYPE_BY_DTYPE: dict[np.dtype, str] = {v: k for k, v in DATATYPES.items()}


def dtype_of(datatype: str) -> np.dtype:
    """Return the numpy dtype of an OIP datatype name.

    Raises:
        UnsupportedError: for ``BF16``.
        InvalidRequestError: for a name that is not an OIP datatype.
    """
    try:
        return DATATYPES[datatype]
    except KeyError:
        if datatype == "BF16":
            raise UnsupportedError("datatype BF16 is not supported") from None
        raise InvalidRequestError(f"unknown datatype {datatype!r}") from None


def datatype_of(dtype: np.dtype) -> str:
    """Return the OIP datatype name of a numpy dtype (strings and bytes map to BYTES).

    Raises:
        InvalidRequestError: for a dtype with no OIP datatype (complex, say).
    """
    name = _DATATYPE_BY_DTYPE.get(np.dtype(dtype))
    if name is not None:
        return name
    if dtype.kind in "OSU":
        return "BYTES"
    raise InvalidRequestError(f"numpy dtype {dtype} has no OIP datatype")


_UUID4_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48


def new_id() -> str:
    """A fresh request / decision id (UUID4, 32 hex digits): ``uuid.uuid4().hex``
    without building a ``UUID`` object (a third of the cost)."""
    return f"{int.from_bytes(os.urandom(16), 'big') & _UUID4_CLEAR | _UUID4_SET:032x}"


@dataclass(slots=True)
class Tensor:
    """One named tensor of a request or response.

    Attributes:
        name: tensor name.
        datatype: OIP datatype name (see :data:`DATATYPES`).
        shape: dimensions, row-major; ``math.prod(shape) == data.size``.
        data: numpy array of that shape and the datatype's dtype (BYTES: object array
            of ``bytes``).
        parameters: the tensor's OIP ``parameters``, passed through unchanged.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)

    @classmethod
    def from_array(
        cls, name: str, array: np.ndarray, parameters: Parameters | None = None
    ) -> Tensor:
        """Wrap a numpy array; str/bytes arrays become BYTES tensors."""
        datatype = datatype_of(array.dtype)
        if datatype == "BYTES" and array.dtype != object:
            array = np.array(
                [v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel()],
                dtype=object,
            ).reshape(array.shape)
        return cls(name, datatype, tuple(int(d) for d in array.shape), array, parameters or {})

    @property
    def batch_size(self) -> int:
        """Rows in the first dimension (1 for a scalar-shaped tensor)."""
        return self.shape[0] if self.shape else 1


@dataclass(slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs`` list."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    """An OIP inference request.

    Attributes:
        model_name: model (or gateway deployment) addressed, from the path or RPC.
        model_version: version from the path, or ``None`` for the default.
        id: request id; echoed on the response, generated when absent.
        inputs: input tensors.
        outputs: requested outputs, or ``None`` for all outputs.
        parameters: request-level ``parameters``, passed through unchanged.
        headers: transport headers / gRPC metadata the client sent (lower-case keys),
            for routers and plugins; never serialised into a body.
    """

    model_name: str
    inputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: Parameters = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def input(self, name: str) -> Tensor:
        """The input tensor called ``name``.

        Raises:
            InvalidRequestError: no such input.
        """
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise InvalidRequestError(f"request has no input named {name!r}")


@dataclass(slots=True)
class InferenceResponse:
    """An OIP inference response.

    Attributes:
        model_name: the model (or deployment) that answered.
        outputs: output tensors.
        model_version: version, when the server versions models.
        id: the request's id.
        parameters: response ``parameters`` (the gateway adds ``decision_id``,
            ``routed_model`` and ``router`` here).
        headers: extra HTTP response headers / gRPC trailing metadata.
    """

    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def output(self, name: str) -> Tensor:
        """The output tensor called ``name``.

        Raises:
            InferenceError: no such output.
        """
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        from protos.errors import InferenceError

        raise InferenceError(f"response has no output named {name!r}")


@dataclass(slots=True)
class TensorMetadata:
    """Name, datatype and shape of a model input or output; ``-1`` marks a variable
    dimension."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters = field(default_factory=dict)

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether ``shape`` matches this declaration (same rank, ``-1`` matches any)."""
        if len(shape) != len(self.shape):
            return False
        return all(d == -1 or d == s for d, s in zip(self.shape, shape, strict=True))


@dataclass(slots=True)
class ModelMetadata:
    """OIP model metadata (``GET /v2/models/<model>``)."""

    name: str
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    versions: list[str] = field(default_factory=list)
    parameters: Parameters = field(default_factory=dict)

    def input(self, name: str) -> TensorMetadata | None:
        """Declared input ``name``, or ``None``."""
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorMetadata | None:
        """Declared output ``name``, or ``None``."""
        return next((t for t in self.outputs if t.name == name), None)


@runtime_checkable
class Target(Protocol):
    """Anything that answers OIP inference: a local model (in a wrapper pod) or a
    deployment or a remote wrapper pod (in the gateway)."""

    name: str

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Run one inference.

        Raises:
            ArbiterError: any subclass, mapped to a status by the transport.
        """
        ...

    def metadata(self) -> ModelMetadata:
        """The target's OIP model metadata."""
        ...

    def ready(self) -> bool:
        """Whether the target can serve now."""
        ...


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    """Product of the dimensions (1 for a scalar shape)."""
    return math.prod(shape)
