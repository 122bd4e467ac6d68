"""Routing around failure: route among the healthy models, call the routed one, retry a
connection failure once on another healthy model.

The router sees only models whose circuit breaker is closed (``gateway.breaker``);
every call's outcome feeds its model's breaker. A call that fails to connect
(:class:`UpstreamUnavailableError`: the model never ran) is routed again among the
healthy models without the one that failed, and the new choice answers, recorded as a
fallback ``{from, reason}``. Any other failure is the decision's: it is raised as
:class:`CallFailed`, naming the model that was asked.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from gateway.breaker import UpstreamHealth
from gateway.metrics import GatewayMetrics
from gateway.upstream import UpstreamModel
from protos.errors import ArbiterError, UpstreamUnavailableError
from protos.protocol import InferenceRequest, InferenceResponse
from routers.base import NoHealthyArmError, RouteDecision, Router

__all__ = ["CallFailed", "Dispatcher"]


class CallFailed(Exception):
    """The routed model (after the retry) failed.

    Attributes:
        route: the route that was finally called (with its fallback, if retried).
        error: what the call raised.
        latency_s: seconds the failed call took.
    """

    def __init__(self, route: RouteDecision, error: ArbiterError, latency_s: float) -> None:
        super().__init__(error.message)
        self.route = route
        self.error = error
        self.latency_s = latency_s


class Dispatcher:
    """Routing and upstream calls of one deployment.

    Args:
        name: deployment name.
        router: its routing policy.
        upstreams: model key -> client.
        health: the breakers; None: every model is always healthy.
        metrics: gateway metrics.
    """

    def __init__(self, name: str, router: Router, upstreams: dict[str, UpstreamModel],
                 health: UpstreamHealth | None, metrics: GatewayMetrics) -> None:
        self.name = name
        self.router = router
        self.upstreams = upstreams
        self.health = health
        self.metrics = metrics

    def healthy(self) -> frozenset[str] | None:
        """The models whose breaker is closed (None: no breakers)."""
        return None if self.health is None else self.health.healthy()

    def ready(self) -> bool:
        """Whether some model that may answer is healthy."""
        healthy = self.healthy()
        return healthy is None or any(m in healthy for m in self.router.routable)

    def route(self, request: InferenceRequest, exclude: str | None = None) -> RouteDecision:
        """The router's choice among the healthy models (without ``exclude``).

        Raises:
            UpstreamUnavailableError: no model that may answer is healthy (503).
        """
        healthy = self.healthy()
        if exclude is not None:
            healthy = (frozenset(self.upstreams) if healthy is None else healthy) - {exclude}
        try:
            route = self.router.route(request, healthy)
        except NoHealthyArmError as exc:
            down = ", ".join(exc.models)
            raise UpstreamUnavailableError(
                f"deployment {self.name!r} has no healthy model to route to ({down}: "
                "circuit open or unreachable)") from None
        if route.fallback is not None and exclude is None:  # a retry is counted by call()
            self.metrics.fallbacks.labels(self.name, route.fallback[0], "unhealthy").inc()
        return route

    async def call(self, route: RouteDecision, request: InferenceRequest,
                   upstream_request: InferenceRequest
                   ) -> tuple[RouteDecision, InferenceResponse, float]:
        """Call the routed model; retry a connection failure once on another healthy
        model.

        Returns:
            The route that answered, its response, and the call's latency (seconds).

        Raises:
            CallFailed: the (last) call raised an :class:`ArbiterError`.
        """
        try:
            return (route, *await self._call_model(route, upstream_request))
        except CallFailed as failed:
            if not isinstance(failed.error, UpstreamUnavailableError):
                raise
            first = failed
        try:
            retry = self.route(request, exclude=route.routed)
        except UpstreamUnavailableError:
            raise first from None
        reason = f"call to {route.routed!r} failed: {first.error.message}"
        retry = replace(retry, fallback=(route.routed, reason))
        self.metrics.fallbacks.labels(self.name, route.routed, "unreachable").inc()
        return (retry, *await self._call_model(retry, upstream_request))

    async def _call_model(self, route: RouteDecision, request: InferenceRequest
                          ) -> tuple[InferenceResponse, float]:
        key = route.routed
        start = time.perf_counter()
        try:
            response = await self.upstreams[key].infer(request)
        except asyncio.CancelledError:
            self._count(key, "CANCELLED", start)
            raise
        except Exception as exc:
            elapsed = self._count(key, getattr(exc, "grpc_code", "INTERNAL"), start)
            if self.health is not None:
                self.health.failed(key, exc)
            if isinstance(exc, ArbiterError):
                raise CallFailed(route, exc, elapsed) from None
            raise
        if self.health is not None:
            self.health.succeeded(key)
        return response, self._count(key, "OK", start)

    def _count(self, key: str, code: str, start: float) -> float:
        elapsed = time.perf_counter() - start
        self.metrics.upstream_call(self.name, key, code, elapsed)
        return elapsed
