"""Every refusal explained under load, and what explaining costs the predictions.

Starts the ONNX credit pod (``gbm``) and a gateway (SQLite store) with two deployments
that route identically to it: ``credit`` explains its refusals (``when: refusals``,
adverse outcome ``label`` 0, exact Tree SHAP of the gbm's scikit-learn twin, one worker
process) and ``credit-plain`` explains nothing. A load generator sends one-row requests
at a fixed rate (open loop: request i leaves at ``t0 + i / rate`` whatever happened
before, so queueing shows in the latency), rows drawn so that ``--refusals`` of them are
refused (rows the gbm refuses, from the reference data).

Modes:

* ``latency`` (default): ``--duration-s`` through ``credit-plain`` and as long through
  ``credit``, in ``--phases`` alternating phases (so that both meet the same machine);
  then every refusal's explanation is read back
  (``GET /v2/decisions/{id}/explanation``). Reports the share of refusals explained
  (target 100 %), the time from decision to explanation (``explained_at - decided_at``,
  p99 target 5 s) and the prediction p99 with explanations against without (target
  within 25 %).
* ``kill``: ``--duration-s`` through ``credit`` with ``decision_writes: before_answer``
  (a refusal the client saw is recorded) and Kernel SHAP through the pod (128 coalitions
  of 20 background rows: slower than the refusals arrive, so jobs wait in the store);
  halfway through, the gateway and its explainer processes are killed (``kill -9``) and
  started again while the load goes on. Every refusal answered must still get its
  explanation.

Both modes sample the ``arbiter_explanation_backlog`` and
``arbiter_explanation_oldest_pending_age_seconds`` gauges every second.

Usage: ``python -m benchmarks.explain_latency [--mode latency|kill] [--rate 100]
[--duration-s 60] [--refusals 0.3]``. Writes ``benchmarks/results/explain-<mode>.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import joblib
import numpy as np
import yaml

from benchmarks.harness import REPO, ServerProcess, ensure_models, free_port

RESULTS = REPO / "benchmarks" / "results"
ARBITER = [sys.executable, "-m", "gateway.cli"]
TARGETS = {"explained_share": 1.0, "p99_to_explanation_s": 5.0, "p99_ratio": 1.25}


@dataclass(slots=True)
class Sent:
    """One request: when it was due, what came back."""

    due: float
    refused_row: bool
    status: int = 0
    latency_ms: float | None = None
    decision_id: str | None = None
    label: int | None = None


class Stack:
    """The gbm pod and the gateway, as processes in their own sessions."""

    def __init__(self, models: Path, work: Path, decision_writes: str, method: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        for stale in work.glob("arbiter.sqlite*"):
            stale.unlink()
        pod_http = free_port()
        self.pod = ServerProcess(
            "explain-pod", [*ARBITER, "serve-model", "--settings", str(models / "gbm.yaml"),
                            "--http-port", str(pod_http), "--grpc-port", str(free_port()),
                            "--log-level", "WARNING"],
            f"http://127.0.0.1:{pod_http}/v2/health/ready", cwd=REPO)
        explain: dict[str, Any] = {
            "method": method, "encoding": str(models / "encoding.json"), "when": "refusals",
            "adverse": {"output": "label", "values": [0]}, "workers": 1}
        if method == "tree_shap":
            explain["model_artifact"] = {"gbm": str(models / "gbm.joblib")}
        else:  # through the pod: tens of milliseconds each, so a backlog builds up
            explain.update(reference_data=str(models / "reference.npy"),
                           kernel_shap_nsamples=128, background_size=20)
        route = {"kind": "weighted", "weights": {"gbm": 1}}
        config = {
            "models": {"gbm": {"url": f"http://127.0.0.1:{pod_http}", "name": "credit-gbm"}},
            "deployments": {"credit": {"router": route, "explain": explain},
                            "credit-plain": {"router": route}},
            "store": {"kind": "sqlite", "path": str(work / "arbiter.sqlite"),
                      "decision_writes": decision_writes},
        }
        (work / "gateway.yaml").write_text(yaml.safe_dump(config))
        self.http_port = free_port()
        self.argv = [*ARBITER, "gateway", "--config", str(work / "gateway.yaml"),
                     "--http-port", str(self.http_port), "--grpc-port", str(free_port()),
                     "--log-level", "WARNING"]
        self.gateway = self._gateway()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _gateway(self) -> ServerProcess:
        return ServerProcess("explain-gateway", self.argv, f"{self.base}/v2/health/ready",
                             cwd=REPO)

    def start(self) -> None:
        self.pod.start().wait_ready()
        self.gateway.start().wait_ready()

    def kill_and_restart(self) -> float:
        """``kill -9`` of the gateway's process group, then a new gateway on the same
        ports and store; returns the seconds it was down."""
        import os
        import signal

        started = time.monotonic()
        os.killpg(self.gateway.pid, signal.SIGKILL)
        self.gateway.proc.wait(10)
        self.gateway = self._gateway()
        self.gateway.start().wait_ready()
        return time.monotonic() - started

    def stop(self) -> None:
        self.gateway.stop()
        self.pod.stop()


def choose_rows(models: Path, refusals: float, n: int, seed: int = 0) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """``n`` request rows, a ``refusals`` share of them rows the gbm refuses (in a
    seeded order); returns the rows and which are refused."""
    reference = np.load(models / "reference.npy").astype(np.float32)
    refused = joblib.load(models / "gbm.joblib").predict(reference) == 0
    rng = np.random.default_rng(seed)
    mask = rng.random(n) < refusals
    rows = np.where(mask[:, None], reference[refused][rng.integers(0, refused.sum(), n)],
                    reference[~refused][rng.integers(0, (~refused).sum(), n)])
    return rows, mask


async def open_loop(base: str, deployment: str, rows: np.ndarray, mask: np.ndarray,
                    rate: float) -> list[Sent]:
    """Send ``rows`` at ``rate`` per second (open loop); every request's outcome."""
    url = f"{base}/v2/models/{deployment}/infer"
    t0 = time.perf_counter() + 0.2
    sent = [Sent(t0 + i / rate, bool(mask[i])) for i in range(len(rows))]

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        item = sent[i]
        await asyncio.sleep(max(0.0, item.due - time.perf_counter()))
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                            "data": rows[i].tolist()}]}
        try:
            async with session.post(url, json=body) as reply:
                doc = await reply.json()
                item.status = reply.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            item.status = -1  # no answer: the gateway was down
            return
        if item.status == 200:
            item.latency_ms = (time.perf_counter() - item.due) * 1000
            item.decision_id = doc["parameters"]["decision_id"]
            item.label = next(o["data"][0] for o in doc["outputs"] if o["name"] == "label")

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                     timeout=timeout) as session:
        await asyncio.gather(*(one(session, i) for i in range(len(rows))))
    return sent


async def sample_backlog(base: str, samples: list[tuple[float, float, float]]) -> None:
    """Every second: (time, backlog, oldest pending age) of ``credit``, until cancelled."""
    from prometheus_client.parser import text_string_to_metric_families

    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base}/metrics") as reply:
                    text = await reply.text()
                values = {s.name: s.value for f in text_string_to_metric_families(text)
                          for s in f.samples if s.labels.get("deployment") == "credit"}
                samples.append((round(time.monotonic() - start, 1),
                                values.get("arbiter_explanation_backlog", 0.0),
                                values.get("arbiter_explanation_oldest_pending_age_seconds",
                                           0.0)))
            except (aiohttp.ClientError, OSError):
                pass  # down during the kill
            await asyncio.sleep(1.0)


async def read_explanations(base: str, ids: list[str], timeout_s: float) -> dict[str, Any]:
    """Decision id -> its explanation document (or ``{"status": "<http status>"}``),
    waiting while the gateway answers 202."""
    documents: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        for decision_id in ids:
            while True:
                async with session.get(f"{base}/v2/decisions/{decision_id}/explanation") as r:
                    status, doc = r.status, await r.json()
                if status != 202 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            documents[decision_id] = doc if status == 200 else {"status": f"http {status}"}
    return documents


def _percentiles(values: list[float], unit: str) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    return {"count": len(values), f"p50_{unit}": float(np.percentile(values, 50)),
            f"p99_{unit}": float(np.percentile(values, 99)), f"max_{unit}": float(max(values))}


def explained_summary(sent: list[Sent], documents: dict[str, Any]) -> dict[str, Any]:
    """Refusals answered, their explanations' outcomes and time from decision to
    explanation."""
    refused = [s.decision_id for s in sent if s.status == 200 and s.label == 0]
    outcomes: dict[str, int] = {}
    delays = []
    attempts: dict[int, int] = {}
    for decision_id in refused:
        doc = documents.get(decision_id, {})
        outcomes[doc.get("status", "missing")] = outcomes.get(doc.get("status", "missing"),
                                                               0) + 1
        if doc.get("status") == "done":
            delays.append(doc["explained_at"] - doc["decided_at"])
            attempts[doc["attempts"]] = attempts.get(doc["attempts"], 0) + 1
    answered = [s for s in sent if s.status == 200]
    return {
        "requests": len(sent), "answered": len(answered),
        "not_answered": sum(s.status != 200 for s in sent),
        "refusal_share": len(refused) / max(1, len(answered)),
        "refusals": len(refused), "outcomes": outcomes,
        "explained_share": outcomes.get("done", 0) / max(1, len(refused)),
        "to_explanation": _percentiles(delays, "s"),
        "attempts": {str(k): v for k, v in sorted(attempts.items())},
    }


def latency(sent: list[Sent]) -> dict[str, Any]:
    return _percentiles([s.latency_ms for s in sent if s.latency_ms is not None], "ms")


async def run_latency(stack: Stack, args: argparse.Namespace, models: Path) -> dict[str, Any]:
    n = int(args.rate * args.duration_s / args.phases)
    rows, mask = choose_rows(models, args.refusals, n * args.phases)
    await open_loop(stack.base, "credit-plain", rows[:300], mask[:300], args.rate)  # warm-up
    samples: list[tuple[float, float, float]] = []
    sampler = asyncio.create_task(sample_backlog(stack.base, samples))
    plain: list[Sent] = []
    explained: list[Sent] = []
    for phase in range(args.phases):  # alternating, so that both meet the same machine
        part = slice(phase * n, (phase + 1) * n)
        plain += await open_loop(stack.base, "credit-plain", rows[part], mask[part], args.rate)
        explained += await open_loop(stack.base, "credit", rows[part], mask[part], args.rate)
    refused = [s.decision_id for s in explained if s.status == 200 and s.label == 0]
    documents = await read_explanations(stack.base, refused, timeout_s=300)
    sampler.cancel()
    summary = explained_summary(explained, documents)
    plain_lat, explained_lat = latency(plain), latency(explained)
    ratio = explained_lat["p99_ms"] / plain_lat["p99_ms"]
    return {"mode": "latency", "plain": plain_lat, "explained": explained_lat,
            "p99_ratio": ratio, "refusals": summary, "backlog_samples": samples,
            "targets_met": {
                "explained_share": summary["explained_share"] >= TARGETS["explained_share"],
                "p99_to_explanation_s": summary["to_explanation"].get("p99_s", 1e9)
                <= TARGETS["p99_to_explanation_s"],
                "p99_ratio": ratio <= TARGETS["p99_ratio"]}}


async def run_kill(stack: Stack, args: argparse.Namespace, models: Path) -> dict[str, Any]:
    n = int(args.rate * args.duration_s)
    rows, mask = choose_rows(models, args.refusals, n)
    samples: list[tuple[float, float, float]] = []
    sampler = asyncio.create_task(sample_backlog(stack.base, samples))
    load = asyncio.create_task(open_loop(stack.base, "credit", rows, mask, args.rate))
    await asyncio.sleep(args.duration_s / 2)
    down_s = await asyncio.to_thread(stack.kill_and_restart)
    sent = await load
    refused = [s.decision_id for s in sent if s.status == 200 and s.label == 0]
    documents = await read_explanations(stack.base, refused, timeout_s=300)
    sampler.cancel()
    summary = explained_summary(sent, documents)
    return {"mode": "kill", "down_s": down_s, "latency": latency(sent), "refusals": summary,
            "backlog_samples": samples,
            "targets_met": {"explained_share": summary["explained_share"] == 1.0}}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    r = result["refusals"]
    method = "Tree SHAP of the gbm" if result["mode"] == "latency" else "Kernel SHAP"
    head = [f"# Refusals explained under load ({result['mode']})", "",
            f"{args.rate:.0f} req/s open loop for {args.duration_s:.0f} s through `credit` "
            f"({method} on every refusal), {r['refusal_share']:.1%} refusals"
            + (f"; as long through `credit-plain`, in {args.phases} alternating phases."
               if result["mode"] == "latency" else "."), ""]
    delay = r["to_explanation"]
    lines = [
        f"- refusals {r['refusals']}, explained {r['outcomes'].get('done', 0)} "
        f"({r['explained_share']:.1%}); outcomes {r['outcomes']}; attempts {r['attempts']}",
        f"- decision to explanation: p50 {delay.get('p50_s', float('nan')):.2f} s, p99 "
        f"{delay.get('p99_s', float('nan')):.2f} s, max {delay.get('max_s', float('nan')):.2f} s",
        f"- backlog peak {max((b for _, b, _ in result['backlog_samples']), default=0):.0f}, "
        f"oldest pending peak "
        f"{max((a for _, _, a in result['backlog_samples']), default=0):.1f} s",
    ]
    if result["mode"] == "latency":
        p, e = result["plain"], result["explained"]
        lines.append(f"- prediction p50/p99: plain {p['p50_ms']:.2f}/{p['p99_ms']:.2f} ms, "
                     f"explained {e['p50_ms']:.2f}/{e['p99_ms']:.2f} ms (ratio "
                     f"{result['p99_ratio']:.2f})")
    else:
        lines.append(f"- gateway down {result['down_s']:.1f} s; requests not answered "
                     f"{r['not_answered']} of {r['requests']}")
    lines.append(f"- targets met: {result['targets_met']}")
    return "\n".join(head + lines + [""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("latency", "kill"), default="latency")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration-s", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--refusals", type=float, default=0.3, help="share of refused rows")
    parser.add_argument("--phases", type=int, default=6,
                        help="latency mode: alternating plain/explained phases per run")
    args = parser.parse_args(argv)
    models = ensure_models()
    work = RESULTS / f"explain-{args.mode}-run"
    kill = args.mode == "kill"
    stack = Stack(models, work, "before_answer" if kill else "behind",
                  "kernel_shap" if kill else "tree_shap")
    try:
        stack.start()
        run = run_kill if args.mode == "kill" else run_latency
        result = asyncio.run(run(stack, args, models))
    finally:
        stack.stop()
    result.update(rate_per_s=args.rate, duration_s=args.duration_s)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"explain-{args.mode}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result, args)
    (RESULTS / f"explain-{args.mode}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
