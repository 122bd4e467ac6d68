"""What fairness monitoring costs per decision, in process (no network, no store).

One decision of a champion-challenger deployment over three models, as the gateway
feeds the monitor (``gateway.monitoring.FairnessMonitor``): the routed model's output,
two shadow outputs, and one truth feedback scoring all three; the credit example's
monitoring spec (sex, age bands, foreign worker, via ``encoding.json``) with the
journal on (``refresh_s`` > 0, as on several replicas; here never trimmed by a rebuild,
so it holds every event of the run: an upper bound) and off. Also the periodic work
off the request path: one ``evaluate()`` (gauges for every window, alerts) and the
rebuild's counting rate (stored decisions folded per second).

Usage: ``python -m benchmarks.monitoring_cost [--decisions 20000] [--repeats 5]``;
writes ``benchmarks/results/monitoring-cost-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import uuid
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import CollectorRegistry

from gateway.decisions import Decision
from gateway.groups import MonitoringSpec
from gateway.metrics import GatewayMetrics
from gateway.monitoring import FairnessMonitor
from gateway.tally import Tally

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "credit"
MODELS = ("lr", "gbm", "mlp")


def credit_spec(refresh_s: float) -> MonitoringSpec:
    """The credit example's monitoring block (deployment ``credit`` of
    ``examples/credit/gateway.yaml``), its encoding file found from the example."""
    config = yaml.safe_load((EXAMPLE / "gateway.yaml").read_text())
    block = dict(config["deployments"]["credit"]["monitoring"])
    block["encoding"] = str(EXAMPLE / block["encoding"])
    return MonitoringSpec.model_validate({**block, "refresh_s": refresh_s})


def decisions(n: int, seed: int = 0) -> list[Decision]:
    """Credit-like one-row decisions with every model's label, spread over a week."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 20), np.float32)
    x[:, 8] = rng.integers(0, 4, n)
    x[:, 12] = rng.integers(19, 76, n)
    x[:, 19] = rng.integers(0, 2, n)
    now = time.time()
    out = []
    for i in range(n):
        out.append(Decision(
            id=str(uuid.uuid4()), time=now - 7 * 86_400 * (n - i) / n, deployment="cc",
            router="champion_challenger", routed="lr", shadows=["gbm", "mlp"],
            inputs={"input": {"datatype": "FP32", "shape": [1, 20], "data": x[i].tolist()}},
            outputs={m: {"label": {"datatype": "INT64", "shape": [1],
                                   "data": [int(rng.integers(0, 2))]}} for m in MODELS},
            parameters={}, feedback={"truth": [int(rng.integers(0, 2))], "time": now}))
    return out


def per_decision_us(rows: list[Decision], refresh_s: float) -> float:
    """Microseconds of monitor work per decision (output x 3, feedback x 1)."""
    monitor = FairnessMonitor("cc", credit_spec(refresh_s), store=None,  # type: ignore[arg-type]
                              metrics=None)
    monitor._rebuilt = True  # as after start: only the journal setting decides
    start = time.perf_counter()
    for decision in rows:
        monitor.observe_decision(decision)
        for model in ("gbm", "mlp"):
            monitor.observe_output(decision, model, decision.outputs[model])
        monitor.observe_feedback(decision, decision.feedback or {}, False)
    return (time.perf_counter() - start) / len(rows) * 1e6


def evaluate_ms(rows: list[Decision]) -> float:
    monitor = FairnessMonitor("cc", credit_spec(0), store=None,  # type: ignore[arg-type]
                              metrics=GatewayMetrics(CollectorRegistry()))
    spec = monitor.spec
    monitor.tally = Tally(monitor.attributes, spec.approval)
    monitor.tally.add_all(rows)
    start = time.perf_counter()
    monitor.evaluate()
    return (time.perf_counter() - start) * 1000


def fold_per_s(rows: list[Decision]) -> float:
    spec = credit_spec(0)
    from gateway.groups import attributes_of

    tally = Tally(attributes_of(spec), spec.approval)
    start = time.perf_counter()
    tally.add_all(rows)
    return len(rows) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # random decisions raise alerts; not the point here
    rows = decisions(args.decisions)
    result = {
        "decisions": args.decisions, "repeats": args.repeats, "models": len(MODELS),
        "attributes": 3,
        "per_decision_us_journal": statistics.median(
            per_decision_us(rows, 30.0) for _ in range(args.repeats)),
        "per_decision_us_no_journal": statistics.median(
            per_decision_us(rows, 0.0) for _ in range(args.repeats)),
        "evaluate_ms": statistics.median(evaluate_ms(rows) for _ in range(args.repeats)),
        "rebuild_decisions_per_s": statistics.median(
            fold_per_s(rows) for _ in range(args.repeats)),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitoring-cost-latest.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
