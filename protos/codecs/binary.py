"""Triton's binary tensor extension for REST.

A body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
bytes of the tensors that carry ``parameters.binary_data_size``, in tensor order. A
header length of 0 is a "raw binary request": the whole body is the one input of a
model with one input, treated as batch 1, and every output comes back binary.

Source: triton-inference-server/server ``docs/protocol/extension_binary_data.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from protos.codecs import json as jsonc
from protos.codecs.limits import DEFAULT_MAX_ELEMENTS, checked_shape
from protos.codecs.raw import from_raw, to_raw
from protos.errors import InvalidRequestError
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    dtype_of,
    element_count,
)

__all__ = [
    "HEADER",
    "request_from_binary",
    "request_to_binary",
    "response_from_binary",
    "response_to_binary",
]

HEADER = "Inference-Header-Content-Length"


@dataclass(slots=True)
class _Cursor:
    """Hands out consecutive slices of the binary section."""

    view: memoryview
    offset: int = 0

    def take(self, name: str, size: object) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequestError(f"tensor {name!r}: binary_data_size must be an integer")
        end = self.offset + size
        if end > len(self.view):
            raise InvalidRequestError(
                f"tensor {name!r}: binary_data_size {size} runs past the end of the body"
            )
        chunk = self.view[self.offset : end]
        self.offset = end
        return chunk

    def finish(self) -> None:
        if self.offset != len(self.view):
            raise InvalidRequestError(
                f"body has {len(self.view) - self.offset} unclaimed bytes after the tensors"
            )


def _split(body: bytes, header_length: int) -> tuple[object, _Cursor]:
    if header_length < 0 or header_length > len(body):
        raise InvalidRequestError(
            f"{HEADER} {header_length} does not fit a body of {len(body)} bytes"
        )
    view = memoryview(body)
    return jsonc.loads(view[:header_length]), _Cursor(view[header_length:])


def request_from_binary(
    body: bytes,
    header_length: int,
    model_name: str,
    model_version: str | None = None,
    metadata: ModelMetadata | None = None,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[InferenceRequest, jsonc.BinaryOutputs]:
    """Decode a binary-extension request.

    Every shape is checked against ``max_elements`` and against the bytes its tensor
    actually has before anything is allocated.

    Args:
        body: the whole HTTP body.
        header_length: value of the ``Inference-Header-Content-Length`` header.
        model_name: model from the path.
        model_version: version from the path.
        metadata: the model's metadata, needed only for a raw binary request.
        max_elements: most elements one tensor's shape may imply.

    Raises:
        InvalidRequestError: sizes that do not add up, a shape the bytes cannot hold,
            or a raw request to a model with more than one input or more than one
            variable dimension (and see :func:`~protos.codecs.json.request_from_json`).
    """
    if header_length == 0:
        return _raw_request(body, model_name, model_version, metadata, max_elements)
    doc, cursor = _split(body, header_length)
    request, prefs = jsonc.request_from_json(
        doc, model_name, model_version, cursor.take, max_elements=max_elements)
    cursor.finish()
    return request, prefs


def _raw_request(
    body: bytes, model_name: str, model_version: str | None, metadata: ModelMetadata | None,
    max_elements: int,
) -> tuple[InferenceRequest, jsonc.BinaryOutputs]:
    if metadata is None or len(metadata.inputs) != 1:
        raise InvalidRequestError("a raw binary request needs a model with exactly one input")
    spec = metadata.inputs[0]
    shape = checked_shape(_raw_shape(spec.shape, spec.datatype, len(body)), spec.name,
                          max_elements)
    data = from_raw(body, spec.datatype, shape, spec.name)
    request = InferenceRequest(model_name, [Tensor(spec.name, spec.datatype, shape, data)],
                               model_version)
    return request, jsonc.BinaryOutputs(default=True)


def _raw_shape(declared: list[int], datatype: str, nbytes: int) -> tuple[int, ...]:
    if datatype == "BYTES":
        return (1,)
    dims = list(declared)
    if dims.count(-1) > 1:
        raise InvalidRequestError("a raw binary request needs at most one variable dimension")
    itemsize = dtype_of(datatype).itemsize
    fixed = element_count([d for d in dims if d != -1]) * itemsize
    if -1 in dims:
        if fixed == 0 or nbytes % fixed:
            raise InvalidRequestError(f"raw body of {nbytes} bytes does not fit shape {dims}")
        dims[dims.index(-1)] = nbytes // fixed
    return tuple(dims)


def _encode(doc_builder, tensors: list[Tensor], binary: set[str]) -> tuple[bytes, int]:
    chunks: list[bytes] = []
    docs = []
    for tensor in tensors:
        if tensor.name in binary:
            raw = to_raw(tensor.data, tensor.datatype)
            chunks.append(raw)
            docs.append(jsonc.tensor_to_doc(tensor, binary_size=len(raw)))
        else:
            docs.append(jsonc.tensor_to_doc(tensor))
    header = jsonc.dumps(doc_builder(docs))
    return b"".join([header, *chunks]), len(header)


def response_to_binary(
    response: InferenceResponse, prefs: jsonc.BinaryOutputs
) -> tuple[bytes, int | None]:
    """Encode a response, putting the outputs ``prefs`` asks for in the binary section.

    Returns:
        The body and the JSON header length (``None`` when nothing is binary: a plain
        JSON body).
    """
    binary = {t.name for t in response.outputs if prefs.wants(t.name)}
    if not binary:
        return jsonc.response_to_json(response), None
    return _encode(lambda docs: jsonc.response_doc(response, docs), response.outputs, binary)


def response_from_binary(body: bytes, header_length: int) -> InferenceResponse:
    """Decode a binary-extension response (the gateway's upstream client).

    Raises:
        InvalidRequestError: sizes that do not add up.
    """
    doc, cursor = _split(body, header_length)
    response = jsonc.response_from_json(doc, cursor.take)
    cursor.finish()
    return response


def request_to_binary(request: InferenceRequest, binary_outputs: bool = True) -> tuple[bytes, int]:
    """Encode a request with every input in the binary section; with
    ``binary_outputs`` the response is asked to be binary too."""
    if binary_outputs:
        request = InferenceRequest(
            request.model_name, request.inputs, request.model_version, request.id,
            request.outputs, {**request.parameters, "binary_data_output": True},
        )
    names = {t.name for t in request.inputs}
    return _encode(lambda docs: jsonc.request_doc(request, docs), request.inputs, names)
