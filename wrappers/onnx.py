"""ONNX runtime: an ``.onnx`` graph run by onnxruntime on CPU.

Metadata comes from the session: each tensor input / output gives a
:class:`TensorMetadata` with its ONNX element type mapped to an OIP datatype and any
symbolic or unknown dimension reported as ``-1``. Outputs that are not tensors (for
example the ``ZipMap`` sequence of maps skl2onnx emits by default) are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from protos.errors import InferenceError
from protos.protocol import ModelMetadata, TensorMetadata
from wrappers.base import ModelWrapper, framework_error
from wrappers.settings import ModelSettings, merge_metadata

__all__ = ["ONNXWrapper", "ONNX_DATATYPES"]

ONNX_DATATYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
"""onnxruntime ``NodeArg.type`` -> OIP datatype."""


def _dims(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _tensor_metadata(args: list[Any]) -> list[TensorMetadata]:
    return [
        TensorMetadata(a.name, ONNX_DATATYPES[a.type], _dims(a.shape))
        for a in args
        if a.type in ONNX_DATATYPES
    ]


class ONNXWrapper(ModelWrapper):
    """Serve an ONNX model with one single-threaded, sequential CPU session.

    Args:
        model_path: the ``.onnx`` file.
        settings: optional settings; declared inputs / outputs override the session's.
    """

    platform = "onnx_onnxv1"

    def __init__(self, model_path: str | Path, settings: ModelSettings | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings
        self._session: ort.InferenceSession | None = None
        self._metadata: ModelMetadata | None = None
        self._output_names: list[str] = []
        self._string_inputs: frozenset[str] = frozenset()

    def load(self) -> None:
        """Create the inference session (1 intra-op thread, sequential execution).

        Raises:
            InferenceError: the file is missing or not a valid ONNX model.
        """
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise InferenceError(f"cannot load ONNX model {self.model_path}: {exc}") from exc
        name = self.settings.name if self.settings else self.model_path.stem
        artifact = ModelMetadata(
            name, self.platform,
            _tensor_metadata(session.get_inputs()), _tensor_metadata(session.get_outputs()),
        )
        self._metadata = merge_metadata(artifact, self.settings)
        self._output_names = [o.name for o in self._metadata.outputs]
        self._string_inputs = frozenset(
            i.name for i in session.get_inputs() if i.type == "tensor(string)"
        )
        self._session = session

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session.

        Args:
            inputs: input name -> array of the declared dtype, first dimension the batch
                (BYTES arrays are decoded to ``str`` for ``tensor(string)`` inputs).

        Returns:
            Output name -> array, for every declared output.

        Raises:
            InferenceError: the model is not loaded or onnxruntime raised.
        """
        if self._session is None:
            raise InferenceError(f"ONNX model {self.model_path.name} is not loaded")
        feed = {name: self._feed_value(name, array) for name, array in inputs.items()}
        try:
            results = self._session.run(self._output_names, feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise framework_error("onnxruntime", exc) from exc
        return dict(zip(self._output_names, results, strict=True))

    def _feed_value(self, name: str, array: np.ndarray) -> np.ndarray:
        if name in self._string_inputs and array.dtype == object:
            return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v,
                                otypes=[object])(array)
        return array

    def unload(self) -> None:
        """Drop the session."""
        self._session = None

    def metadata(self) -> ModelMetadata:
        """Session metadata with settings applied (settings only before ``load``)."""
        if self._metadata is None:
            return merge_metadata(ModelMetadata(self.model_path.stem, self.platform, [], []),
                                  self.settings)
        return self._metadata
