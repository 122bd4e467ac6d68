"""Settings of one served model, read from a YAML file beside the artifact.

Example (``examples/credit/models/mlp.yaml``)::

    name: credit-mlp
    version: "1"
    framework: torch
    uri: mlp.pt
    inputs:  [{name: input, datatype: FP32, shape: [-1, 20]}]
    outputs: [{name: label, datatype: INT64, shape: [-1]},
              {name: probabilities, datatype: FP32, shape: [-1, 2]}]
    max_batch_size: 64
    max_batch_wait_ms: 2
    max_queue_rows: 4096

Settings are parsed once at start-up and passed down; nothing on the request path
touches pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protos.protocol import ModelMetadata, TensorMetadata

__all__ = [
    "ModelSettings",
    "SettingsError",
    "TensorSpec",
    "as_dict",
    "load_settings",
    "merge_metadata",
    "settings_metadata",
]

DatatypeName = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]
ParameterValue = str | bool | int | float


class SettingsError(ValueError):
    """A model settings file is missing, not YAML, or has an invalid field."""


class TensorSpec(BaseModel):
    """Declared name, datatype and shape of one model input or output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Tensor name, as used in OIP requests.")
    datatype: DatatypeName = Field(description="OIP datatype name, for example FP32.")
    shape: list[Annotated[int, Field(ge=-1)]] = Field(
        description="Dimensions; -1 marks a variable dimension (the first is the batch)."
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict, description="Extra OIP tensor parameters for metadata."
    )

    def to_metadata(self) -> TensorMetadata:
        """The protocol-level :class:`TensorMetadata` of this spec."""
        return TensorMetadata(self.name, self.datatype, list(self.shape), dict(self.parameters))


class ModelSettings(BaseModel):
    """Settings of one served model (one wrapper pod or one local target)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="Model name served under /v2/models/<name>.",
    )
    version: str | None = Field(
        default=None, min_length=1, description="Model version; None for an unversioned model."
    )
    framework: str | None = Field(
        default=None,
        description="Runtime: 'sklearn', 'onnx', 'torch', or an import path 'pkg.mod:Class'.",
    )
    uri: str | None = Field(
        default=None,
        description="Path of the model artifact; relative paths are resolved against "
        "the settings file's directory by load_settings.",
    )
    platform: str | None = Field(
        default=None, description="OIP platform string; None keeps the wrapper's own."
    )
    inputs: list[TensorSpec] = Field(
        default_factory=list,
        description="Declared inputs; empty means read them from the artifact.",
    )
    outputs: list[TensorSpec] = Field(
        default_factory=list,
        description="Declared outputs; empty means read them from the artifact.",
    )
    max_batch_size: int = Field(
        default=64, ge=1, le=65536,
        description="Most rows merged into one predict call; 1 disables batching.",
    )
    max_batch_wait_ms: float = Field(
        default=2.0, ge=0, le=10_000,
        description="Longest time, in milliseconds, a request waits for others to join "
        "its batch while the model is idle.",
    )
    max_concurrency: int = Field(
        default=1, ge=1, le=64,
        description="Predict calls of this model that may run at once (worker threads).",
    )
    max_queue_rows: int = Field(
        default=4096, ge=1, le=2**24,
        description="Most rows that may wait for a predict call in the batching queue; "
        "a request that would go past it is refused at once with 429 / "
        "RESOURCE_EXHAUSTED and Retry-After (a request finding the queue empty is "
        "always admitted).",
    )
    probe_on_load: bool = Field(
        default=True,
        description="Run one all-zero row through the model before reporting ready, so a "
        "declared contract the model does not meet fails the start (off for models that "
        "reject an all-zero row).",
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict, description="Model-level parameters reported in metadata."
    )

    @field_validator("inputs", "outputs")
    @classmethod
    def _unique_names(cls, specs: list[TensorSpec]) -> list[TensorSpec]:
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate tensor names {duplicates}")
        return specs


def _format_validation_error(path: Path, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "<root>"
        parts.append(f"field '{field}': {item['msg']}")
    return f"invalid model settings in {path}: " + "; ".join(parts)


def load_settings(path: str | Path) -> ModelSettings:
    """Read and validate a model settings YAML file.

    A relative ``uri`` is made absolute against the file's directory.

    Args:
        path: the YAML file.

    Returns:
        The validated settings.

    Raises:
        SettingsError: the file is missing or not a YAML mapping, or a field is
            invalid (the message names every bad field).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read model settings {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"model settings {path} must be a YAML mapping")
    uri = raw.get("uri")
    if isinstance(uri, str) and "://" not in uri and not Path(uri).is_absolute():
        raw["uri"] = str((path.parent / uri).resolve())
    try:
        return ModelSettings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_format_validation_error(path, exc)) from None


def merge_metadata(
    artifact: ModelMetadata, settings: ModelSettings | None
) -> ModelMetadata:
    """Apply settings over metadata read from an artifact.

    Declared inputs / outputs, platform, name, version and parameters in the settings
    replace the artifact's; everything absent keeps the artifact's value.
    """
    if settings is None:
        return artifact
    return ModelMetadata(
        name=settings.name,
        platform=settings.platform or artifact.platform,
        inputs=[s.to_metadata() for s in settings.inputs] or artifact.inputs,
        outputs=[s.to_metadata() for s in settings.outputs] or artifact.outputs,
        versions=[settings.version] if settings.version else artifact.versions,
        parameters={**artifact.parameters, **settings.parameters},
    )


def settings_metadata(settings: ModelSettings, platform: str) -> ModelMetadata:
    """Metadata built from the settings alone (for runtimes with no introspection)."""
    return merge_metadata(ModelMetadata(settings.name, platform, [], []), settings)


def as_dict(settings: ModelSettings) -> dict[str, Any]:
    """Plain-dict form of the settings, suitable for writing back to YAML."""
    return settings.model_dump(mode="json", exclude_defaults=True)
