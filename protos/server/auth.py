"""Bearer-token authentication and scope checks, once for both transports.

A server started with an :class:`AuthPolicy` accepts a request only when it carries a
token the policy knows (REST ``Authorization: Bearer <token>``, gRPC metadata
``authorization: Bearer <token>``) whose scopes include the one its route needs:

==================  =================================================================
scope               grants
==================  =================================================================
``infer``           inference, model and server metadata, readiness of a model,
                    configuration and statistics, the repository index (OIP, V1,
                    Triton extensions, Seldon predictions)
``feedback``        feedback on decisions (OIP extension, gRPC, Seldon)
``decisions:read``  decision records and deployment state (without upstream URLs)
``admin``           everything: promotion, repository load/unload, upstream URLs
==================  =================================================================

No token or an unknown one: 401 / UNAUTHENTICATED; a known token without the scope:
403 / PERMISSION_DENIED; both with ``{"error": ...}`` over REST. Paths in
``open_paths`` (by default the health endpoints and ``/metrics``) need no token; any
other route missing from the scope tables needs ``admin`` (fail closed).

The token file holds no token, only its SHA-256 (so it can live in a Kubernetes
Secret and in a repository without granting anything)::

    - name: credit-frontend
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      scopes: [infer]
    - name: ops
      sha256: ...
      scopes: [admin]

A presented token is hashed and compared with every entry by
:func:`hmac.compare_digest` (constant time; no early exit on a match).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from aiohttp import web

from protos.errors import ArbiterError, PermissionDeniedError, UnauthenticatedError

__all__ = [
    "ADMIN", "ANY", "DECISIONS_READ", "FEEDBACK", "INFER", "SCOPES",
    "AuthConfigError", "AuthInterceptor", "AuthPolicy", "Principal", "TokenEntry",
    "ThreadedAuthInterceptor", "grpc_refusal",
    "DEFAULT_OPEN_PATHS", "GRPC_SCOPES", "REST_SCOPES", "PRINCIPAL_KEY",
    "auth_middleware", "hash_token", "is_admin", "load_tokens",
]

log = logging.getLogger("arbiter.auth")

INFER = "infer"
FEEDBACK = "feedback"
DECISIONS_READ = "decisions:read"
ADMIN = "admin"
SCOPES = (INFER, FEEDBACK, DECISIONS_READ, ADMIN)
ANY = ""
"""Pseudo-scope: any known token (health and metrics once they are closed)."""


DEFAULT_OPEN_PATHS = frozenset({
    "/v2/health/live", "/v2/health/ready", "/metrics",
    "/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady",
})
"""Routes (REST patterns, gRPC method names) that need no token unless configured."""

_MODEL = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")

REST_SCOPES: dict[tuple[str, str], str] = {
    ("GET", "/v2/health/live"): ANY,
    ("GET", "/v2/health/ready"): ANY,
    ("GET", "/metrics"): ANY,
    ("GET", "/v2"): INFER,
    ("POST", "/v2/repository/index"): INFER,
    ("POST", "/v2/repository/models/{model}/load"): ADMIN,
    ("POST", "/v2/repository/models/{model}/unload"): ADMIN,
    ("GET", "/v2/models/stats"): INFER,
    **{("GET", prefix + suffix): INFER
       for prefix in _MODEL for suffix in ("", "/ready", "/config", "/stats")},
    **{("POST", prefix + "/infer"): INFER for prefix in _MODEL},
    ("GET", "/v1/models"): INFER,
    ("GET", "/v1/models/{model}"): INFER,
    ("POST", "/v1/models/{model}:predict"): INFER,
    ("POST", "/v1/models/{model}:explain"): INFER,
}
"""Scope of every REST route of the server stack, by (method, route pattern); the
gateway adds its own (:class:`AuthPolicy` ``scopes``)."""

_OIP = "/inference.GRPCInferenceService/"
GRPC_SCOPES: dict[str, str] = {
    _OIP + "ServerLive": ANY,
    _OIP + "ServerReady": ANY,
    _OIP + "ModelReady": INFER,
    _OIP + "ServerMetadata": INFER,
    _OIP + "ModelMetadata": INFER,
    _OIP + "ModelInfer": INFER,
    _OIP + "ModelConfig": INFER,
    _OIP + "ModelStatistics": INFER,
    _OIP + "RepositoryIndex": INFER,
    _OIP + "RepositoryModelLoad": ADMIN,
    _OIP + "RepositoryModelUnload": ADMIN,
}
"""Scope of every RPC of ``inference.GRPCInferenceService``."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AuthConfigError(ValueError):
    """The token file is missing, not YAML, or has an invalid entry."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One known token: its SHA-256 (hex) and what it may do."""

    name: str
    sha256: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a token."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether this caller holds ``scope`` (``admin`` holds every scope)."""
        return scope == ANY or scope in self.scopes or ADMIN in self.scopes


PRINCIPAL_KEY: web.RequestKey[Principal | None] = web.RequestKey("principal", object)
"""Where the REST middleware leaves the caller's :class:`Principal` on the request."""


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as the token file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: str | Path) -> list[TokenEntry]:
    """Read a token file (a YAML list of ``{name, sha256, scopes}``).

    Raises:
        AuthConfigError: missing file, not YAML, or an entry without a name, with a
            sha256 that is not 64 lowercase hex digits, or with an unknown scope.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise AuthConfigError(f"auth tokens file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise AuthConfigError(f"auth tokens file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise AuthConfigError(f"auth tokens file {path} must be a non-empty list of "
                              "{name, sha256, scopes}")
    return [_entry(item, i, path) for i, item in enumerate(raw)]


def _entry(item: Any, index: int, path: Path) -> TokenEntry:
    where = f"auth tokens file {path}, entry {index}"
    if not isinstance(item, dict) or set(item) - {"name", "sha256", "scopes"}:
        raise AuthConfigError(f"{where}: must be a mapping of name, sha256, scopes")
    name, digest, scopes = item.get("name"), item.get("sha256"), item.get("scopes")
    if not isinstance(name, str) or not name:
        raise AuthConfigError(f"{where}: 'name' must be a non-empty string")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise AuthConfigError(f"{where} ({name}): 'sha256' must be the token's SHA-256 as "
                              "64 lowercase hex digits (never the token itself)")
    if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
        raise AuthConfigError(f"{where} ({name}): 'scopes' must be a non-empty list of "
                              f"{', '.join(SCOPES)}")
    return TokenEntry(name, digest, frozenset(scopes))


@dataclass(slots=True)
class AuthPolicy:
    """Known tokens, open routes and the scope of every route.

    Args:
        tokens: the known tokens.
        open_paths: REST route patterns and gRPC method names that need no token.
        rest_scopes: (method, pattern) -> scope, beyond :data:`REST_SCOPES`.
        grpc_scopes: full method name -> scope, beyond :data:`GRPC_SCOPES`.
    """

    tokens: list[TokenEntry]
    open_paths: frozenset[str] = DEFAULT_OPEN_PATHS
    rest_scopes: dict[tuple[str, str], str] = field(default_factory=dict)
    grpc_scopes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rest_scopes = {**REST_SCOPES, **self.rest_scopes}
        self.grpc_scopes = {**GRPC_SCOPES, **self.grpc_scopes}

    @classmethod
    def from_file(cls, path: str | Path, *, open_paths: Iterable[str] | None = None,
                  protect_metrics: bool = False) -> AuthPolicy:
        """A policy from a token file; ``protect_metrics`` closes ``/metrics``.

        Raises:
            AuthConfigError: see :func:`load_tokens`.
        """
        opened = frozenset(DEFAULT_OPEN_PATHS if open_paths is None else open_paths)
        if protect_metrics:
            opened -= {"/metrics"}
        return cls(load_tokens(path), opened)

    def add_scopes(self, rest: Mapping[tuple[str, str], str] | None = None,
                   grpc_methods: Mapping[str, str] | None = None) -> None:
        """Declare the scopes of routes and RPCs a product adds (the gateway's)."""
        self.rest_scopes.update(rest or {})
        self.grpc_scopes.update(grpc_methods or {})

    def principal(self, authorization: str | None) -> Principal:
        """The caller of an ``Authorization`` value.

        Raises:
            UnauthenticatedError: no bearer token, or an unknown one.
        """
        if not authorization:
            raise UnauthenticatedError("authentication required: send Authorization: "
                                       "Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("authentication required: send Authorization: "
                                       "Bearer <token>")
        digest = hash_token(token.strip())
        found: TokenEntry | None = None
        for entry in self.tokens:  # every entry compared: no early exit
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        if found is None:
            raise UnauthenticatedError("unknown token")
        return Principal(found.name, found.scopes)

    def check(self, route: str, scope: str | None, authorization: str | None
              ) -> Principal | None:
        """The caller when ``route`` (pattern or method name) needs ``scope``; None when
        the route is open. ``scope`` None (a route missing from the tables) needs
        ``admin``.

        Raises:
            UnauthenticatedError: no or unknown token.
            PermissionDeniedError: the token lacks the scope.
        """
        if route in self.open_paths:
            return None
        caller = self.principal(authorization)
        needed = ADMIN if scope is None else scope
        if not caller.allows(needed):
            raise PermissionDeniedError(
                f"token {caller.name!r} lacks the scope {needed!r} this route needs")
        return caller


# -- REST ------------------------------------------------------------------------------

def auth_middleware(policy: AuthPolicy):
    """An aiohttp middleware enforcing ``policy``; the caller is left at
    ``request[PRINCIPAL_KEY]`` (None on open routes). A path no route matches needs any
    known token, so that probing reveals nothing to a caller without one."""

    @web.middleware
    async def authenticate(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        resource = request.match_info.route.resource
        authorization = request.headers.get("Authorization")
        if resource is None:  # no route: 404 / 405 once authenticated
            request[PRINCIPAL_KEY] = policy.check("", ANY, authorization)
        else:
            pattern = resource.canonical
            method = "GET" if request.method == "HEAD" else request.method
            scope = policy.rest_scopes.get((method, pattern))
            request[PRINCIPAL_KEY] = policy.check(pattern, scope, authorization)
        return await handler(request)

    return authenticate


def is_admin(request: web.Request) -> bool:
    """Whether the caller of ``request`` may see everything: auth is off, or its token
    holds ``admin``."""
    if PRINCIPAL_KEY not in request:
        return True  # no auth middleware: every caller is trusted, as without auth
    caller = request[PRINCIPAL_KEY]
    return caller is not None and ADMIN in caller.scopes


# -- gRPC ------------------------------------------------------------------------------

def grpc_refusal(policy: AuthPolicy, handler_call_details: grpc.HandlerCallDetails
                 ) -> tuple[grpc.StatusCode, str] | None:
    """The status and message refusing an RPC under ``policy`` (UNAUTHENTICATED or
    PERMISSION_DENIED), or ``None`` when the caller may make it. The one check both
    interceptors make, from the ``authorization`` metadata."""
    method = handler_call_details.method
    authorization = None
    for key, value in handler_call_details.invocation_metadata or ():
        if key == "authorization":
            authorization = value if isinstance(value, str) else value.decode()
    try:
        policy.check(method, policy.grpc_scopes.get(method), authorization)
    except ArbiterError as exc:
        return grpc.StatusCode[exc.grpc_code], exc.message
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """A ``grpc.aio`` interceptor enforcing ``policy`` on every RPC. An allowed call
    gets the service's own handler (nothing is rebuilt per call); a refused one gets a
    handler that aborts with UNAUTHENTICATED or PERMISSION_DENIED."""

    def __init__(self, policy: AuthPolicy) -> None:
        self.policy = policy

    async def intercept_service(self, continuation, handler_call_details):
        refusal = grpc_refusal(self.policy, handler_call_details)
        if refusal is not None:
            code, message = refusal

            async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
                await context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(refuse)
        return await continuation(handler_call_details)


class ThreadedAuthInterceptor(grpc.ServerInterceptor):
    """:class:`AuthInterceptor` for grpc's thread-pool server: the same check, before
    any handler."""

    def __init__(self, policy: AuthPolicy) -> None:
        self.policy = policy

    def intercept_service(self, continuation, handler_call_details):
        refusal = grpc_refusal(self.policy, handler_call_details)
        if refusal is not None:
            code, message = refusal

            def refuse(request: Any, context: grpc.ServicerContext) -> None:
                context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(refuse)
        return continuation(handler_call_details)
