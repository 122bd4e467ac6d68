"""The decision store in process, without a network: what ``create()`` costs the request
path, how many decisions the writer commits per second, and how many feedbacks per
second are acknowledged (committed) with 8 in flight.

Used by :mod:`benchmarks.store_cost` (part a). Three measurements per store
configuration (``kind`` x ``decision_writes``), each on a fresh database:

* **create latency**: decisions offered at a fixed rate (open loop, ``rate`` per
  second, one task each); the time of ``await store.create(decision)`` alone, as the
  gateway's request path awaits it (behind: the write is queued; before_answer: it
  waits for the commit of its batch);
* **commit throughput**: 64 producers create decisions as fast as they can for the
  window; committed decisions per second, counted from the batches the writer commits
  (``StoreMetrics.batch_size``), so a queue that grows without being written does not
  count;
* **feedback throughput**: 8 tasks record feedback (reward 1, with the arm counts of
  a one-arm router) on distinct, already-committed decisions; acknowledged (committed)
  feedbacks per second and the latency of ``record_feedback``.

The decisions look like the gateway's for the credit model: one FP32 ``[1, 20]``
input, the ``label`` and ``probabilities`` outputs, UUID4 ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.config import StoreSpec
from gateway.decisions import Decision, StoreMetrics, build_store
from routers.state import Learning

__all__ = ["MicroOptions", "ROUTER", "measure_store", "template_decision"]

ROUTER = "bench"
"""Router key (deployment name) of the decisions and feedback."""


@dataclass(frozen=True, slots=True)
class MicroOptions:
    """How long and how hard.

    Attributes:
        seconds: length of each measured window.
        rate: decisions offered per second in the latency window.
        producers: concurrent producers in the throughput window.
        feedback_concurrency: feedbacks in flight.
        feedback_pool: decisions created (and committed) beforehand for feedback; the
            feedback window ends early if they run out.
    """

    seconds: float = 3.0
    rate: float = 2000.0
    producers: int = 64
    feedback_concurrency: int = 8
    feedback_pool: int = 20_000


def template_decision(row: np.ndarray) -> Decision:
    """A decision as the gateway records one for the credit model and ``row``."""
    return Decision(
        id="", time=0.0, deployment=ROUTER, router="weighted", routed="gbm",
        inputs={"input": {"datatype": "FP32", "shape": [1, 20],
                          "data": [float(v) for v in row]}},
        outputs={"gbm": {"label": {"datatype": "INT64", "shape": [1], "data": [1]},
                         "probabilities": {"datatype": "FP32", "shape": [1, 2],
                                           "data": [0.1234, 0.8766]}}},
        latency_ms={"gbm": 1.5},
    )


def _fresh(template: Decision) -> Decision:
    return dataclasses.replace(template, id=uuid.uuid4().hex, time=time.time())


def _percentiles_us(ns: list[int]) -> tuple[float, float]:
    if not ns:
        return float("nan"), float("nan")
    arr = np.asarray(ns, dtype=np.float64) / 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


class _Commits:
    """Committed decisions counted from the writer's batches (called on its thread)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.count += n


async def _open(spec: StoreSpec, commits: _Commits):
    store = build_store(spec, StoreMetrics(batch_size=commits))
    await store.open([ROUTER])
    return store


async def _create_latency(store, template: Decision, wait: bool,
                          opts: MicroOptions) -> dict[str, float]:
    """Open loop at ``opts.rate``: one task per decision, timed around ``create``."""
    lat: list[int] = []

    async def one() -> None:
        decision = _fresh(template)
        t0 = time.perf_counter_ns()
        await store.create(decision, wait=wait)
        lat.append(time.perf_counter_ns() - t0)

    tasks: set[asyncio.Task] = set()
    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) < start + opts.seconds:
        due = int((now - start) * opts.rate) + 1
        for _ in range(due - sent):
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent = max(sent, due)
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    p50, p99 = _percentiles_us(lat)
    return {"offered_per_s": opts.rate, "creates": len(lat), "p50_us": p50, "p99_us": p99}


async def _commit_throughput(store, commits: _Commits, template: Decision, wait: bool,
                             opts: MicroOptions) -> dict[str, float]:
    """``opts.producers`` closed-loop producers; committed decisions per second."""
    stop_at = time.perf_counter() + opts.seconds

    async def producer() -> None:
        while time.perf_counter() < stop_at:
            await store.create(_fresh(template), wait=wait)
            await asyncio.sleep(0)  # behind: create may not suspend; let the others run

    before = commits.count
    start = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(opts.producers)))
    elapsed = time.perf_counter() - start
    committed = commits.count - before
    return {"committed": committed, "committed_per_s": committed / elapsed,
            "queued_at_end": store.pending_writes}


async def _feedback_throughput(store, template: Decision,
                               opts: MicroOptions) -> dict[str, float]:
    """``opts.feedback_concurrency`` tasks recording feedback on distinct decisions."""
    pool = [_fresh(template) for _ in range(opts.feedback_pool)]
    for decision in pool:
        await store.create(decision)
    await store.list(ROUTER, since=time.time())  # waits until every queued write committed
    learning = Learning(ROUTER, {"gbm": 1.0})
    lat: list[int] = []
    stop_at = time.perf_counter() + opts.seconds
    todo = iter(pool)

    async def worker() -> None:
        for decision in todo:
            if time.perf_counter() >= stop_at:
                return
            doc = {"reward": 1.0, "truth": None, "time": time.time(), "learned": ["gbm"]}
            t0 = time.perf_counter_ns()
            recorded = await store.record_feedback(decision, doc, {"gbm": 1.0}, learning)
            lat.append(time.perf_counter_ns() - t0)
            assert recorded.new, "a decision got feedback twice"

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(opts.feedback_concurrency)))
    elapsed = time.perf_counter() - start
    p50, p99 = _percentiles_us(lat)
    return {"acknowledged": len(lat), "per_s": len(lat) / elapsed, "p50_us": p50,
            "p99_us": p99, "pool_exhausted": len(lat) >= len(pool)}


async def measure_store(spec: StoreSpec, row: np.ndarray, opts: MicroOptions, *,
                        with_feedback: bool = True) -> dict[str, Any]:
    """The measurements for one store configuration (``create``, ``throughput`` and,
    with ``with_feedback``, ``feedback``), each with the store opened anew on the
    database ``spec`` names (which should start empty)."""
    template = template_decision(row)
    wait = spec.decision_writes == "before_answer"
    out: dict[str, Any] = {}
    steps: list[tuple[str, Callable]] = [
        ("create", lambda s, c: _create_latency(s, template, wait, opts)),
        ("throughput", lambda s, c: _commit_throughput(s, c, template, wait, opts)),
    ]
    if with_feedback:
        steps.append(("feedback", lambda s, c: _feedback_throughput(s, template, opts)))
    for name, step in steps:
        commits = _Commits()
        store = await _open(spec, commits)
        try:
            out[name] = await step(store, commits)
        finally:
            await store.close()
    return out
