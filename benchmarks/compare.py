"""Arbiter against MLServer and a hand-written floor, in one run, with one load generator
and one payload (one row of the credit model).

Usage::

    python -m benchmarks.compare [--duration S] [--repeats N] [--concurrency 1,16,64]
        [--quick] [--targets arbiter-onnx,floor,...] [--no-install]

Targets (see :mod:`benchmarks.targets`): ``arbiter-onnx``, ``arbiter-sklearn``,
``gateway-single``, ``gateway-thompson``, ``mlserver-sklearn``, ``floor``, and the
fair pair ``arbiter-sklearn-plain`` / ``mlserver-sklearn-plain`` (a one-step
scikit-learn model, no pipeline, the kind MLServer's published figures use). Each is
loaded over REST and (where it has it) gRPC at each concurrency, for ``--duration``
seconds after ``--warmup`` seconds at the same concurrency; the order of the targets is
reversed on every other repeat. Per cell it records req/s, p50 and p99 latency, the CPU
seconds per request of the server process tree (utime+stime from ``/proc``, before and
after) and, per target, the peak RSS (sum of VmHWM over the tree).

Writes ``benchmarks/results/compare-<stamp>.json`` and ``.md`` (and ``compare-latest``
copies) and prints the table and which performance targets are met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import targets as tg
from benchmarks.harness import (
    RESULTS,
    Endpoint,
    check_once,
    cores,
    credit_payload,
    ensure_models,
    ensure_tools,
    run_load,
    tree_cpu_seconds,
    tree_peak_rss_mb,
)

__all__ = ["Options", "ALL_TARGETS", "run", "main", "markdown", "evaluate_targets"]

ALL_TARGETS = ("arbiter-onnx", "arbiter-sklearn", "gateway-single", "gateway-thompson",
               "mlserver-sklearn", "floor", "arbiter-sklearn-plain", "mlserver-sklearn-plain")


@dataclass(slots=True)
class Options:
    """What to run.

    Attributes:
        targets: target names, a subset of :data:`ALL_TARGETS`.
        transports: ``rest`` and/or ``grpc``.
        concurrency: in-flight requests per cell.
        duration_s: measured seconds per cell.
        warmup_s: unmeasured seconds at the same concurrency before each cell.
        repeats: passes over all cells (order reversed on odd passes).
        install: let the script apt-get wrk / h2load and build the MLServer venv.
        models: credit model directory (trained into ``.cache/bench-models`` if None).
        mlserver_workers: MLServer ``parallel_workers`` (None: MLServer's default).
        name: results file stem.
        generator: ``auto`` (wrk / h2load when installed) or ``python``.
        gateway_upstream: how the gateway calls the wrappers, ``grpc`` or ``http``.
        write: write the JSON and markdown files.
    """

    targets: Sequence[str] = ALL_TARGETS
    transports: Sequence[str] = ("rest", "grpc")
    concurrency: Sequence[int] = (1, 16, 64)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    repeats: int = 3
    install: bool = True
    models: Path | None = None
    mlserver_workers: int | None = None
    name: str = "compare"
    generator: str = "auto"
    gateway_upstream: str = "http"
    write: bool = True


@dataclass(slots=True)
class _Cell:
    target: str
    transport: str
    concurrency: int
    samples: list[dict[str, float]] = field(default_factory=list)


def _build_targets(opts: Options, models: Path, server_cpus) -> list[tg.Target]:
    payload = credit_payload(models)
    ref = tg.Reference.compute(models, payload)
    built: dict[str, tg.Target] = {}
    want = set(opts.targets)
    gateway_wanted = want & {"gateway-single", "gateway-thompson"}
    if "arbiter-onnx" in want or gateway_wanted:
        built["arbiter-onnx"] = tg.arbiter_wrapper("onnx", models, payload, ref, server_cpus)
    if "arbiter-sklearn" in want or gateway_wanted:
        built["arbiter-sklearn"] = tg.arbiter_wrapper("sklearn", models, payload, ref,
                                                      server_cpus)
    if gateway_wanted:
        if not tg.gateway_available():
            print("[bench] gateway/app.py not found: skipping the gateway targets", flush=True)
        else:
            up = {key: built[name].processes[0]
                  for key, name in (("gbm", "arbiter-onnx"), ("lr", "arbiter-sklearn"))}
            for t in tg.gateway(models, payload, ref, server_cpus, wrappers=up,
                                upstream=opts.gateway_upstream):
                built[t.name] = t
    if "mlserver-sklearn" in want:
        built["mlserver-sklearn"] = tg.mlserver(models, payload, ref, server_cpus,
                                                parallel_workers=opts.mlserver_workers)
    if "floor" in want:
        built["floor"] = tg.floor(models, payload, ref, server_cpus)
    if "arbiter-sklearn-plain" in want:
        built["arbiter-sklearn-plain"] = tg.arbiter_wrapper("sklearn-plain", models, payload,
                                                            ref, server_cpus)
    if "mlserver-sklearn-plain" in want:
        built["mlserver-sklearn-plain"] = tg.mlserver(
            models, payload, ref, server_cpus, parallel_workers=opts.mlserver_workers,
            plain=True)
    # wrappers started for the gateway's sake come first (so they start first) either way
    return [built[n] for n in ALL_TARGETS if n in built]


def _sample(ep: Endpoint, conc: int, opts: Options, tools, gen_cpus) -> dict[str, float]:
    if opts.warmup_s > 0:
        run_load(ep, conc, opts.warmup_s, tools=tools, cpus=gen_cpus)
    pids = ep.pids()
    cpu0 = tree_cpu_seconds(pids)
    res = run_load(ep, conc, opts.duration_s, tools=tools, cpus=gen_cpus)
    cpu = tree_cpu_seconds(pids) - cpu0
    return {"requests": res.requests, "duration_s": res.duration_s, "rps": res.rps,
            "p50_ms": res.p50_ms, "p99_ms": res.p99_ms, "errors": res.errors,
            "cpu_s_per_req": cpu / res.requests if res.requests else float("nan"),
            "generator": res.generator}


def run(opts: Options) -> dict[str, Any]:
    """Start the targets, load every (endpoint, concurrency) cell, stop; the results doc."""
    unknown = set(opts.targets) - set(ALL_TARGETS)
    if unknown:
        raise SystemExit(f"unknown targets {sorted(unknown)}; known: {', '.join(ALL_TARGETS)}")
    pinning = cores()  # servers and generators are pinned at spawn; this process idles
    load_start = os.getloadavg()
    tools = ensure_tools(opts.install) if opts.generator == "auto" else {}
    models = opts.models or ensure_models()
    print(f"[bench] {pinning.describe()}; REST generator: "
          f"{'wrk' if tools.get('wrk') else 'python (benchmarks.pyload)'}; gRPC generator: "
          f"{'h2load' if tools.get('h2load') else 'python (benchmarks.pyload)'}", flush=True)
    built = _build_targets(opts, models, pinning.server)
    broken: dict[str, str] = {}
    endpoints: list[Endpoint] = []
    rss: dict[str, float] = {}
    cells: dict[tuple[str, str, int], _Cell] = {}
    started = time.time()
    try:
        for target in built:
            print(f"[bench] starting {target.name} ...", flush=True)
            t0 = time.monotonic()
            try:
                target.start()
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                broken[target.name] = f"did not start: {exc}"
                print(f"[bench] {target.name} FAILED to start: {exc}", flush=True)
                continue
            print(f"[bench]   ready in {time.monotonic() - t0:.1f}s", flush=True)
        for target in built:
            if target.name in broken or target.name not in opts.targets:
                continue
            for ep in target.endpoints:
                if ep.transport not in opts.transports:
                    continue
                try:
                    check_once(ep)
                except Exception as exc:  # noqa: BLE001
                    broken[f"{ep.target}/{ep.transport}"] = f"bad response: {exc}"
                    print(f"[bench] {ep.target} {ep.transport}: BAD RESPONSE: {exc}", flush=True)
                    continue
                endpoints.append(ep)
        total = len(endpoints) * len(opts.concurrency) * opts.repeats
        done = 0
        for rep in range(opts.repeats):
            order = endpoints if rep % 2 == 0 else endpoints[::-1]
            concs = list(opts.concurrency) if rep % 2 == 0 else list(opts.concurrency)[::-1]
            for ep in order:
                for conc in concs:
                    done += 1
                    key = (ep.target, ep.transport, conc)
                    cell = cells.setdefault(key, _Cell(*key))
                    try:
                        s = _sample(ep, conc, opts, tools, pinning.generator)
                    except Exception as exc:  # noqa: BLE001
                        print(f"[bench] [{done}/{total}] {ep.target} {ep.transport} c={conc}: "
                              f"FAILED {exc}", flush=True)
                        continue
                    cell.samples.append(s)
                    print(f"[bench] [{done}/{total}] rep {rep + 1} {ep.target:17s} "
                          f"{ep.transport:4s} c={conc:<3d} {s['rps']:8.0f} req/s  "
                          f"p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
                          f"cpu {s['cpu_s_per_req'] * 1e3:.3f} ms/req"
                          + (f"  ERRORS {s['errors']}" if s["errors"] else ""), flush=True)
        for target in built:
            if target.name in opts.targets and target.name not in broken:
                pids = target.endpoints[0].pids() if target.endpoints else target.pids()
                rss[target.name] = tree_peak_rss_mb(pids)
    finally:
        for target in reversed(built):
            target.stop()
    doc = _document(opts, cells, rss, broken, tools, pinning.describe(), started)
    doc["machine"]["loadavg_1m_start_end"] = [round(load_start[0], 2),
                                              round(os.getloadavg()[0], 2)]
    if max(doc["machine"]["loadavg_1m_start_end"]) > 2.5:
        print("[bench] WARNING: the machine was busy with other work (1-min load average "
              f"{doc['machine']['loadavg_1m_start_end']}); figures are noisy", flush=True)
    if opts.write:
        _write(doc, opts.name)
    return doc


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _document(opts, cells, rss, broken, tools, pinning, started) -> dict[str, Any]:
    rows = []
    for cell in cells.values():
        s = cell.samples
        if not s:
            continue
        rows.append({
            "target": cell.target, "transport": cell.transport,
            "concurrency": cell.concurrency, "repeats": len(s),
            "rps": _median([x["rps"] for x in s]),
            "p50_ms": _median([x["p50_ms"] for x in s]),
            "p99_ms": _median([x["p99_ms"] for x in s]),
            "cpu_s_per_req": _median([x["cpu_s_per_req"] for x in s]),
            "peak_rss_mb": rss.get(cell.target, float("nan")),
            "errors": sum(int(x["errors"]) for x in s),
            "generator": s[0]["generator"], "samples": s,
        })
    by = {(r["target"], r["transport"], r["concurrency"]): r for r in rows}
    for r in rows:
        ml_name = "mlserver-sklearn-plain" if r["target"].endswith("-plain") else "mlserver-sklearn"
        ml = by.get((ml_name, r["transport"], r["concurrency"]))
        fl = by.get(("floor", "rest", r["concurrency"]))
        r["vs_mlserver"] = r["rps"] / ml["rps"] if ml and ml["rps"] else None
        r["vs_floor"] = r["rps"] / fl["rps"] if fl and fl["rps"] else None
    order = {n: i for i, n in enumerate(ALL_TARGETS)}
    rows.sort(key=lambda r: (order[r["target"]], r["transport"] != "rest", r["concurrency"]))
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "python": platform.python_version()},
        "method": {"pinning": pinning, "duration_s": opts.duration_s,
                   "warmup_s": opts.warmup_s, "repeats": opts.repeats,
                   "concurrency": list(opts.concurrency),
                   "rest_generator": "wrk" if tools.get("wrk") else "python",
                   "grpc_generator": "h2load" if tools.get("h2load") else "python",
                   "payload": "one credit row, FP32 [1, 20] (reference.npy[0])",
                   "mlserver_parallel_workers": opts.mlserver_workers,
                   "gateway_upstream": opts.gateway_upstream},
        "broken": broken, "rows": rows,
    }
    doc["targets_met"] = evaluate_targets(rows)
    return doc


def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The performance goals, each ``{"goal", "met": bool | None, "detail"}``
    (``met`` None: not measured in this run)."""
    by = {(r["target"], r["transport"], r["concurrency"]): r for r in rows}
    out: list[dict[str, Any]] = []

    def goal(text: str, met: bool | None, detail: str) -> None:
        out.append({"goal": text, "met": met, "detail": detail})

    def ratio(goal_text: str, a: tuple, b: tuple, need: float) -> None:
        ra, rb = by.get(a), by.get(b)
        if not ra or not rb:
            goal(goal_text, None, "not measured")
            return
        x = ra["rps"] / rb["rps"]
        goal(goal_text, x >= need, f"{ra['rps']:.0f} / {rb['rps']:.0f} req/s = {x:.2f}x")

    ratio("ONNX wrapper REST c=16 >= 4x MLServer", ("arbiter-onnx", "rest", 16),
          ("mlserver-sklearn", "rest", 16), 4.0)
    ratio("ONNX wrapper REST c=16 >= 0.8x floor", ("arbiter-onnx", "rest", 16),
          ("floor", "rest", 16), 0.8)
    ratio("sklearn wrapper REST c=16 >= 1.5x MLServer", ("arbiter-sklearn", "rest", 16),
          ("mlserver-sklearn", "rest", 16), 1.5)
    ratio("one-step sklearn: Arbiter REST c=16 >= MLServer",
          ("arbiter-sklearn-plain", "rest", 16), ("mlserver-sklearn-plain", "rest", 16), 1.0)
    for name in ("arbiter-onnx", "arbiter-sklearn", "gateway-single", "gateway-thompson",
                 "mlserver-sklearn", "arbiter-sklearn-plain", "mlserver-sklearn-plain"):
        pairs = [(by[(name, "grpc", c)], by[(name, "rest", c)]) for (t, tr, c) in by
                 if t == name and tr == "rest" and (name, "grpc", c) in by]
        if not pairs:
            continue
        detail = ", ".join(f"c={g['concurrency']}: {g['rps']:.0f} vs {r['rps']:.0f}"
                           for g, r in pairs)
        goal(f"{name}: gRPC >= REST req/s", all(g["rps"] >= r["rps"] for g, r in pairs),
             detail)
    ratio("gateway (single arm) REST c=16 >= 2x MLServer direct",
          ("gateway-single", "rest", 16), ("mlserver-sklearn", "rest", 16), 2.0)
    gw, direct = by.get(("gateway-single", "rest", 1)), by.get(("arbiter-onnx", "rest", 1))
    if gw and direct:
        d50, d99 = gw["p50_ms"] - direct["p50_ms"], gw["p99_ms"] - direct["p99_ms"]
        goal("gateway added latency c=1 REST p50 < 0.5 ms", d50 < 0.5,
             f"{gw['p50_ms']:.2f} - {direct['p50_ms']:.2f} = {d50:.2f} ms")
        goal("gateway added latency c=1 REST p99 < 2 ms", d99 < 2.0,
             f"{gw['p99_ms']:.2f} - {direct['p99_ms']:.2f} = {d99:.2f} ms")
    else:
        goal("gateway added latency c=1 REST p50 < 0.5 ms / p99 < 2 ms", None, "not measured")
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or x != x else format(x, spec)


def _mlserver_settings(method: dict[str, Any]) -> str:
    workers = method.get("mlserver_parallel_workers")
    return "default settings" if workers is None else f"parallel_workers={workers}"


def markdown(doc: dict[str, Any]) -> str:
    """The results table, the goals and the method, as markdown."""
    m = doc["method"]
    lines = [
        f"# Arbiter benchmark ({doc['started']})", "",
        f"{m['pinning']}; REST load by {m['rest_generator']}, gRPC load by "
        f"{m['grpc_generator']}; closed loop, {m['duration_s']} s per cell after "
        f"{m['warmup_s']} s warm-up, median of {m['repeats']} repeat(s); payload: "
        f"{m['payload']}. CPU ms/req: utime+stime of the server process tree per request "
        f"(gateway rows include the wrappers behind it, called over "
        f"{m.get('gateway_upstream', 'grpc')}). MLServer: {_mlserver_settings(m)}. "
        "Peak RSS: sum of VmHWM over that "
        "tree. 1-minute load average of the machine at start / end: "
        f"{doc['machine'].get('loadavg_1m_start_end')} (other work on the machine adds "
        "noise).", "",
        "| target | transport | c | req/s | p50 ms | p99 ms | CPU ms/req | peak RSS MiB "
        "| vs MLServer | vs floor | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['target']} | {r['transport']} | {r['concurrency']} | {r['rps']:.0f} "
            f"| {_fmt(r['p50_ms'], '.2f')} | {_fmt(r['p99_ms'], '.2f')} "
            f"| {_fmt(r['cpu_s_per_req'] * 1e3, '.3f')} | {_fmt(r['peak_rss_mb'], '.0f')} "
            f"| {_fmt(r['vs_mlserver'], '.2f')} | {_fmt(r['vs_floor'], '.2f')} "
            f"| {r['errors']} |")
    lines += ["", "## Goals", ""]
    for g in doc["targets_met"]:
        mark = {True: "MET", False: "MISSED", None: "n/a"}[g["met"]]
        lines.append(f"- **{mark}** {g['goal']}: {g['detail']}")
    if doc["broken"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- {k}: {v}" for k, v in doc["broken"].items()]
    return "\n".join(lines) + "\n"


def _write(doc: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(doc, indent=2, default=str)
    md = markdown(doc)
    for stem in (f"{name}-{stamp}", f"{name}-latest"):
        (RESULTS / f"{stem}.json").write_text(text)
        (RESULTS / f"{stem}.md").write_text(md)
    print(f"[bench] wrote {RESULTS / (name + '-' + stamp)}.{{json,md}}", flush=True)


def _parser(doc: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or __doc__).splitlines()[0])
    p.add_argument("--duration", type=float, default=None, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell")
    p.add_argument("--repeats", type=int, default=None, help="passes over all cells")
    p.add_argument("--concurrency", default=None, help="comma list, e.g. 1,16,64")
    p.add_argument("--quick", action="store_true",
                   help="1 s cells, 0.5 s warm-up, 1 repeat, c=16 (unless given)")
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma list")
    p.add_argument("--transports", default="rest,grpc", help="comma list")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get wrk/h2load (fall back to the Python generator)")
    p.add_argument("--generator", choices=["auto", "python"], default="auto")
    p.add_argument("--mlserver-workers", type=int, default=None,
                   help="MLServer parallel_workers (default: MLServer's own default)")
    p.add_argument("--gateway-upstream", choices=["grpc", "http"], default="http",
                   help="how the gateway calls the wrappers")
    p.add_argument("--models", type=Path, default=None, help="credit model directory")
    return p


def options_from_args(args: argparse.Namespace, name: str) -> Options:
    quick = args.quick
    conc = args.concurrency or ("16" if quick else "1,16,64")
    return Options(
        targets=[t for t in args.targets.split(",") if t],
        transports=[t for t in args.transports.split(",") if t],
        concurrency=[int(c) for c in conc.split(",")],
        duration_s=args.duration or (1.0 if quick else 5.0),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        repeats=args.repeats or (1 if quick else 3),
        install=not args.no_install, models=args.models,
        mlserver_workers=args.mlserver_workers, name=name, generator=args.generator,
        gateway_upstream=args.gateway_upstream,
    )


def _sigterm(*_: object) -> None:
    raise SystemExit(143)  # unwind through the finally that stops the servers


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    doc = run(options_from_args(args, "compare"))
    print()
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
