"""Circuit breakers: consecutive failures open one, only failures that say the upstream
is unhealthy count, a model-ready probe closes a half-open one, and the health keeps the
healthy set and the gauge in step (fake clock, fake probes)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.breaker import BreakerState, CircuitBreaker, UpstreamHealth, counts_as_failure
from protos.errors import (
    DeadlineError,
    InferenceError,
    InvalidRequestError,
    OverloadedError,
    UnsupportedError,
    UpstreamUnavailableError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_open_it_and_a_success_restarts_the_count() -> None:
    clock, changes = Clock(), []
    breaker = CircuitBreaker("lr", failures=3, reset_s=1.0, clock=clock,
                             on_change=lambda b: changes.append(b.state))
    breaker.failed("a")
    breaker.failed("b")
    breaker.succeeded()
    breaker.failed("c")
    breaker.failed("d")
    assert breaker.closed and changes == []
    breaker.failed("e")
    assert breaker.state is BreakerState.OPEN and changes == [BreakerState.OPEN]
    assert breaker.as_dict() == {"state": "open", "consecutive_failures": 3, "last_error": "e"}


def test_half_open_after_reset_s_then_a_probe_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker("lr", failures=1, reset_s=2.0, clock=clock)
    breaker.failed("down")
    clock.now += 1.99
    assert not breaker.probe_due()
    clock.now += 0.01
    assert breaker.probe_due()
    breaker.half_open()
    assert breaker.state is BreakerState.HALF_OPEN and not breaker.closed
    breaker.failed("still down")  # a failed probe re-opens it for another reset_s
    assert breaker.state is BreakerState.OPEN and not breaker.probe_due()
    clock.now += 2.0
    breaker.half_open()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive == 0


@pytest.mark.parametrize(("error", "counts"), [
    (UpstreamUnavailableError("x"), True),
    (DeadlineError("x"), True),
    (InferenceError("x"), True),
    (RuntimeError("x"), True),
    (InvalidRequestError("x"), False),
    (OverloadedError("x"), False),
    (UnsupportedError("x"), False),
])
def test_what_counts_as_a_failure(error: Exception, counts: bool) -> None:
    assert counts_as_failure(error) is counts


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failures must be >= 1"):
        CircuitBreaker("lr", failures=0)


async def test_health_opens_probes_and_closes_with_the_gauge() -> None:
    ready = {"lr": True, "gbm": False}
    gauge: dict[str, int] = {}

    async def probe(key: str) -> bool:
        if key == "gbm" and not ready["gbm"]:
            raise UpstreamUnavailableError("model 'gbm' unreachable")
        return ready[key]

    breakers = {k: CircuitBreaker(k, failures=2, reset_s=0.05) for k in ("lr", "gbm")}
    health = UpstreamHealth(breakers, {k: (lambda k=k: probe(k)) for k in breakers},
                            gauge=lambda key, value: gauge.__setitem__(key, value))
    health.start()
    try:
        assert health.healthy() == {"lr", "gbm"} and gauge == {"lr": 0, "gbm": 0}
        health.failed("gbm", UpstreamUnavailableError("x"))
        health.failed("gbm", InvalidRequestError("bad input"))  # the pod answered: resets
        health.failed("gbm", UpstreamUnavailableError("x"))
        assert health.healthy() == {"lr", "gbm"}
        health.failed("gbm", DeadlineError("late"))
        assert health.healthy() == {"lr"} and gauge["gbm"] == 2
        await asyncio.sleep(0.2)  # half-open probes fail while the pod is down
        assert health.healthy() == {"lr"} and gauge["gbm"] == 2
        ready["gbm"] = True
        for _ in range(50):
            await asyncio.sleep(0.02)
            if "gbm" in health.healthy():
                break
        assert health.healthy() == {"lr", "gbm"} and gauge["gbm"] == 0
        assert health.snapshot()["gbm"]["state"] == "closed"
    finally:
        await health.close()


async def test_active_probes_notice_a_dead_upstream_without_traffic() -> None:
    alive = {"lr": True}

    async def probe() -> bool:
        if not alive["lr"]:
            raise UpstreamUnavailableError("model 'lr' unreachable")
        return True

    health = UpstreamHealth({"lr": CircuitBreaker("lr", failures=2, reset_s=0.05)},
                            {"lr": probe}, probe_interval_s={"lr": 0.02})
    health.start()
    try:
        await asyncio.sleep(0.1)
        assert health.healthy() == {"lr"}
        alive["lr"] = False
        for _ in range(50):
            await asyncio.sleep(0.02)
            if not health.healthy():
                break
        assert health.healthy() == frozenset()
    finally:
        await health.close()
    assert health._task is None and not health._probing
