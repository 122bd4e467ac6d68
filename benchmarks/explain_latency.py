"""Prediction latency with and without an async Kernel SHAP explanation of every decision.

Starts the ONNX credit pod and a gateway with two deployments that route identically
to it: ``plain`` (no explanations) and ``explained`` (``kernel_shap``, ``mode: async``,
``sample_rate: 1``). Sends one-row requests at a fixed rate (open loop: request i leaves
at ``t0 + i / rate`` whatever happened before, so queueing shows in the latency),
alternating plain and explained phases. Then waits for the explanation queue to drain
and reads every explained decision back: each must end ``done``, or ``skipped`` /
``failed`` with a recorded reason; none may stay pending.

Usage: ``python -m benchmarks.explain_latency [--rate 100] [--phase-s 20] [--repeats 2]``.
Writes ``benchmarks/results/explain-latency.{json,md}``. Target (reported, not asserted):
explained p99 within 25% of plain p99.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from pathlib import Path

import aiohttp
import numpy as np
import yaml

from examples.credit.demo import Up, _free_ports, _http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ROOT / "examples" / "credit" / "models"


def write_config(run_dir: Path, nsamples: int, background: int) -> tuple[Path, int]:
    """Run file and gateway config for one pod and the two deployments."""
    run_dir.mkdir(parents=True, exist_ok=True)
    http, grpc, gw_http, gw_grpc = _free_ports(4)
    explain = {
        "method": "kernel_shap", "mode": "async", "encoding": str(MODELS / "encoding.json"),
        "reference_data": str(MODELS / "reference.npy"), "output": "probabilities",
        "sample_rate": 1.0, "max_queue": 64, "timeout_s": 30, "workers": 1, "seed": 0,
        "kernel_shap_nsamples": nsamples, "background_size": background,
    }
    route = {"kind": "weighted", "weights": {"gbm": 1}}
    gateway = {
        "models": {"gbm": {"url": f"grpc://127.0.0.1:{grpc}", "name": "credit-gbm"}},
        "deployments": {"plain": {"router": route},
                        "explained": {"router": route, "explain": explain}},
        "store": {"kind": "sqlite", "path": str(run_dir / "arbiter.sqlite")},
    }
    for stale in run_dir.glob("arbiter.sqlite*"):
        stale.unlink()
    run = {"pods": {"gbm": {"settings": str(MODELS / "gbm.yaml"), "http_port": http,
                            "grpc_port": grpc}},
           "gateway": {"config": "gateway.yaml", "http_port": gw_http, "grpc_port": gw_grpc}}
    (run_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    (run_dir / "arbiter.yaml").write_text(yaml.safe_dump(run))
    return run_dir / "arbiter.yaml", gw_http


async def open_loop(base: str, deployment: str, rows: np.ndarray, rate: float,
                    seconds: float) -> tuple[list[float], list[str], int]:
    """Fixed-rate requests; returns latencies (ms), decision ids, and failures."""
    n = int(rate * seconds)
    latencies: list[float] = []
    ids: list[str] = []
    failures = 0
    url = f"{base}/v2/models/{deployment}/infer"

    async def one(session: aiohttp.ClientSession, i: int, at: float) -> None:
        nonlocal failures
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        row = rows[i % len(rows)]
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                            "data": row.tolist()}]}
        async with session.post(url, json=body) as reply:
            doc = await reply.json()
            if reply.status != 200:
                failures += 1
                return
        latencies.append((time.perf_counter() - at) * 1000)
        ids.append(doc["parameters"]["decision_id"])

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter() + 0.2
        await asyncio.gather(*(one(session, i, t0 + i / rate) for i in range(n)))
    return latencies, ids, failures


def _summary(latencies: list[float]) -> dict[str, float]:
    return {"requests": len(latencies), "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "max_ms": float(np.max(latencies))}


async def _drain(base: str, ids: list[str], timeout_s: float) -> collections.Counter:
    deadline = time.monotonic() + timeout_s
    while True:
        outcomes: collections.Counter = collections.Counter()
        for decision_id in ids:
            record = _http("GET", f"{base}/v2/decisions/{decision_id}")
            explanation = record.get("explanation") or {}
            outcomes[(explanation.get("status", "missing"), explanation.get("reason"))] += 1
        if not any(status == "pending" for status, _ in outcomes) or time.monotonic() > deadline:
            return outcomes
        await asyncio.sleep(2)


async def measure(args: argparse.Namespace) -> dict:
    run_file, http_port = write_config(RESULTS / "explain-run", args.nsamples, args.background)
    up = Up(run_file, RESULTS / "explain-run" / "arbiter.log", http_port)
    try:
        up.wait_ready()
        base = f"http://127.0.0.1:{http_port}"
        rows = np.load(MODELS / "reference.npy").astype(np.float32)
        await open_loop(base, "plain", rows, args.rate, 3)  # warm-up
        phases: dict[str, list[float]] = {"plain": [], "explained": []}
        explained_ids: list[str] = []
        failures = 0
        for repeat in range(args.repeats):
            for deployment in ("plain", "explained"):
                lat, ids, failed = await open_loop(base, deployment, rows, args.rate,
                                                   args.phase_s)
                phases[deployment].extend(lat)
                failures += failed
                if deployment == "explained":
                    explained_ids.extend(ids)
                print(f"repeat {repeat + 1} {deployment}: {_summary(lat)}", flush=True)
        outcomes = await _drain(base, explained_ids, timeout_s=120)
    finally:
        up.stop()
    plain, explained = _summary(phases["plain"]), _summary(phases["explained"])
    done = sum(n for (status, _), n in outcomes.items() if status == "done")
    return {
        "rate_per_s": args.rate, "phase_s": args.phase_s, "repeats": args.repeats,
        "kernel_shap_nsamples": args.nsamples, "background_size": args.background,
        "plain": plain, "explained": explained,
        "p99_ratio": explained["p99_ms"] / plain["p99_ms"],
        "target_met": explained["p99_ms"] <= 1.25 * plain["p99_ms"],
        "failed_requests": failures,
        "explained_decisions": len(explained_ids),
        "share_explained": done / max(1, len(explained_ids)),
        "outcomes": {f"{s}/{r}" if r else s: n for (s, r), n in outcomes.items()},
        "pending_left": sum(n for (s, _), n in outcomes.items() if s == "pending"),
    }


def _markdown(result: dict) -> str:
    p, e = result["plain"], result["explained"]
    return "\n".join([
        "# Prediction latency with async Kernel SHAP on every decision",
        "",
        f"{result['rate_per_s']:.0f} req/s open loop, {result['repeats']} x "
        f"{result['phase_s']:.0f} s per phase, alternating; kernel_shap nsamples "
        f"{result['kernel_shap_nsamples']}, background {result['background_size']}.",
        "",
        "| deployment | requests | p50 ms | p99 ms | max ms |",
        "|---|--:|--:|--:|--:|",
        f"| plain | {p['requests']} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['max_ms']:.1f} |",
        f"| explained | {e['requests']} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} | "
        f"{e['max_ms']:.1f} |",
        "",
        f"p99 ratio {result['p99_ratio']:.2f} (target <= 1.25: "
        f"{'met' if result['target_met'] else 'missed'}); failed requests "
        f"{result['failed_requests']}; explained {result['share_explained']:.1%} of "
        f"{result['explained_decisions']} decisions; outcomes {result['outcomes']}; "
        f"pending left {result['pending_left']}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--phase-s", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nsamples", type=int, default=256, help="kernel_shap coalitions")
    parser.add_argument("--background", type=int, default=50, help="kernel_shap background rows")
    args = parser.parse_args(argv)
    if not (MODELS / "gbm.onnx").exists():
        from examples.credit.train import train

        train(MODELS)
    result = asyncio.run(measure(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "explain-latency.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "explain-latency.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
