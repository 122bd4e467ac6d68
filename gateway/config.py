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
    auth: {tokens_file: tokens.yaml}              # bearer tokens with scopes
    feedback: {require_decision_token: true}      # secret: ARBITER_FEEDBACK_SECRET

An invalid file is rejected at startup by :func:`load_config` with a message naming
each bad field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from explain.settings import ExplainSpec
from gateway.domain import InputSchemaSpec, load_input_schema
from gateway.groups import MonitoringSpec, resolved
from routers.specs import RouterSpec

__all__ = [
    "ConfigError",
    "ModelRef",
    "BreakerSpec",
    "DeploymentSpec",
    "StoreSpec",
    "AuthSpec",
    "GatewayFeedbackSpec",
    "ConsoleSpec",
    "DSN_ENV",
    "FEEDBACK_SECRET_ENV",
    "default_store",
    "GatewayConfig",
    "load_config",
]

DSN_ENV = "ARBITER_STORE_DSN"
"""Environment variable the PostgreSQL DSN is read from when the config has none."""

FEEDBACK_SECRET_ENV = "ARBITER_FEEDBACK_SECRET"
"""Environment variable the feedback-token secret is read from when the config has none."""

_SCHEMES = {"grpc": ("grpc", False), "grpcs": ("grpc", True),
            "http": ("http", False), "https": ("http", True)}

Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


class ConfigError(ValueError):
    """The config file is missing, not YAML, or not a valid gateway config."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BreakerSpec(_Spec):
    """The circuit breaker of one model (``gateway.breaker``)."""

    failures: int = Field(
        default=3, ge=1, le=1000,
        description="Consecutive failed calls (unreachable, 5xx, deadline) that open it: "
        "the model then leaves every router's healthy set.",
    )
    reset_s: float = Field(
        default=1.0, gt=0, le=600,
        description="Seconds it stays open before a model-ready probe may close it.",
    )
    probe_interval_s: float = Field(
        default=1.0, ge=0, le=600,
        description="Seconds between model-ready probes while it is closed (a failed "
        "probe counts as a failure, so a pod that dies without traffic is noticed); "
        "0: no such probes.",
    )


class ModelRef(_Spec):
    """A model-wrapper pod the gateway calls."""

    url: str = Field(
        description="Where the pod listens: grpc://host:port (gRPC), http://host:port "
        "(REST), or grpcs:// / https:// for the same over TLS."
    )
    name: Name = Field(description="Model name on that pod (/v2/models/<name>).")
    version: str | None = Field(default=None, description="Model version; None: default.")
    timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="Deadline of one call, in seconds (504 past it)."
    )
    connections: int = Field(
        default=4, ge=1, le=64, description="gRPC channels or HTTP keep-alive connections."
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle the pod's certificate must chain to (grpcs/https); "
        "None: the system's CAs. Relative to the config file.",
    )
    client_cert: Path | None = Field(
        default=None, description="PEM client certificate presented to the pod (mTLS).",
    )
    client_key: Path | None = Field(
        default=None, description="PEM key of client_cert.",
    )
    breaker: BreakerSpec = Field(
        default_factory=BreakerSpec, description="Circuit breaker of this model.",
    )
    token_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the bearer token sent to the pod "
        "(when the pod has auth; mount it from a Secret).",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in _SCHEMES or not parsed.hostname or not parsed.port:
            raise ValueError("must be grpc://host:port, http://host:port, grpcs://host:port "
                             "or https://host:port")
        return url

    @model_validator(mode="after")
    def _tls_files(self) -> ModelRef:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if not self.tls and (self.ca_file or self.client_cert):
            raise ValueError("ca_file and client_cert need a grpcs:// or https:// url")
        return self

    @property
    def protocol(self) -> str:
        """``grpc`` or ``http`` (with or without TLS)."""
        return _SCHEMES[urlparse(self.url).scheme][0]

    @property
    def tls(self) -> bool:
        """Whether the pod is reached over TLS (``grpcs://`` or ``https://``)."""
        return _SCHEMES[urlparse(self.url).scheme][1]

    @property
    def address(self) -> str:
        """``host:port`` of the pod."""
        return urlparse(self.url).netloc

    def token(self) -> str | None:
        """The bearer token for the pod, from ``token_env`` (None when unset)."""
        return os.environ.get(self.token_env) if self.token_env else None


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
    penalise_failures: bool = Field(
        default=False,
        description="A decision whose routed model failed (500 / INTERNAL) is scored "
        "as reward 0 for that model, once, through the feedback path.",
    )
    require_decision_token: bool | None = Field(
        default=None,
        description="Refuse (403) feedback whose item lacks the decision's "
        "feedback_token, so only whoever got the decision can teach the router. "
        "None: the gateway-level feedback.require_decision_token.",
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
    max_in_flight: int = Field(
        default=256, ge=1, le=100_000,
        description="Requests of this deployment being answered at once; more wait in "
        "the queue.",
    )
    max_queue: int = Field(
        default=512, ge=0, le=1_000_000,
        description="Requests waiting for a place in flight; more are refused at once "
        "with 429 and Retry-After (503 while draining).",
    )
    queue_timeout_ms: float = Field(
        default=1000.0, gt=0, le=600_000,
        description="Longest a request waits in the queue before it is refused with 429.",
    )
    input_schema: InputSchemaSpec | Path | None = Field(
        default=None,
        description="Domain of each column of the first input (ranges, category codes, "
        "NaN allowed); a value outside it is a 400 before any model sees it. Inline, or "
        "a JSON/YAML file relative to the config file.",
    )
    monitoring: MonitoringSpec | None = Field(
        default=None,
        description="Fairness and outcome monitoring per protected group, model and time "
        "window, with alerts and a promotion guardrail (gateway.monitoring); None: off.",
    )

    @model_validator(mode="after")
    def _guardrail_router(self) -> DeploymentSpec:
        if self.monitoring is not None and self.monitoring.guardrail is not None \
                and self.router.kind != "champion_challenger":
            raise ValueError("monitoring.guardrail holds promotions: it needs a "
                             "champion_challenger router")
        return self


class StoreSpec(_Spec):
    """Where decisions and router state live: one store, one transaction for a feedback
    and the arm counts it changes.

    ``kind: memory`` (tests; lost at exit, one process), ``kind: sqlite`` (the embedded
    default: one node, any number of gateway processes) or ``kind: postgres`` (any
    number of replicas on any nodes).

    Ambiguous blocks are refused rather than guessed: a block without ``kind``, ``dsn``
    with a kind other than postgres (and, in a gateway config, :data:`DSN_ENV` set with
    a store block of another kind). A config without a
    store block uses SQLite (``arbiter.sqlite``), or PostgreSQL when :data:`DSN_ENV` is
    set (:attr:`origin` says which, for the startup log).
    """

    kind: Literal["memory", "sqlite", "postgres"] = Field(
        default="sqlite",
        description="memory, sqlite or postgres; required in a store block (the default "
        "applies only to a config without one).",
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
    inputs: Literal["store", "hash", "drop"] = Field(
        default="store",
        description="What a decision record keeps of the request's inputs: store (the "
        "tensors), hash (per input the SHA-256 of its canonical JSON, with datatype and "
        "shape: proves what was decided on without keeping it), drop (nothing).",
    )
    retention_days: float | None = Field(
        default=None, gt=0,
        description="Decisions older than this many days are deleted with their "
        "feedback, shadow outputs and explanations (checked every hour). None: kept.",
    )

    _origin: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _kind_given(cls, raw):
        if isinstance(raw, dict) and "kind" not in raw:
            raise ValueError(
                "'kind' is missing: say which store to use (memory, sqlite or postgres); a "
                "store block without it would silently be SQLite")
        return raw

    @model_validator(mode="after")
    def _fields_of_kind(self) -> StoreSpec:
        if self.kind == "postgres" and not (self.dsn or os.environ.get(DSN_ENV)):
            raise ValueError(f"kind postgres needs 'dsn' or the environment variable {DSN_ENV}")
        if self.kind != "postgres" and self.dsn is not None:
            raise ValueError(f"'dsn' is for kind postgres, but kind is {self.kind}: remove "
                             "dsn, or set kind: postgres")
        return self

    @property
    def resolved_dsn(self) -> str | None:
        """The DSN from the config, else from ``ARBITER_STORE_DSN``."""
        return self.dsn or os.environ.get(DSN_ENV)

    @property
    def origin(self) -> str:
        """Where this store was chosen, for the startup log: "" (the config's store
        block, or a spec built in code), or why a config without a store block got it."""
        return self._origin


def default_store() -> StoreSpec:
    """The store of a gateway config without a ``store:`` block: PostgreSQL when
    :data:`DSN_ENV` is set, else SQLite in ``arbiter.sqlite`` next to the config."""
    if os.environ.get(DSN_ENV):
        spec = StoreSpec(kind="postgres")
        spec._origin = f"the config has no store block and {DSN_ENV} is set"
    else:
        spec = StoreSpec(kind="sqlite")
        spec._origin = "the config has no store block"
    return spec


class AuthSpec(_Spec):
    """Who may call the gateway: bearer tokens with scopes (``protos/server/auth.py``)."""

    tokens_file: Path = Field(
        description="YAML list of {name, sha256, scopes} (scopes: infer, feedback, "
        "decisions:read, admin); relative to the config file; mount it from a Secret.",
    )
    open_paths: list[str] | None = Field(
        default=None,
        description="REST route patterns and gRPC method names that need no token. "
        "None: the health endpoints and /metrics.",
    )
    protect_metrics: bool = Field(
        default=False, description="/metrics needs a token (any scope).",
    )


class GatewayFeedbackSpec(_Spec):
    """Feedback tokens: who got a decision can prove it when sending its feedback."""

    require_decision_token: bool = Field(
        default=False,
        description="Every deployment refuses (403) feedback without the decision's "
        "feedback_token (a deployment's feedback.require_decision_token overrides).",
    )
    secret: str | None = Field(
        default=None, min_length=16,
        description="HMAC key of feedback tokens; None: the environment variable "
        "ARBITER_FEEDBACK_SECRET (from a Secret). The same on every replica, kept "
        "across restarts, so tokens stay valid.",
    )

    @property
    def resolved_secret(self) -> str | None:
        """The secret from the config, else from ``ARBITER_FEEDBACK_SECRET``."""
        return self.secret or os.environ.get(FEEDBACK_SECRET_ENV) or None


class ConsoleSpec(_Spec):
    """The read-only web console at ``/console`` (``gateway/console``)."""

    enabled: bool = Field(
        default=False,
        description="Serve the console: deployments (traffic, posteriors, promotions, "
        "breakers), decisions (inputs, outputs, feedback, explanation) and fairness. With "
        "auth it needs a token with decisions:read (Authorization header or the login "
        "form's cookie).",
    )


class GatewayConfig(_Spec):
    """The whole gateway config file."""

    models: dict[Name, ModelRef] = Field(description="Model pods by key.")
    deployments: dict[Name, DeploymentSpec] = Field(description="Deployments by name.")
    store: StoreSpec = Field(
        default_factory=default_store,
        description="Decision and router-state store. None: SQLite in arbiter.sqlite, or "
        f"PostgreSQL when {DSN_ENV} is set.",
    )
    auth: AuthSpec | None = Field(
        default=None, description="Bearer tokens and scopes; None: no auth (a warning).",
    )
    feedback: GatewayFeedbackSpec = Field(
        default_factory=GatewayFeedbackSpec, description="Feedback tokens.",
    )
    console: ConsoleSpec = Field(
        default_factory=ConsoleSpec, description="The read-only web console.",
    )
    readiness: Literal["all", "any"] = Field(
        default="all",
        description="The gateway is ready when every deployment (all) or at least one "
        "(any) has a healthy model to route to.",
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
            if explain is not None:
                try:
                    explain.check_models(router_models)
                except ValueError as exc:
                    raise ValueError(f"deployments.{name}.explain.{exc}") from None
        if not self.deployments:
            raise ValueError("'deployments' is empty")
        if os.environ.get(DSN_ENV) and "store" in self.model_fields_set \
                and self.store.kind != "postgres":
            raise ValueError(
                f"store.kind is {self.store.kind}, but the environment variable {DSN_ENV} "
                f"is set: set store.kind: postgres to use that DSN, or unset {DSN_ENV}")
        if self.store.kind != "sqlite" and "path" in self.store.model_fields_set \
                and self.store.path != StoreSpec.model_fields["path"].default:
            # checked here, on the file's own block, and only for a path other than the
            # default: a config's JSON round trip (model_dump) carries the default path
            raise ValueError(
                f"store.path is for kind sqlite, but kind is {self.store.kind}: it would be "
                "ignored; remove path, or set kind: sqlite")
        if self.token_required() and not self.feedback.resolved_secret:
            raise ValueError(
                "feedback.require_decision_token needs feedback.secret or the environment "
                f"variable {FEEDBACK_SECRET_ENV}")
        return self

    def requires_decision_token(self, deployment: str) -> bool:
        """Whether feedback on ``deployment`` must carry the decision's token."""
        own = self.deployments[deployment].feedback.require_decision_token
        return self.feedback.require_decision_token if own is None else own

    def token_required(self) -> list[str]:
        """The deployments whose feedback must carry the decision's token."""
        return [name for name in self.deployments if self.requires_decision_token(name)]


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

    store = config.store  # only a SQLite file is a path (a dumped config stays valid)
    if store.kind == "sqlite":
        store = store.model_copy(update={"path": resolve(store.path)})
    models = {
        key: ref.model_copy(update={
            "ca_file": resolve(ref.ca_file), "client_cert": resolve(ref.client_cert),
            "client_key": resolve(ref.client_key),
        })
        for key, ref in config.models.items()
    }
    auth = config.auth
    if auth is not None:
        auth = auth.model_copy(update={"tokens_file": resolve(auth.tokens_file)})
    deployments = {}
    for name, dep in config.deployments.items():
        explain = dep.explain
        if explain is not None:
            explain = explain.resolved(base)
        deployments[name] = dep.model_copy(update={
            "explain": explain, "input_schema": _input_schema(dep.input_schema, base, name),
            "monitoring": _monitoring(dep.monitoring, base, name),
        })
    return config.model_copy(
        update={"store": store, "deployments": deployments, "models": models, "auth": auth}
    )


def _input_schema(schema, base: Path, deployment: str):
    """A schema file named by a deployment, read (relative to the config file).

    Raises:
        ConfigError: missing or invalid file.
    """
    if not isinstance(schema, Path):
        return schema
    try:
        return load_input_schema(schema if schema.is_absolute() else base / schema)
    except ValueError as exc:
        raise ConfigError(f"deployments.{deployment}.input_schema: {exc}") from None


def _monitoring(spec: MonitoringSpec | None, base: Path, deployment: str):
    """A monitoring block with its encoding file relative to the config file, checked
    against that file.

    Raises:
        ConfigError: unreadable encoding, or a feature or category name it lacks.
    """
    if spec is None:
        return None
    encoding = spec.encoding
    if encoding is not None and not encoding.is_absolute():
        spec = spec.model_copy(update={"encoding": base / encoding})
    try:
        resolved(spec)
    except ValueError as exc:
        raise ConfigError(f"deployments.{deployment}.monitoring: {exc}") from None
    return spec
