"""Triton's model-configuration extension: an OIP model's metadata as a Triton
``ModelConfig`` (the JSON object of ``GET /v2/models/{m}/config``; the gRPC
``ModelConfig`` RPC carries the same fields).

Conventions (Triton ``docs/user_guide/model_configuration.md``):

* ``max_batch_size`` 0 means the model does not batch, and ``dims`` are the full
  shape (``-1`` for a variable dimension). With ``max_batch_size`` > 0 the first
  dimension is the batch and is left out of ``dims``; a tensor whose only dimension is
  the batch is written ``dims: [1]`` with ``reshape: {shape: []}``.
* Datatypes are ``TYPE_<OIP name>``, except BYTES, which is ``TYPE_STRING``.
* Model-level metadata ``parameters`` become ``parameters: {key: {string_value}}``.
"""

from __future__ import annotations

from typing import Any

from protos.protocol import ModelMetadata, TensorMetadata

__all__ = ["BACKENDS", "triton_datatype", "model_config", "batch_dimension_first"]

BACKENDS = {
    "onnx_onnxv1": "onnxruntime",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_torchscript": "pytorch",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "tensorrt_plan": "tensorrt",
}
"""OIP platform -> Triton backend; any other platform is its own backend name."""


def triton_datatype(datatype: str) -> str:
    """Triton's ``DataType`` enum name of an OIP datatype (``FP32`` -> ``TYPE_FP32``,
    ``BYTES`` -> ``TYPE_STRING``)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def batch_dimension_first(metadata: ModelMetadata) -> bool:
    """Whether every input and output has a variable first dimension (the batch)."""
    tensors = [*metadata.inputs, *metadata.outputs]
    return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


def _tensor(spec: TensorMetadata, batched: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": spec.name, "data_type": triton_datatype(spec.datatype)}
    dims = list(spec.shape[1:]) if batched else list(spec.shape)
    if batched and not dims:
        doc["dims"] = [1]
        doc["reshape"] = {"shape": []}
    else:
        doc["dims"] = dims
    return doc


def model_config(
    metadata: ModelMetadata, max_batch_size: int = 0, max_queue_delay_us: int | None = None
) -> dict[str, Any]:
    """Triton's model configuration of a model.

    Args:
        metadata: the model's OIP metadata.
        max_batch_size: most rows the server merges into one model call (0: no batching).
            Reported as 0 unless every tensor's first dimension is variable.
        max_queue_delay_us: longest wait of a request for its batch to fill, in
            microseconds (reported as ``dynamic_batching`` when batching).

    Returns:
        ``{"name", "platform", "backend", "max_batch_size", "input", "output"}`` and,
        when present, ``dynamic_batching`` and ``parameters``.
    """
    batched = max_batch_size > 0 and batch_dimension_first(metadata)
    doc: dict[str, Any] = {
        "name": metadata.name,
        "platform": metadata.platform,
        "backend": BACKENDS.get(metadata.platform, metadata.platform),
        "max_batch_size": max_batch_size if batched else 0,
        "input": [_tensor(t, batched) for t in metadata.inputs],
        "output": [_tensor(t, batched) for t in metadata.outputs],
    }
    if batched and max_queue_delay_us is not None:
        doc["dynamic_batching"] = {"max_queue_delay_microseconds": int(max_queue_delay_us)}
    if metadata.parameters:
        doc["parameters"] = {
            k: {"string_value": v if isinstance(v, str) else str(v).lower()
                if isinstance(v, bool) else str(v)}
            for k, v in metadata.parameters.items()
        }
    return doc
