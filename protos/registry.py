"""The core both transports serve: named OIP targets, health, server metadata.

A wrapper pod registers its one local model; the gateway registers one target per
deployment. REST and gRPC are thin adapters over :class:`ModelRegistry`.
"""

from __future__ import annotations

from collections.abc import Iterable

from protos.errors import ModelNotFoundError, ModelNotReadyError, UnsupportedError
from protos.protocol import InferenceRequest, InferenceResponse, Target, new_id

__all__ = ["ModelRegistry", "SERVER_NAME", "SERVER_VERSION", "EXTENSIONS"]

SERVER_NAME = "arbiter"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository", "arbiter_decisions"]


class ModelRegistry:
    """Targets by name, with readiness and draining.

    Args:
        targets: the targets served, addressed by ``target.name``.
        extensions: server metadata extensions advertised at ``GET /v2``.
    """

    def __init__(self, targets: Iterable[Target] = (), extensions: list[str] | None = None):
        self._targets: dict[str, Target] = {}
        self.extensions = list(EXTENSIONS if extensions is None else extensions)
        self.draining = False
        self.starting = False
        for target in targets:
            self.add(target)

    def add(self, target: Target) -> None:
        """Serve ``target`` under its name (replacing one of the same name)."""
        self._targets[target.name] = target

    def names(self) -> list[str]:
        """Names of the targets served, sorted."""
        return sorted(self._targets)

    def get(self, name: str, version: str | None = None) -> Target:
        """The target ``name`` at ``version`` (``None``: the default version).

        Raises:
            ModelNotFoundError: no such model, or it does not have that version.
        """
        target = self._targets.get(name)
        if target is None:
            raise ModelNotFoundError(f"model {name!r} not found")
        if version is not None and version not in target.metadata().versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
        return target

    def live(self) -> bool:
        """Liveness: the process serves requests."""
        return True

    def ready(self) -> bool:
        """Readiness: not draining and every target ready."""
        return not (self.draining or self.starting) and all(
            t.ready() for t in self._targets.values()
        )

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Readiness of one model.

        Raises:
            ModelNotFoundError: no such model or version.
        """
        return not (self.draining or self.starting) and self.get(name, version).ready()

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Run ``request`` on its target; the response echoes (or assigns) the id.

        Raises:
            ModelNotFoundError: unknown model or version.
            ModelNotReadyError: model not ready, or the server is draining.
            ArbiterError: whatever the target raises.
        """
        target = self.get(request.model_name, request.model_version)
        if self.starting:
            raise ModelNotReadyError("server is starting (loading or reaching its models)")
        if self.draining:
            raise ModelNotReadyError("server is draining")
        if not target.ready():
            raise ModelNotReadyError(f"model {request.model_name!r} is not ready")
        response = await target.infer(request)
        if response.id is None:
            response.id = request.id or new_id()
        return response

    async def load(self, name: str) -> None:
        """Load (or reload) model ``name`` (MLServer / Triton repository extension).

        Raises:
            ModelNotFoundError: unknown model.
            UnsupportedError: the target cannot be loaded on demand (a gateway deployment).
            InferenceError: the load failed.
        """
        target = self.get(name)
        if not hasattr(target, "load"):
            raise UnsupportedError(f"{name!r} cannot be loaded on demand")
        await target.load()

    async def unload(self, name: str) -> None:
        """Unload model ``name``: it stays listed and reports not ready until loaded.

        Raises:
            ModelNotFoundError: unknown model.
            UnsupportedError: the target cannot be unloaded (a gateway deployment).
        """
        target = self.get(name)
        if not hasattr(target, "unload"):
            raise UnsupportedError(f"{name!r} cannot be unloaded")
        await target.unload()

    def server_metadata(self) -> dict[str, object]:
        """``GET /v2`` body: name, version, extensions."""
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": self.extensions}

    def index(self) -> list[dict[str, str]]:
        """Repository index (MLServer / Triton ``POST /v2/repository/index``)."""
        out = []
        for name in self.names():
            target = self._targets[name]
            versions = target.metadata().versions or [""]
            state = "READY" if target.ready() else "UNAVAILABLE"
            out.extend({"name": name, "version": v, "state": state} for v in versions)
        return out
