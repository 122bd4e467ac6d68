"""Build a framework wrapper from a registry key or an import path.

``FRAMEWORKS`` maps ``"sklearn"``, ``"onnx"`` and ``"torch"`` to their wrapper classes
(imported lazily, so serving an ONNX model never imports torch). A custom runtime is
named by an import path ``"pkg.mod:Class"`` whose class takes
``(model_path, settings)`` and subclasses :class:`~wrappers.base.ModelWrapper`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from wrappers.base import ModelWrapper
from wrappers.settings import ModelSettings

__all__ = ["FRAMEWORKS", "build_wrapper", "wrapper_class", "wrapper_from_settings"]

FRAMEWORKS: dict[str, str] = {
    "sklearn": "wrappers.sklearn:SKLearnWrapper",
    "onnx": "wrappers.onnx:ONNXWrapper",
    "torch": "wrappers.pytorch:TorchWrapper",
}
"""Registry key -> import path of the wrapper class."""


def wrapper_class(framework: str) -> type[ModelWrapper]:
    """Resolve a registry key or ``"pkg.mod:Class"`` to a wrapper class.

    Raises:
        ValueError: unknown key, malformed path, import failure, or the class is not a
            ``ModelWrapper``.
    """
    path = FRAMEWORKS.get(framework, framework)
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(
            f"unknown framework {framework!r}; use one of {sorted(FRAMEWORKS)} "
            "or an import path 'pkg.mod:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import wrapper {path!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, ModelWrapper)):
        raise ValueError(f"{path!r} is not a ModelWrapper subclass")
    return cls


def build_wrapper(
    framework: str, model_path: str | Path, settings: ModelSettings | None = None
) -> ModelWrapper:
    """Construct (not load) the wrapper of ``framework`` for ``model_path``.

    Args:
        framework: ``"sklearn"``, ``"onnx"``, ``"torch"`` or ``"pkg.mod:Class"``.
        model_path: the artifact.
        settings: the model's settings (required by ``torch``).

    Raises:
        ValueError: see :func:`wrapper_class`.
        InferenceError: the wrapper rejects the settings (torch without inputs).
    """
    return wrapper_class(framework)(model_path, settings)  # type: ignore[call-arg]


def wrapper_from_settings(settings: ModelSettings) -> ModelWrapper:
    """Construct the wrapper named by ``settings.framework`` for ``settings.uri``.

    Raises:
        ValueError: the settings lack ``framework`` or ``uri``, or see
            :func:`wrapper_class`.
    """
    if not settings.framework or not settings.uri:
        raise ValueError(f"settings of model {settings.name!r} need 'framework' and 'uri'")
    return build_wrapper(settings.framework, settings.uri, settings)
