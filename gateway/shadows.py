"""Shadows: models that see a request in the background while another answers.

Each shadow call runs as a tracked task, at most ``max_shadow_in_flight`` per
deployment (what is shed is counted and recorded as the shadow's error); each call's
outcome feeds the model's circuit breaker, like a routed call's. A shadow's
output, latency or failure is written to the decision through the store once the
routed model has answered (if it failed, there is no decision and nothing is written);
it never touches the response. Agreement with the routed model is kept per shadow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.breaker import UpstreamHealth
from gateway.decisions import Decision, DecisionStore, tensor_doc
from gateway.metrics import GatewayMetrics
from gateway.upstream import UpstreamModel
from protos.errors import ArbiterError
from protos.protocol import InferenceRequest, InferenceResponse

__all__ = ["ShadowStats", "Shadows"]

log = logging.getLogger("arbiter.shadows")


class ShadowStats:
    """Running agreement between one shadow and the routed model."""

    __slots__ = ("compared", "agreed", "abs_diff_sum", "abs_diff_n")

    def __init__(self) -> None:
        self.compared = 0
        self.agreed = 0
        self.abs_diff_sum = 0.0
        self.abs_diff_n = 0

    def as_dict(self) -> dict[str, float | int | None]:
        """Counts, agreement rate and mean absolute difference."""
        return {
            "compared": self.compared,
            "agreement": self.agreed / self.compared if self.compared else None,
            "mean_abs_difference": self.abs_diff_sum / self.abs_diff_n if self.abs_diff_n else None,
        }


class Shadows:
    """The shadow calls of one deployment.

    Attributes:
        health: the models' circuit breakers, fed by each call (None: none).
        on_output: called with the decision, model and outputs of each shadow that
            answered (the fairness monitor), or None.

    Args:
        name: deployment name.
        upstreams: model key -> client.
        store: where outputs are recorded.
        metrics: gateway metrics.
        max_in_flight: shadow calls in flight at once; more are shed.
        label_output: the output compared for agreement when it is BYTES.
    """

    def __init__(
        self, name: str, upstreams: dict[str, UpstreamModel], store: DecisionStore,
        metrics: GatewayMetrics, max_in_flight: int, label_output: str,
    ) -> None:
        self.name = name
        self.upstreams = upstreams
        self.store = store
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.label_output = label_output
        self.stats = {key: ShadowStats() for key in upstreams}
        self._tasks: set[asyncio.Task] = set()
        self._by_decision: dict[str, list[asyncio.Task]] = {}
        self.health: UpstreamHealth | None = None
        self.on_output: Callable[[Decision, str, dict[str, Any]], None] | None = None
        self.wait_s = max((u.ref.timeout_s for u in upstreams.values()), default=5.0) + 1.0

    def start(
        self, keys: tuple[str, ...], request: InferenceRequest, decision_id: str,
        made: asyncio.Future[Decision | None],
    ) -> None:
        """Call each shadow in the background; ``made`` resolves to the decision once
        the routed model has answered, or to None if it failed."""
        started = []
        for key in keys:
            if len(self._tasks) >= self.max_in_flight:
                self.metrics.shadow.labels(self.name, key, "shed").inc()
                coro = self._record_error(key, made, "shed: too many shadow calls in flight")
            else:
                coro = self._call(key, request, made)
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        self._by_decision[decision_id] = started
        waiter = asyncio.ensure_future(asyncio.wait(started))
        waiter.add_done_callback(lambda _: self._by_decision.pop(decision_id, None))

    async def settled(self, decision_id: str) -> None:
        """Wait until this process's shadows of the decision have answered, failed or
        timed out."""
        tasks = self._by_decision.get(decision_id)
        if tasks:
            await asyncio.wait(tasks, timeout=self.wait_s)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (up to ``timeout_s``) for shadow calls in flight."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def _call(self, key: str, request: InferenceRequest, made: asyncio.Future) -> None:
        start = time.perf_counter()
        try:
            response = await self.upstreams[key].infer(request)
        except ArbiterError as exc:
            self._count(key, exc.grpc_code, start, "error")
            if self.health is not None:
                self.health.failed(key, exc)
            await self._record_error(key, made, exc.message)
            return
        except Exception as exc:  # a shadow never raises into anything
            log.exception("shadow %s of %s failed", key, self.name)
            self.metrics.shadow.labels(self.name, key, "error").inc()
            await self._record_error(key, made, f"internal error: {type(exc).__name__}")
            return
        latency = self._count(key, "OK", start, "ok")
        if self.health is not None:
            self.health.succeeded(key)
        decision = await made
        if decision is None:  # the routed model failed: no decision to add to
            return
        outputs = {t.name: tensor_doc(t) for t in response.outputs}
        self.store.add_shadow_output(decision.id, key, outputs, latency_ms=latency * 1000)
        if self.on_output is not None:
            self.on_output(decision, key, outputs)
        self._compare(decision, key, response)

    async def _record_error(self, key: str, made: asyncio.Future, message: str) -> None:
        decision = await made
        if decision is not None:
            self.store.add_shadow_output(decision.id, key, None, error=message)

    def _count(self, key: str, code: str, start: float, outcome: str) -> float:
        elapsed = time.perf_counter() - start
        self.metrics.upstream_call(self.name, key, code, elapsed)
        self.metrics.shadow.labels(self.name, key, outcome).inc()
        return elapsed

    def _compare(self, decision: Decision, key: str, response: InferenceResponse) -> None:
        primary = decision.outputs.get(decision.routed, {})
        stats = self.stats[key]
        for tensor in response.outputs:
            base = primary.get(tensor.name)
            if base is None or "data" not in base or base["shape"] != list(tensor.shape):
                continue
            mine = np.asarray(tensor.data, dtype=object if tensor.datatype == "BYTES" else None)
            theirs = np.asarray(base["data"]).reshape(tensor.shape)
            if tensor.datatype.startswith("FP"):
                diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
                stats.abs_diff_sum += float(np.nanmean(diff)) if diff.size else 0.0
                stats.abs_diff_n += 1
                self.metrics.shadow_abs_diff.labels(self.name, key).set(
                    stats.abs_diff_sum / stats.abs_diff_n
                )
            elif tensor.name == self.label_output or tensor.datatype != "BYTES":
                stats.compared += 1
                stats.agreed += int(np.array_equal(mine.ravel().tolist(), theirs.ravel().tolist()))
                self.metrics.shadow_agreement.labels(self.name, key).set(
                    stats.agreed / stats.compared
                )
