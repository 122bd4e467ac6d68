"""The gateway with ``--workers 2`` against ``--workers 1``: REST req/s and latency at
c=64 on the SQLite store (``decision_writes: behind``), and where the CPU goes.

Usage::

    python -m benchmarks.workers [--duration 5] [--repeats 3] [--concurrency 64]
        [--pods fake,onnx] [--quick] [--results DIR]

Two setups, each with a one-worker and a two-worker gateway (deployment ``single``:
weighted router, one model, upstream over REST; each gateway has its own SQLite file):

* ``fake``: :mod:`benchmarks.fake_pod`, a pod that answers from a pre-built response
  at almost no cost, so that the gateway is what is measured;
* ``onnx``: the ONNX credit pod (``arbiter serve-model --workers 2``), the real thing.

Nothing is pinned: ``--workers 2`` needs both cores of a 2-core machine, so the
gateway workers, the pod and the load generator (``wrk -t1``, or the Python one) all
share the machine's cores under the kernel's scheduler. Per cell the script records,
besides req/s and p50/p99, the CPU time per request of the gateway (supervisor and
workers), the pod and the load generator (``RUSAGE_CHILDREN``), and the whole
machine's busy share (``/proc/stat``): what the rest of the machine (other work) took
shows up as the remainder. One-worker and two-worker cells alternate in order between
repeats; figures are medians of the repeats. Target (reported): two workers at least
1.6x the req/s of one. Writes ``<results>/workers-<stamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import targets as tg
from benchmarks.harness import (
    CACHE,
    RESULTS,
    ServerProcess,
    check_once,
    credit_payload,
    ensure_models,
    ensure_tools,
    run_load,
    tree_cpu_seconds,
)
from benchmarks.report import machine, medians, write_results
from benchmarks.stack import GatewayProc, fake_pod, store_block

__all__ = ["Options", "run", "markdown", "main"]

RATIO_TARGET = 1.6
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Options:
    """What to run (see the module docstring); durations in seconds."""

    pods: tuple[str, ...] = ("fake", "onnx")
    concurrency: int = 64
    duration_s: float = 5.0
    warmup_s: float = 1.0
    repeats: int = 3
    pod_workers: int = 2
    models: Path | None = None
    install: bool = True
    generator: str = "auto"
    results: Path = RESULTS


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / _TICK, sum(fields) / _TICK


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pods(opts: Options, models: Path, payload, ref) -> dict[str, tuple[ServerProcess, str, Any]]:
    pods: dict[str, tuple[ServerProcess, str, Any]] = {}
    if "fake" in opts.pods:
        proc, url = fake_pod()
        pods["fake"] = (proc, url, None)  # the fake answers fixed probabilities
    if "onnx" in opts.pods:
        proc = tg.arbiter_wrapper("onnx", models, payload, ref, None).processes[0]
        proc.argv += ["--workers", str(opts.pod_workers)]
        pods["onnx"] = (proc, f"http://127.0.0.1:{proc.http_port}",  # type: ignore[attr-defined]
                        [ref.gbm])
    return pods


def _sample(gw: GatewayProc, pod: ServerProcess, opts: Options, tools) -> dict[str, float]:
    if opts.warmup_s > 0:
        run_load(gw.endpoint, opts.concurrency, opts.warmup_s, tools=tools)
    gw0, pod0, gen0 = tree_cpu_seconds([gw.proc.pid]), tree_cpu_seconds([pod.pid]), \
        _children_cpu()
    busy0, total0 = _machine_busy()
    res = run_load(gw.endpoint, opts.concurrency, opts.duration_s, tools=tools)
    busy1, total1 = _machine_busy()
    n = max(res.requests, 1)
    cpu = {"gateway": tree_cpu_seconds([gw.proc.pid]) - gw0,
           "pod": tree_cpu_seconds([pod.pid]) - pod0, "generator": _children_cpu() - gen0}
    busy = busy1 - busy0
    return {"rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms, "errors": res.errors,
            "generator": res.generator,
            **{f"{k}_cpu_ms_per_req": v * 1e3 / n for k, v in cpu.items()},
            "other_cpu_ms_per_req": max(0.0, busy - sum(cpu.values())) * 1e3 / n,
            "machine_busy_share": busy / (total1 - total0) if total1 > total0 else float("nan")}


_KEYS = ("rps", "p50_ms", "p99_ms", "gateway_cpu_ms_per_req", "pod_cpu_ms_per_req",
         "generator_cpu_ms_per_req", "other_cpu_ms_per_req", "machine_busy_share")


def run(opts: Options) -> dict[str, Any]:
    """Start the pods and gateways, load each cell, stop; the results document."""
    tools = ensure_tools(opts.install) if opts.generator == "auto" else {}
    models = opts.models or ensure_models()
    payload = credit_payload(models)
    ref = tg.Reference.compute(models, payload)
    work = CACHE / f"bench-workers-{int(time.time())}"
    pods = _pods(opts, models, payload, ref)
    gateways = {
        (pod, w): GatewayProc(f"gateway-{pod}-w{w}", url,
                              store_block("sqlite", "behind", work / f"{pod}-w{w}"),
                              work / f"{pod}-w{w}", payload, expected, workers=w)
        for pod, (_, url, expected) in pods.items() for w in (1, 2)
    }
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine()}
    samples: dict[tuple[str, int], list[dict]] = {key: [] for key in gateways}
    try:
        for proc, _, _ in pods.values():
            proc.start()
            proc.wait_ready()
        for gw in gateways.values():
            gw.proc.start()
        for gw in gateways.values():
            gw.proc.wait_ready()
            check_once(gw.endpoint)
        for rep in range(opts.repeats):
            for key in list(gateways) if rep % 2 == 0 else list(gateways)[::-1]:
                s = _sample(gateways[key], pods[key[0]][0], opts, tools)
                samples[key].append(s)
                print(f"[bench] rep {rep + 1} {gateways[key].name:18s} {s['rps']:7.0f} req/s "
                      f"p50 {s['p50_ms']:.2f} ms p99 {s['p99_ms']:.2f} ms; gateway "
                      f"{s['gateway_cpu_ms_per_req']:.3f} pod {s['pod_cpu_ms_per_req']:.3f} "
                      f"ms/req; machine busy {s['machine_busy_share']:.0%}", flush=True)
    finally:
        for gw in gateways.values():
            gw.proc.stop()
        for proc, _, _ in pods.values():
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    doc["rows"] = [{"pod": pod, "workers": w, **medians(samples[(pod, w)], _KEYS),
                    "errors": sum(s["errors"] for s in samples[(pod, w)]),
                    "generator": samples[(pod, w)][0]["generator"],
                    "samples": samples[(pod, w)]} for pod, w in gateways]
    doc["ratios"] = _ratios(doc["rows"])
    doc["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
    doc["method"] = {"pinning": "none: gateway workers, pod and load generator share all "
                     f"{os.cpu_count()} cores", "concurrency": opts.concurrency,
                     "duration_s": opts.duration_s, "warmup_s": opts.warmup_s,
                     "repeats": opts.repeats, "pod_workers": opts.pod_workers,
                     "store": "sqlite, decision_writes behind"}
    return doc


def _ratios(rows: list[dict]) -> list[dict]:
    """Per pod: the ratio of the median req/s, and the median of the ratios of each
    repeat's pair of cells (run back to back, so slow drift and other work on the
    machine hit both alike)."""
    by = {(r["pod"], r["workers"]): r for r in rows}
    out = []
    for pod in dict.fromkeys(r["pod"] for r in rows):
        one, two = by.get((pod, 1)), by.get((pod, 2))
        if not (one and two and one["rps"] > 0):
            continue
        pairs = [b["rps"] / a["rps"] for a, b in zip(one["samples"], two["samples"],
                                                      strict=False) if a["rps"] > 0]
        paired = statistics.median(pairs) if pairs else float("nan")
        out.append({"pod": pod, "ratio": two["rps"] / one["rps"], "paired_ratio": paired,
                    "pairs": pairs, "met": paired >= RATIO_TARGET})
    return out


def _f(x: Any, spec: str) -> str:
    return "-" if x is None or x != x else format(x, spec)


def markdown(doc: dict[str, Any]) -> str:
    """The table and the ratios, as markdown."""
    m, mc = doc["method"], doc["machine"]
    lines = [f"# Gateway workers ({doc['started']})", "",
             f"{mc['cpu']}, {mc['usable_cores']} cores; {m['pinning']}; REST c="
             f"{m['concurrency']}, {m['duration_s']:g} s after {m['warmup_s']:g} s warm-up, "
             f"median of {m['repeats']} repeat(s); store {m['store']}; ONNX pod with "
             f"--workers {m['pod_workers']}. 1-minute load average {mc['loadavg_1m']:.2f} at "
             f"start, {mc['loadavg_1m_end']:.2f} at end.", "",
             "| pod | gateway workers | req/s | p50 ms | p99 ms | CPU ms/req: gateway | pod "
             "| load generator | other | machine busy | errors |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in doc["rows"]:
        lines.append(
            f"| {r['pod']} | {r['workers']} | {r['rps']:,.0f} | {_f(r['p50_ms'], '.2f')} "
            f"| {_f(r['p99_ms'], '.2f')} | {r['gateway_cpu_ms_per_req']:.3f} "
            f"| {r['pod_cpu_ms_per_req']:.3f} | {r['generator_cpu_ms_per_req']:.3f} "
            f"| {r['other_cpu_ms_per_req']:.3f} | {r['machine_busy_share']:.0%} "
            f"| {r['errors']} |")
    lines += ["", "## Ratio (2 workers / 1 worker, req/s)", ""]
    lines += [f"- **{'MET' if r['met'] else 'MISSED'}** {r['pod']} pod: median of the "
              f"per-repeat ratios {r['paired_ratio']:.2f}x (each: "
              f"{', '.join(f'{x:.2f}' for x in r['pairs'])}); ratio of the medians "
              f"{r['ratio']:.2f}x (target >= {RATIO_TARGET}x)" for r in doc["ratios"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pods", default="fake,onnx", help="comma list of fake, onnx")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=None, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--pod-workers", type=int, default=2, help="--workers of the ONNX pod")
    p.add_argument("--quick", action="store_true", help="1 s cells, 0.5 s warm-up, 1 repeat")
    p.add_argument("--models", type=Path, default=None, help="credit model directory")
    p.add_argument("--no-install", action="store_true", help="never apt-get wrk")
    p.add_argument("--generator", choices=["auto", "python"], default="auto")
    p.add_argument("--results", type=Path, default=RESULTS, help="report directory")
    args = p.parse_args(argv)
    opts = Options(
        pods=tuple(x for x in args.pods.split(",") if x), concurrency=args.concurrency,
        duration_s=args.duration or (1.0 if args.quick else 5.0),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        repeats=args.repeats or (1 if args.quick else 3), pod_workers=args.pod_workers,
        models=args.models, install=not args.no_install, generator=args.generator,
        results=args.results)
    doc = run(opts)
    md = markdown(doc)
    write_results(doc, md, "workers", opts.results)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
