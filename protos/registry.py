"""The core both transports serve: named OIP targets, health, server metadata, and
Triton's repository, model-configuration and statistics extensions.

A wrapper pod registers its one local model; the gateway registers one target per
deployment. REST and gRPC are thin adapters over :class:`ModelRegistry`.

Statistics (:mod:`protos.statistics`) are counted here for every request that reaches
a target: its outcome, duration and rows. A target that measures its own phases
(:class:`~protos.statistics.MeasuredTarget`, a pod's model) records them itself; for
any other target (a gateway deployment) a request is one execution spent in
``compute_infer``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from protos.errors import ModelNotFoundError, ModelNotReadyError, UnsupportedError
from protos.protocol import InferenceRequest, InferenceResponse, Target, new_id
from protos.statistics import MeasuredTarget, ModelStatistics
from protos.triton import model_config

__all__ = ["ModelRegistry", "SERVER_NAME", "SERVER_VERSION", "EXTENSIONS"]

SERVER_NAME = "arbiter"
SERVER_VERSION = "0.1.0"
EXTENSIONS = [
    "binary_tensor_data", "model_repository", "model_configuration", "statistics",
    "arbiter_decisions",
]


class ModelRegistry:
    """Targets by name, with readiness and draining.

    Args:
        targets: the targets served, addressed by ``target.name``.
        extensions: server metadata extensions advertised at ``GET /v2``.

    Attributes:
        readiness: ``"all"``: the server is ready when every target is; ``"any"``:
            when one is.
    """

    def __init__(self, targets: Iterable[Target] = (), extensions: list[str] | None = None):
        self._targets: dict[str, Target] = {}
        self._statistics: dict[str, ModelStatistics] = {}
        self._measured: dict[str, bool] = {}  # checked once: a Protocol isinstance is slow
        self.extensions = list(EXTENSIONS if extensions is None else extensions)
        self.draining = False
        self.starting = False
        self.readiness = "all"
        for target in targets:
            self.add(target)

    def add(self, target: Target) -> None:
        """Serve ``target`` under its name (replacing one of the same name)."""
        self._targets[target.name] = target
        own = target.statistics if isinstance(target, MeasuredTarget) else None
        self._statistics[target.name] = own if own is not None else ModelStatistics()
        self._measured[target.name] = own is not None

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
        """Readiness: not draining, and every target ready (:attr:`readiness`
        ``"all"``, the default) or at least one (``"any"``)."""
        if self.draining or self.starting:
            return False
        ready = (t.ready() for t in self._targets.values())
        return any(ready) if self.readiness == "any" else all(ready)

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
            reason = getattr(target, "not_ready_reason", None)
            raise ModelNotReadyError(
                (reason() if reason is not None else None)
                or f"model {request.model_name!r} is not ready")
        statistics = self._statistics[target.name]
        start = time.perf_counter_ns()
        try:
            response = await target.infer(request)
        except Exception:
            statistics.record_failure(time.perf_counter_ns() - start)
            raise
        elapsed = time.perf_counter_ns() - start
        rows = request.inputs[0].batch_size if request.inputs else 1
        if not self._measured[target.name]:
            statistics.record_phases(infer_ns=elapsed)
            statistics.record_execution(rows, infer_ns=elapsed)
        statistics.record_success(rows, elapsed)
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

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Repository index (MLServer / Triton ``POST /v2/repository/index``): name,
        version and state (``READY``, or ``UNAVAILABLE`` with a ``reason``) of every
        model, or of the ready ones only."""
        out = []
        for name in self.names():
            target = self._targets[name]
            versions = target.metadata().versions or [""]
            ready = target.ready()
            if ready_only and not ready:
                continue
            entry = {"state": "READY"} if ready else {
                "state": "UNAVAILABLE", "reason": "unloaded, loading or unreachable"}
            out.extend({"name": name, "version": v, **entry} for v in versions)
        return out

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's model configuration of ``name`` (:func:`protos.triton.model_config`).
        A target reports batching through its optional ``max_batch_size`` (0: off) and
        ``max_queue_delay_us`` attributes.

        Raises:
            ModelNotFoundError: no such model or version.
        """
        target = self.get(name, version)
        return model_config(
            target.metadata(),
            max_batch_size=int(getattr(target, "max_batch_size", 0)),
            max_queue_delay_us=getattr(target, "max_queue_delay_us", None),
        )

    def statistics(self, name: str | None = None, version: str | None = None) -> list[dict]:
        """Triton's ``ModelStatistics`` objects: of every model (``name`` None), or of
        one model (every version, or ``version``). A version-less model reports
        version ``""``.

        Raises:
            ModelNotFoundError: no such model or version.
        """
        names = self.names() if name is None else [self.get(name, version).name]
        out = []
        for model in names:
            versions = self._targets[model].metadata().versions or [""]
            chosen = versions if version is None else [version]
            out.extend(self._statistics[model].as_doc(model, v) for v in chosen)
        return out
