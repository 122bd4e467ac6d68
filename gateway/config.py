"""The gateway config file: models, deployments (router, explain), store.

Example (``examples/credit/gateway.yaml`` is a complete one)::

    models:
      lr:  {url: grpc://127.0.0.1:9001, name: credit-lr}
      gbm: {url: http://127.0.0.1:9002, name: credit-gbm, timeout_s: 0.5}
    deployments:
      credit:
        router: {kind: thompson, arms: [lr, gbm]}
        explain: {method: kernel_shap, encoding: models/encoding.json, ...}
    store: {kind: sqlite, path: arbiter.sqlite}   # or {kind: postgres, dsn: ...}

An invalid file is rejected at startup by :func:`load_config` with a message naming
each bad field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explain.settings import ExplainSpec
from routers.specs import RouterSpec

__all__ = [
    "ConfigError",
    "ModelRef",
    "DeploymentSpec",
    "StoreSpec",
    "DSN_ENV",
    "GatewayConfig",
    "load_config",
]

DSN_ENV = "ARBITER_STORE_DSN"
"""Environment variable the PostgreSQL DSN is read from when the config has none."""

Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


class ConfigError(ValueError):
    """The config file is missing, not YAML, or not a valid gateway config."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Spec):
    """A model-wrapper pod the gateway calls."""

    url: str = Field(
        description="Where the pod listens: grpc://host:port (gRPC) or http://host:port (REST)."
    )
    name: Name = Field(description="Model name on that pod (/v2/models/<name>).")
    version: str | None = Field(default=None, description="Model version; None: default.")
    timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="Deadline of one call, in seconds (504 past it)."
    )
    connections: int = Field(
        default=4, ge=1, le=64, description="gRPC channels or HTTP keep-alive connections."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in ("grpc", "http") or not parsed.hostname or not parsed.port:
            raise ValueError("must be grpc://host:port or http://host:port")
        return url

    @property
    def protocol(self) -> str:
        """``grpc`` or ``http``."""
        return urlparse(self.url).scheme


class FeedbackSpec(_Spec):
    """How a ground truth is turned into a reward for each model."""

    output: str = Field(
        default="label",
        description="Output compared with the truth. Integer/BOOL/BYTES outputs score 1 "
        "per matching row; float outputs score 1 - mean absolute error, clipped to [0, 1].",
    )
    labels: list[int | str] | None = Field(
        default=None,
        description="The values a truth may take (for example [0, 1]); another value is "
        "a 400 instead of a reward of 0. None: any value of the output's kind.",
    )


class DeploymentSpec(_Spec):
    """One deployment: an OIP model name served by the gateway, and its router."""

    router: RouterSpec = Field(description="Routing policy (discriminated on 'kind').")
    explain: ExplainSpec | None = Field(
        default=None, description="Explanation of each decision; None: no explanations."
    )
    feedback: FeedbackSpec = Field(
        default_factory=FeedbackSpec, description="Truth-to-reward rule."
    )
    max_shadow_in_flight: int = Field(
        default=256, ge=1, le=100_000,
        description="Shadow calls in flight at once; more are shed and counted.",
    )
    seed: int | None = Field(default=None, description="Seed of the router's randomness.")


class StoreSpec(_Spec):
    """Where decisions and router state live: one store, one transaction for a feedback
    and the arm counts it changes.

    ``kind: memory`` (tests; lost at exit, one process), ``kind: sqlite`` (the embedded
    default: one node, any number of gateway processes) or ``kind: postgres`` (any
    number of replicas on any nodes).
    """

    kind: Literal["memory", "sqlite", "postgres"] = Field(
        default="sqlite", description="memory, sqlite or postgres.",
    )
    path: Path = Field(
        default=Path("arbiter.sqlite"),
        description="SQLite file (kind sqlite); relative to the config file.",
    )
    dsn: str | None = Field(
        default=None,
        description="PostgreSQL connection string (kind postgres), e.g. "
        "postgresql://user:pass@host:5432/arbiter. None: read from the environment "
        "variable ARBITER_STORE_DSN (for Kubernetes Secrets).",
    )
    pool_size: int = Field(
        default=4, ge=1, le=64, description="Connections to PostgreSQL per gateway process."
    )
    decision_writes: Literal["behind", "before_answer"] = Field(
        default="behind",
        description="behind: a response is sent while its decision waits in a bounded "
        "write-behind queue, committed within flush_interval_ms (a crash loses at most "
        "write_queue decisions, counted); before_answer: each response waits for its "
        "decision's commit. Feedback is always committed before it is acknowledged.",
    )
    write_queue: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="Most decisions waiting to be written; a full queue makes new "
        "decisions wait for room (backpressure), it never drops one.",
    )
    flush_interval_ms: float = Field(
        default=20.0, ge=0, le=10_000,
        description="Longest time a queued decision waits before its batch is committed.",
    )
    refresh_interval_ms: float = Field(
        default=250.0, gt=0, le=60_000,
        description="How often each process re-reads router state (arm counts, "
        "champion) that other processes committed.",
    )
    memory_size: int = Field(
        default=10_000, ge=1,
        description="Most recent decisions each process keeps in memory for feedback.",
    )
    idempotency_window_s: float = Field(
        default=86_400.0, ge=0,
        description="A request repeating an Idempotency-Key within this many seconds "
        "gets the original decision back. 0: keys are ignored.",
    )

    @model_validator(mode="after")
    def _postgres_dsn(self) -> StoreSpec:
        if self.kind == "postgres" and not (self.dsn or os.environ.get(DSN_ENV)):
            raise ValueError(f"kind postgres needs 'dsn' or the environment variable {DSN_ENV}")
        return self

    @property
    def resolved_dsn(self) -> str | None:
        """The DSN from the config, else from ``ARBITER_STORE_DSN``."""
        return self.dsn or os.environ.get(DSN_ENV)


class GatewayConfig(_Spec):
    """The whole gateway config file."""

    models: dict[Name, ModelRef] = Field(description="Model pods by key.")
    deployments: dict[Name, DeploymentSpec] = Field(description="Deployments by name.")
    store: StoreSpec = Field(
        default_factory=StoreSpec, description="Decision and router-state store."
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, raw):
        if isinstance(raw, dict):
            for old in ("decisions", "state"):
                if old in raw:
                    raise ValueError(
                        f"'{old}:' was replaced by 'store:' (decisions and router state now "
                        "share one store): use store: {kind: sqlite, path: arbiter.sqlite} "
                        "or store: {kind: postgres, dsn: postgresql://...}"
                    )
        return raw

    @model_validator(mode="after")
    def _known_models(self) -> GatewayConfig:
        for name, deployment in self.deployments.items():
            router_models = _router_models(deployment.router)
            for key in router_models:
                if key not in self.models:
                    raise ValueError(
                        f"deployments.{name}.router names model {key!r}, which is not "
                        f"under 'models' (known: {sorted(self.models)})"
                    )
            explain = deployment.explain
            if explain is not None and explain.method == "tree_shap":
                missing = sorted(set(router_models) - set(explain.model_artifact))
                if missing:
                    raise ValueError(
                        f"deployments.{name}.explain.model_artifact lacks {missing} "
                        "(tree_shap needs each routed model's artifact)"
                    )
        if not self.deployments:
            raise ValueError("'deployments' is empty")
        return self


def _router_models(spec) -> list[str]:
    kind = spec.kind
    if kind in ("thompson", "epsilon_greedy"):
        return list(spec.arms)
    if kind == "weighted":
        return list(spec.weights)
    if kind == "shadow":
        return [spec.primary, *(s.model for s in spec.shadows)]
    return [spec.champion, *spec.challengers]


def router_models(spec) -> list[str]:
    """Every model key a router spec names, primary first."""
    return _router_models(spec)


def _format(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway config; relative paths in it resolve against the
    file's folder.

    Raises:
        ConfigError: file missing, not YAML, or invalid (the message names each field).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"gateway config not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"gateway config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"gateway config {path} must be a mapping")
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid gateway config {path}:\n{_format(exc)}") from None
    return _resolve_paths(config, path.parent.resolve())


def _resolve_paths(config: GatewayConfig, base: Path) -> GatewayConfig:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else p if p.is_absolute() else base / p

    store = config.store.model_copy(update={"path": resolve(config.store.path)})
    deployments = {}
    for name, dep in config.deployments.items():
        explain = dep.explain
        if explain is not None:
            explain = explain.model_copy(update={
                "reference_data": resolve(explain.reference_data),
                "encoding": resolve(explain.encoding),
                "model_artifact": {k: resolve(v) for k, v in explain.model_artifact.items()},
            })
        deployments[name] = dep.model_copy(update={"explain": explain})
    return config.model_copy(
        update={"store": store, "deployments": deployments}
    )
