"""Micro-benchmark: microseconds per ``Router.route()`` call (and per ``feedback()``
and ``snapshot()``; the feedback repeats one outcome, so champion_challenger's snapshot
hits its memo after the first call).

Every router is built from its spec with an in-memory state store (plus the SQLite
store for the learning routers, for comparison) and warmed with 1,000 scored decisions.
Run: ``.venv/bin/python benchmarks/router_overhead.py [--calls N]``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from protos.protocol import InferenceRequest
from routers import (
    InMemoryStateStore,
    Outcome,
    Router,
    RouterSpec,
    SQLiteStateStore,
    StateStore,
    build_router,
)

SPECS: dict[str, dict[str, Any]] = {
    "weighted 100/0": {"kind": "weighted", "weights": {"lr": 100, "gbm": 0}},
    "weighted 70/30": {"kind": "weighted", "weights": {"lr": 70, "gbm": 30}},
    "shadow 1.0+0.25": {
        "kind": "shadow",
        "primary": "lr",
        "shadows": [{"model": "gbm", "fraction": 1.0}, {"model": "mlp", "fraction": 0.25}],
    },
    "thompson x3": {"kind": "thompson", "arms": ["lr", "gbm", "mlp"]},
    "epsilon_greedy x3": {"kind": "epsilon_greedy", "arms": ["lr", "gbm", "mlp"]},
    "champion_challenger": {
        "kind": "champion_challenger",
        "champion": "lr",
        "challengers": ["gbm", "mlp"],
        "traffic": {"gbm": 0.1},
        "promotion": {"auto": True, "min_samples": 200},
    },
}
LEARNING = {"thompson", "epsilon_greedy", "champion_challenger"}


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Best of 5 timings of ``calls`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def build(name: str, raw: dict[str, Any], store: StateStore) -> Router:
    spec = TypeAdapter(RouterSpec).validate_python(raw)
    router = build_router(name, spec, rng=random.Random(0), clock=time.time, store=store)
    env = random.Random(1)
    for _ in range(1000 if raw["kind"] in LEARNING else 0):
        rewards = {m: float(env.random() < 0.5) for m in router.models}
        if raw["kind"] != "champion_challenger":
            rewards = {router.route(REQUEST).routed: rewards[router.models[0]]}
        router.feedback(Outcome(router.models[0], rewards))
    return router


REQUEST = InferenceRequest(model_name="credit", inputs=[])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per timing")
    args = parser.parse_args()
    print(
        f"{'router':24} {'store':7} {'route() us':>11} {'feedback() us':>14} {'snapshot() us':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, raw in SPECS.items():
            stores = ["memory", "sqlite"] if raw["kind"] in LEARNING else ["memory"]
            for kind in stores:
                store = (
                    InMemoryStateStore()
                    if kind == "memory"
                    else SQLiteStateStore(Path(tmp) / f"{name}.db")
                )
                router = build(name, raw, store)
                route_us = per_call_us(partial(router.route, REQUEST), args.calls)
                outcome = Outcome(router.primary, {m: 0.5 for m in router.models[:1]})
                fb_calls = max(args.calls // 10, 100)
                fb_us = per_call_us(partial(router.feedback, outcome), fb_calls)
                snap_us = per_call_us(router.snapshot, fb_calls)
                print(f"{name:24} {kind:7} {route_us:11.2f} {fb_us:14.2f} {snap_us:14.2f}")
                store.close()


if __name__ == "__main__":
    main()
