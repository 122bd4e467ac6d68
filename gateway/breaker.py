"""Circuit breakers: one per upstream model, so that routers choose among healthy ones.

A breaker counts consecutive failures of calls to its upstream: a connection failure
(503 / UNAVAILABLE), a deadline (504) or a model error (500 / INTERNAL); any answer the
pod gave on purpose (200, 4xx, 429) resets the count. ``failures`` in a row open it:
the upstream leaves every router's healthy set at once. After ``reset_s`` it is
half-open and one probe, the OIP model-ready call (``GET /v2/models/{m}/ready``, gRPC
``ModelReady``), decides: ready closes it, anything else opens it again for another
``reset_s``. Live requests never probe a half-open upstream.

Besides, every ``probe_interval_s`` a closed breaker's upstream gets the same probe and
a failed probe counts as a failure, so that a pod that died while no request reached
it still leaves the healthy set (and readiness reflects it) without traffic.

States: closed (0) -> open (2) -> half-open (1) -> closed or open. Exported as the
gauge ``arbiter_upstream_breaker_state{model}``.

Source: M. Nygard, "Release It!", 2nd ed., 2018, ch. 5 "Circuit Breaker"; the
half-open probe as in Envoy's outlier detection with active health checking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import IntEnum
from typing import TYPE_CHECKING

from protos.errors import ArbiterError

if TYPE_CHECKING:
    from gateway.upstream import UpstreamModel

__all__ = [
    "BreakerState", "CircuitBreaker", "UpstreamHealth", "build_health", "counts_as_failure",
]

log = logging.getLogger("arbiter.breaker")


class BreakerState(IntEnum):
    """A breaker's state; the value is the gauge's."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def counts_as_failure(exc: BaseException) -> bool:
    """Whether a call's exception says the upstream is unhealthy: unreachable (503),
    deadline (504), model error (500), or an unexpected exception; not the pod's 4xx
    (bad input, overloaded) or 501."""
    if isinstance(exc, ArbiterError):
        return exc.status in (500, 503, 504)
    return isinstance(exc, Exception)


class CircuitBreaker:
    """The breaker of one upstream (see the module docstring).

    Args:
        key: the upstream's model key (for logs).
        failures: consecutive failures that open it (>= 1).
        reset_s: seconds it stays open before a probe may close it (> 0).
        clock: monotonic seconds.
        on_change: called with the breaker after each change of state.
    """

    def __init__(
        self, key: str, failures: int = 3, reset_s: float = 1.0, *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        if failures < 1 or not reset_s > 0:
            raise ValueError(f"failures must be >= 1 and reset_s > 0, got {failures}, {reset_s}")
        self.key = key
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self.on_change = on_change or (lambda breaker: None)
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.last_error = ""

    @property
    def closed(self) -> bool:
        """Whether live requests may use the upstream."""
        return self.state is BreakerState.CLOSED

    def succeeded(self) -> None:
        """A call (or probe) succeeded: the count restarts; a half-open breaker closes."""
        self.consecutive = 0
        if self.state is BreakerState.HALF_OPEN:
            self._set(BreakerState.CLOSED)

    def failed(self, error: str = "") -> None:
        """A call (or probe) failed: ``failures`` in a row open a closed breaker; a
        failed probe re-opens a half-open one."""
        self.consecutive += 1
        self.last_error = error
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.consecutive >= self.failures
        ):
            self.opened_at = self.clock()
            self._set(BreakerState.OPEN)

    def probe_due(self) -> bool:
        """Whether it has been open ``reset_s`` and a probe may now try to close it."""
        return self.state is BreakerState.OPEN and self.clock() - self.opened_at >= self.reset_s

    def half_open(self) -> None:
        """Start a probe: open -> half-open."""
        if self.state is BreakerState.OPEN:
            self._set(BreakerState.HALF_OPEN)

    def _set(self, state: BreakerState) -> None:
        previous, self.state = self.state, state
        if state is BreakerState.OPEN and previous is BreakerState.CLOSED:
            log.warning("breaker of %r open after %d failure(s): %s", self.key,
                        self.consecutive, self.last_error or "probe failed")
        elif state is BreakerState.CLOSED:
            log.info("breaker of %r closed (was %s)", self.key, previous.name.lower())
        self.on_change(self)

    def as_dict(self) -> dict[str, object]:
        """``{"state", "consecutive_failures", "last_error"}`` for snapshots."""
        return {"state": self.state.name.lower(), "consecutive_failures": self.consecutive,
                "last_error": self.last_error or None}


Probe = Callable[[], Awaitable[bool]]
"""Returns whether the upstream's model is ready (raises or returns False if not)."""


class UpstreamHealth:
    """The breakers of every upstream, their probes, and the healthy set routers use.

    Args:
        breakers: model key -> its breaker (``on_change`` is replaced).
        probes: model key -> its model-ready probe.
        probe_interval_s: model key -> seconds between probes of a closed breaker
            (0: only half-open probes).
        probe_timeout_s: longest a probe may take (seconds); longer is a failure.
        gauge: called with (model key, state value) on every change, and once per key
            at start.
    """

    def __init__(
        self, breakers: Mapping[str, CircuitBreaker], probes: Mapping[str, Probe], *,
        probe_interval_s: Mapping[str, float] | None = None, probe_timeout_s: float = 1.0,
        gauge: Callable[[str, int], None] | None = None,
    ) -> None:
        self.breakers = dict(breakers)
        self.probes = dict(probes)
        self.probe_interval_s = dict(probe_interval_s or {})
        self.probe_timeout_s = probe_timeout_s
        self.gauge = gauge or (lambda key, value: None)
        for breaker in self.breakers.values():
            breaker.on_change = self._changed
        self._healthy = frozenset(self.breakers)
        self._next_probe: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        self._probing: dict[str, asyncio.Task] = {}

    def healthy(self) -> frozenset[str]:
        """Keys of the upstreams whose breaker is closed (a cached set)."""
        return self._healthy

    def succeeded(self, key: str) -> None:
        """A live call to ``key`` succeeded (or was answered on purpose)."""
        breaker = self.breakers.get(key)
        if breaker is not None and breaker.consecutive:
            breaker.succeeded()

    def failed(self, key: str, exc: BaseException) -> None:
        """A live call to ``key`` raised ``exc``; counted when it says the upstream is
        unhealthy (:func:`counts_as_failure`)."""
        breaker = self.breakers.get(key)
        if breaker is None:
            return
        if counts_as_failure(exc):
            message = exc.message if isinstance(exc, ArbiterError) else type(exc).__name__
            breaker.failed(message)
        elif breaker.consecutive:
            breaker.succeeded()

    def _changed(self, breaker: CircuitBreaker) -> None:
        self._healthy = frozenset(k for k, b in self.breakers.items() if b.closed)
        self.gauge(breaker.key, int(breaker.state))

    def start(self) -> None:
        """Export every breaker's state and start the probe loop (in the running loop)."""
        for key, breaker in self.breakers.items():
            self.gauge(key, int(breaker.state))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="breakers")

    async def close(self) -> None:
        """Stop probing (probes in flight are cancelled)."""
        tasks = [t for t in (self._task, *self._probing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def _tick_s(self) -> float:
        periods = [b.reset_s for b in self.breakers.values()]
        periods += [s for s in self.probe_interval_s.values() if s > 0]
        return max(0.02, min(periods, default=1.0) / 4)

    async def _loop(self) -> None:
        tick = self._tick_s()
        while True:
            await asyncio.sleep(tick)
            try:
                self.check()
            except Exception:  # never let the loop die
                log.exception("breaker probe loop failed")

    def check(self) -> None:
        """Start the probes that are due: half-open for breakers open ``reset_s``,
        active for closed breakers every ``probe_interval_s``."""
        now = time.monotonic()
        for key, breaker in self.breakers.items():
            if key in self._probing:
                continue
            if breaker.probe_due():
                breaker.half_open()
            elif not breaker.closed:
                continue
            else:
                interval = self.probe_interval_s.get(key, 0.0)
                if interval <= 0 or now < self._next_probe.get(key, 0.0):
                    continue
                self._next_probe[key] = now + interval
            task = asyncio.get_running_loop().create_task(self._probe(key, breaker))
            self._probing[key] = task
            task.add_done_callback(lambda _, key=key: self._probing.pop(key, None))

    async def _probe(self, key: str, breaker: CircuitBreaker) -> None:
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                ready = await self.probes[key]()
            error = "" if ready else "model not ready"
        except TimeoutError:
            ready, error = False, f"probe took over {self.probe_timeout_s} s"
        except Exception as exc:
            ready = False
            error = exc.message if isinstance(exc, ArbiterError) else repr(exc)
        if ready:
            breaker.succeeded()
        else:
            breaker.failed(f"probe: {error}")

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every breaker's :meth:`CircuitBreaker.as_dict`."""
        return {key: b.as_dict() for key, b in self.breakers.items()}


def build_health(upstreams: Mapping[str, UpstreamModel], gauge=None) -> UpstreamHealth:
    """The health of ``upstreams`` (model key -> ``UpstreamModel``): a breaker each from
    its ``ref.breaker`` settings, probed by its ``model_ready``.

    Args:
        upstreams: model key -> upstream client.
        gauge: a Prometheus gauge with one label, the model key (or None).
    """
    breakers, probes, intervals = {}, {}, {}
    for key, upstream in upstreams.items():
        spec = upstream.ref.breaker
        breakers[key] = CircuitBreaker(key, spec.failures, spec.reset_s)
        probes[key] = upstream.model_ready
        intervals[key] = spec.probe_interval_s
    setter = None if gauge is None else (lambda key, value: gauge.labels(key).set(value))
    return UpstreamHealth(breakers, probes, probe_interval_s=intervals, gauge=setter)
