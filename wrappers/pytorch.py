"""PyTorch runtime: a TorchScript module saved with ``torch.jit.save``.

Named ``pytorch.py`` rather than ``torch.py`` so that ``import torch`` can never
resolve to this module (for example when a tool puts ``wrappers/`` on ``sys.path``).

TorchScript carries no tensor names, so the settings must declare the inputs and
outputs. The module is called with the inputs as positional tensors, in declared
order. Its result maps to the declared outputs: a single tensor to the one declared
output; a tuple or list to the declared outputs in order; a dict by key when the keys
are the declared names, otherwise in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from protos.errors import InferenceError
from protos.protocol import ModelMetadata
from wrappers.base import ModelWrapper, framework_error
from wrappers.settings import ModelSettings, settings_metadata

__all__ = ["TorchWrapper"]


class TorchWrapper(ModelWrapper):
    """Serve a TorchScript module on CPU, one intra-op thread, under inference mode.

    Args:
        model_path: the ``.pt`` file written by ``torch.jit.save``.
        settings: required; must declare ``inputs`` and ``outputs``.

    Raises:
        InferenceError: the settings declare no inputs or no outputs.
    """

    platform = "pytorch_torchscript"

    def __init__(self, model_path: str | Path, settings: ModelSettings | None = None) -> None:
        if settings is None or not settings.inputs or not settings.outputs:
            raise InferenceError(
                "TorchScript models need settings declaring 'inputs' and 'outputs'"
            )
        self.model_path = Path(model_path)
        self.settings = settings
        self._metadata = settings_metadata(settings, self.platform)
        self._input_names = [i.name for i in settings.inputs]
        self._output_names = [o.name for o in settings.outputs]
        self._module: Any = None

    def load(self) -> None:
        """``torch.jit.load`` the module on CPU and put it in eval mode.

        Also sets ``torch.set_num_threads(1)`` (process-wide): a wrapper pod scales
        by processes and batches, not by intra-op threads.

        Raises:
            InferenceError: the file is missing or not TorchScript.
        """
        torch.set_num_threads(1)
        try:
            module = torch.jit.load(str(self.model_path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises many types
            raise InferenceError(f"cannot load TorchScript {self.model_path}: {exc}") from exc
        module.eval()
        self._module = module

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the module with the declared inputs in order.

        Args:
            inputs: input name -> array, first dimension the batch.

        Returns:
            Declared output name -> array.

        Raises:
            InferenceError: not loaded, the module raised, or its result does not
                match the declared outputs.
        """
        if self._module is None:
            raise InferenceError(f"TorchScript model {self.model_path.name} is not loaded")
        args = [torch.from_numpy(_writable(inputs[name])) for name in self._input_names]
        try:
            with torch.inference_mode():
                result = self._module(*args)
        except Exception as exc:  # noqa: BLE001 - torch raises many types
            raise framework_error("TorchScript model", exc) from exc
        return self._map_outputs(result)

    def _map_outputs(self, result: Any) -> dict[str, np.ndarray]:
        names = self._output_names
        if isinstance(result, torch.Tensor):
            values = [result]
        elif isinstance(result, dict):
            values = [result[n] for n in names] if set(names) <= set(result) else list(
                result.values())
        elif isinstance(result, tuple | list):
            values = list(result)
        else:
            raise InferenceError(f"TorchScript model returned {type(result).__name__}")
        if len(values) != len(names):
            raise InferenceError(
                f"TorchScript model returned {len(values)} outputs; settings declare {names}"
            )
        return {n: v.detach().cpu().numpy() for n, v in zip(names, values, strict=True)}

    def unload(self) -> None:
        """Drop the module."""
        self._module = None

    def metadata(self) -> ModelMetadata:
        """Metadata from the settings (TorchScript has no tensor names)."""
        return self._metadata


def _writable(array: np.ndarray) -> np.ndarray:
    """``torch.from_numpy`` warns on read-only arrays (such as decoded buffers)."""
    return array if array.flags.writeable else array.copy()
