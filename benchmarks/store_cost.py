"""What a decision costs in each store: in process, and end to end through the gateway.

Usage::

    python -m benchmarks.store_cost [--stores memory,sqlite,postgres]
        [--modes behind,before_answer] [--duration 5] [--repeats 3] [--concurrency 16,1]
        [--parts micro,e2e,feedback] [--quick] [--results DIR]

For each store ``kind`` (memory, sqlite, postgres) and ``decision_writes`` mode:

* ``micro`` (:mod:`benchmarks.store_micro`): ``store.create()`` latency as the request
  path awaits it (p50/p99 microseconds, decisions offered at a fixed rate), the
  decisions per second the writer commits when producers saturate it, and feedback
  acknowledged per second with 8 in flight (group commit), all in this process;
* ``e2e``: one ONNX credit pod and one gateway per configuration (deployment
  ``single``: weighted router, one model; upstream over REST), loaded over REST by
  ``wrk`` (or :mod:`benchmarks.pyload`) at each concurrency: req/s, p50/p99, CPU per
  request of the server processes, and the p50 added over the memory store with the
  same ``decision_writes``;
* ``feedback``: acknowledged feedback per second through the gateway, 8 in flight, on
  decisions just made by a one-arm Thompson deployment (:mod:`benchmarks.feedback_load`).

PostgreSQL is a throwaway server (``tests/postgres.py``), skipped with a note when its
binaries are missing. The servers (pod, gateways, PostgreSQL, and this process during
``micro``) run pinned to the server core, the load generators to the other core(s)
(:func:`benchmarks.harness.cores`); ``--postgres-core generator`` moves PostgreSQL to
the generator's core(s), as if it ran on another host. Configurations are visited in
reverse order on every other repeat; every figure is the median of the repeats. Writes
``<results>/store-cost-<stamp>.{json,md}``. Target (reported): under 0.3 ms added p50
with ``decision_writes: behind``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import targets as tg
from benchmarks.harness import (
    CACHE,
    REPO,
    RESULTS,
    check_once,
    cores,
    credit_payload,
    ensure_models,
    ensure_tools,
    run_load,
    tree_cpu_seconds,
)
from benchmarks.report import affinity, fsync_us, machine, medians, write_results
from benchmarks.stack import GatewayProc, store_block
from benchmarks.store_micro import MicroOptions, measure_store
from gateway.config import StoreSpec

__all__ = ["Options", "run", "markdown", "main"]

STORES = ("memory", "sqlite", "postgres")
MODES = ("behind", "before_answer")
ADDED_P50_TARGET_MS = 0.3


@dataclass(slots=True)
class Options:
    """What to run (see the module docstring); durations in seconds."""

    stores: tuple[str, ...] = STORES
    modes: tuple[str, ...] = MODES
    parts: tuple[str, ...] = ("micro", "e2e", "feedback")
    concurrency: tuple[int, ...] = (16, 1)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    repeats: int = 3
    micro: MicroOptions = MicroOptions()
    feedback_concurrency: int = 8
    feedback_decisions: int = 10_000
    postgres_core: str = "server"
    models: Path | None = None
    install: bool = True
    generator: str = "auto"
    results: Path = RESULTS


Config = tuple[str, str]  # (kind, decision_writes)


class _Postgres:
    """The throwaway PostgreSQL server, started pinned to ``cpus`` when wanted."""

    def __init__(self, stack: ExitStack, wanted: bool, cpus) -> None:
        self.server = None
        self.problem: str | None = None
        if not wanted:
            return
        from tests.postgres import PostgresServer, postgres_available

        self.problem = postgres_available()
        if self.problem is None:
            with affinity(cpus):  # the postmaster and its backends inherit the CPU set
                self.server = stack.enter_context(PostgresServer())

    def dsn(self, name: str) -> str | None:
        return self.server.create_database(name) if self.server is not None else None

    def pids(self) -> list[int]:
        if self.server is None:
            return []
        return [int((self.server.data_dir / "postmaster.pid").read_text().split()[0])]

    def version(self) -> str | None:
        if self.server is None:
            return None
        import psycopg

        with psycopg.connect(self.server.dsn) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]


def _spec(kind: str, mode: str, work: Path, dsn: str | None) -> StoreSpec:
    return StoreSpec(**store_block(kind, mode, work, dsn))


# ------------------------------------------------------------------------------ micro
def _micro(opts: Options, configs: list[Config], pg: _Postgres, work: Path, row,
           cpus) -> list[dict[str, Any]]:
    samples: dict[Config, list[dict[str, Any]]] = {c: [] for c in configs}
    for rep in range(opts.repeats):
        for kind, mode in configs if rep % 2 == 0 else configs[::-1]:
            name = f"micro_{kind}_{mode}_{rep}"
            spec = _spec(kind, mode, work / name, pg.dsn(name))
            with affinity(cpus):
                out = _run_async(measure_store(spec, row, opts.micro,
                                               with_feedback=mode == opts.modes[0]))
            flat = {"create_p50_us": out["create"]["p50_us"],
                    "create_p99_us": out["create"]["p99_us"],
                    "committed_per_s": out["throughput"]["committed_per_s"]}
            if "feedback" in out:
                flat.update(feedback_per_s=out["feedback"]["per_s"],
                            feedback_p50_us=out["feedback"]["p50_us"],
                            feedback_p99_us=out["feedback"]["p99_us"],
                            feedback_pool_exhausted=out["feedback"]["pool_exhausted"])
            samples[(kind, mode)].append(flat)
            print(f"[bench] micro rep {rep + 1} {kind:8s} {mode:13s} {flat}", flush=True)
    keys = ("create_p50_us", "create_p99_us", "committed_per_s", "feedback_per_s",
            "feedback_p50_us", "feedback_p99_us")
    return [{"store": k, "decision_writes": m, **medians(samples[(k, m)], keys),
             "samples": samples[(k, m)]} for k, m in configs]


def _run_async(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# -------------------------------------------------------------------------------- e2e
def _infer_sample(gw: GatewayProc, conc: int, opts: Options, tools, gen_cpus,
                  pids: list[int]) -> dict[str, float]:
    if opts.warmup_s > 0:
        run_load(gw.endpoint, conc, opts.warmup_s, tools=tools, cpus=gen_cpus)
    cpu0 = tree_cpu_seconds(pids)
    res = run_load(gw.endpoint, conc, opts.duration_s, tools=tools, cpus=gen_cpus)
    cpu = tree_cpu_seconds(pids) - cpu0
    return {"rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
            "errors": res.errors, "generator": res.generator,
            "cpu_ms_per_req": cpu * 1e3 / res.requests if res.requests else float("nan")}


def _feedback_sample(gw: GatewayProc, opts: Options, gen_cpus, body: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_feedback_") as tmp:
        out = Path(tmp) / "feedback.json"
        argv = [sys.executable, "-m", "benchmarks.feedback_load", gw.base, "learn", str(body),
                "--decisions", str(opts.feedback_decisions), "--concurrency",
                str(opts.feedback_concurrency), "--duration", str(opts.duration_s),
                "--out", str(out)]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600,
                              preexec_fn=_pin(gen_cpus))
        if proc.returncode != 0:
            raise RuntimeError(f"feedback load failed: {proc.stderr[-800:]}")
        return json.loads(out.read_text())


def _pin(cpus):
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def _start(gateways: dict[Config, GatewayProc], broken: dict[str, str]) -> None:
    for gw in gateways.values():
        gw.proc.start()
    for gw in gateways.values():
        try:
            gw.proc.wait_ready()
            check_once(gw.endpoint)
        except Exception as exc:  # noqa: BLE001 - reported, the others go on
            broken[gw.name] = str(exc)[:500]
            print(f"[bench] {gw.name} FAILED: {exc}", flush=True)


def _e2e(opts: Options, configs: list[Config], pg: _Postgres, work: Path, models: Path,
         tools, pin, broken: dict[str, str]) -> tuple[list[dict], list[dict]]:
    payload = credit_payload(models)
    ref = tg.Reference.compute(models, payload)
    pod = tg.arbiter_wrapper("onnx", models, payload, ref, pin.server)
    pod_url = f"http://127.0.0.1:{pod.processes[0].http_port}"  # type: ignore[attr-defined]
    gateways = {
        (k, m): GatewayProc(f"gateway-{k}-{m}", pod_url,
                            store_block(k, m, work / f"e2e-{k}-{m}", pg.dsn(f"e2e_{k}_{m}")),
                            work / f"e2e-{k}-{m}", payload, [ref.gbm], cpus=pin.server)
        for k, m in configs
    }
    body = work / "body.json"
    body.write_bytes(payload.json_body())
    infer: dict[tuple[str, str, int], list[dict]] = {}
    feedback: dict[Config, list[dict]] = {}
    try:
        pod.start()
        _start(gateways, broken)
        live = [c for c in configs if gateways[c].name not in broken]
        for rep in range(opts.repeats):
            for cfg in live if rep % 2 == 0 else live[::-1]:
                gw = gateways[cfg]
                pids = [gw.proc.pid, *pod.pids(), *(pg.pids() if cfg[0] == "postgres" else [])]
                if "e2e" in opts.parts:
                    for conc in opts.concurrency:
                        s = _infer_sample(gw, conc, opts, tools, pin.generator, pids)
                        infer.setdefault((*cfg, conc), []).append(s)
                        print(f"[bench] e2e rep {rep + 1} {gw.name:24s} c={conc:<3d} "
                              f"{s['rps']:7.0f} req/s p50 {s['p50_ms']:.2f} ms "
                              f"p99 {s['p99_ms']:.2f} ms", flush=True)
                if "feedback" in opts.parts and cfg[1] == opts.modes[0]:
                    f = _feedback_sample(gw, opts, pin.generator, body)
                    feedback.setdefault(cfg, []).append(f)
                    print(f"[bench] feedback rep {rep + 1} {gw.name:24s} "
                          f"{f['per_s']:7.0f} /s p50 {f['p50_ms']:.2f} ms", flush=True)
    finally:
        for gw in gateways.values():
            gw.proc.stop()
        pod.stop()
    return _infer_rows(infer), _feedback_rows(feedback)


def _infer_rows(infer: dict[tuple[str, str, int], list[dict]]) -> list[dict]:
    rows = []
    for (kind, mode, conc), samples in infer.items():
        row = {"store": kind, "decision_writes": mode, "concurrency": conc,
               **medians(samples, ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")),
               "errors": sum(s["errors"] for s in samples),
               "generator": samples[0]["generator"], "samples": samples}
        base = infer.get(("memory", mode, conc))
        row["added_p50_ms"] = (row["p50_ms"] - medians(base, ("p50_ms",))["p50_ms"]
                               if base else None)
        rows.append(row)
    return rows


def _feedback_rows(feedback: dict[Config, list[dict]]) -> list[dict]:
    return [{"store": kind, "via": "gateway REST",
             **medians(samples, ("per_s", "p50_ms", "p99_ms")),
             "errors": sum(s["errors"] for s in samples),
             "ran_out": any(s["ran_out"] for s in samples), "samples": samples}
            for (kind, _), samples in feedback.items()]


def _targets(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        if row["decision_writes"] == "behind" and row["store"] != "memory" \
                and row["concurrency"] == 16 and row["added_p50_ms"] is not None:
            out.append({"goal": f"{row['store']} behind: added p50 at c=16 < "
                                f"{ADDED_P50_TARGET_MS} ms",
                        "met": row["added_p50_ms"] < ADDED_P50_TARGET_MS,
                        "detail": f"{row['added_p50_ms']:+.3f} ms"})
    return out


# ------------------------------------------------------------------------------- run
def run(opts: Options) -> dict[str, Any]:
    """Everything :class:`Options` asks for; the results document."""
    pin = cores()
    tools = ensure_tools(opts.install) if opts.generator == "auto" else {}
    models = opts.models or ensure_models()
    configs = [(k, m) for k in opts.stores for m in opts.modes]
    work = CACHE / f"bench-store-{int(time.time())}"
    broken: dict[str, str] = {}
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "machine": machine(), "fsync_us": fsync_us(work)}
    try:
        with ExitStack() as stack:
            pg_cpus = pin.generator if opts.postgres_core == "generator" else pin.server
            pg = _Postgres(stack, "postgres" in opts.stores, pg_cpus)
            if pg.problem:
                broken["postgres"] = pg.problem
                configs = [c for c in configs if c[0] != "postgres"]
            doc["machine"]["postgres"] = pg.version()
            print(f"[bench] {pin.describe()}; REST generator "
                  f"{'wrk' if tools.get('wrk') else 'python'}", flush=True)
            row = credit_payload(models).row
            doc["micro"] = (_micro(opts, configs, pg, work, row, pin.server)
                            if "micro" in opts.parts else [])
            doc["e2e"], doc["feedback"] = ([], [])
            if {"e2e", "feedback"} & set(opts.parts):
                doc["e2e"], doc["feedback"] = _e2e(opts, configs, pg, work, models, tools,
                                                   pin, broken)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
    doc["method"] = {"pinning": pin.describe(), "duration_s": opts.duration_s,
                     "warmup_s": opts.warmup_s, "repeats": opts.repeats,
                     "concurrency": list(opts.concurrency), "micro": vars_of(opts.micro),
                     "feedback_concurrency": opts.feedback_concurrency,
                     "postgres_core": opts.postgres_core}
    doc["targets_met"] = _targets(doc["e2e"])
    doc["broken"] = broken
    return doc


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# --------------------------------------------------------------------------- report
def _f(x: Any, spec: str) -> str:
    return "-" if x is None or x != x else format(x, spec)


def markdown(doc: dict[str, Any]) -> str:
    """The three tables, the targets and the method, as markdown."""
    m, mc = doc["method"], doc["machine"]
    lines = [f"# Decision store cost ({doc['started']})", "",
             f"{mc['cpu']}, {mc['usable_cores']} cores, Linux {mc['kernel']}, Python "
             f"{mc['python']}, SQLite {mc['sqlite']}, PostgreSQL {mc.get('postgres') or '-'}; "
             f"fsync of 4 KiB: {doc['fsync_us']:.0f} us (median). {m['pinning']}; PostgreSQL "
             f"on the {m['postgres_core']} core(s). Median of "
             f"{m['repeats']} repeat(s); 1-minute load average {mc['loadavg_1m']:.2f} at start, "
             f"{mc['loadavg_1m_end']:.2f} at end.", ""]
    if doc["micro"]:
        mo = m["micro"]
        lines += [f"## In process ({mo['seconds']:g} s windows; create at "
                  f"{mo['rate']:g} decisions/s offered; {mo['producers']} producers for "
                  f"throughput; feedback {mo['feedback_concurrency']} in flight)", "",
                  "| store | decision_writes | create p50 us | create p99 us | committed "
                  "decisions/s | feedback/s | feedback p50 us | feedback p99 us |",
                  "|---|---|--:|--:|--:|--:|--:|--:|"]
        for r in doc["micro"]:
            lines.append(
                f"| {r['store']} | {r['decision_writes']} | {_f(r['create_p50_us'], '.1f')} "
                f"| {_f(r['create_p99_us'], '.1f')} | {_f(r['committed_per_s'], ',.0f')} "
                f"| {_f(r['feedback_per_s'], ',.0f')} | {_f(r['feedback_p50_us'], '.0f')} "
                f"| {_f(r['feedback_p99_us'], '.0f')} |")
        lines.append("")
    if doc["e2e"]:
        lines += [f"## Gateway end to end (REST, single arm, ONNX pod; {m['duration_s']:g} s "
                  f"after {m['warmup_s']:g} s warm-up)", "",
                  "| store | decision_writes | c | req/s | p50 ms | p99 ms | added p50 ms vs "
                  "memory | server CPU ms/req | errors |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
        for r in sorted(doc["e2e"], key=lambda r: (-r["concurrency"], r["decision_writes"])):
            lines.append(
                f"| {r['store']} | {r['decision_writes']} | {r['concurrency']} "
                f"| {r['rps']:,.0f} | {_f(r['p50_ms'], '.2f')} | {_f(r['p99_ms'], '.2f')} "
                f"| {_f(r['added_p50_ms'], '+.2f')} | {_f(r['cpu_ms_per_req'], '.3f')} "
                f"| {r['errors']} |")
        lines.append("")
    if doc["feedback"]:
        lines += [f"## Feedback through the gateway ({m['feedback_concurrency']} in flight, "
                  "acknowledged after commit)", "",
                  "| store | feedback/s | p50 ms | p99 ms | errors |", "|---|--:|--:|--:|--:|"]
        for r in doc["feedback"]:
            lines.append(f"| {r['store']} | {r['per_s']:,.0f} | {_f(r['p50_ms'], '.2f')} "
                         f"| {_f(r['p99_ms'], '.2f')} | {r['errors']} |")
        lines.append("")
    if doc["targets_met"]:
        lines += ["## Targets", ""]
        lines += [f"- **{'MET' if g['met'] else 'MISSED'}** {g['goal']}: {g['detail']}"
                  for g in doc["targets_met"]]
        lines.append("")
    if doc["broken"]:
        lines += ["## Not measured", ""] + [f"- {k}: {v}" for k, v in doc["broken"].items()]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stores", default=",".join(STORES), help="comma list")
    p.add_argument("--modes", default=",".join(MODES), help="decision_writes, comma list")
    p.add_argument("--parts", default="micro,e2e,feedback", help="comma list")
    p.add_argument("--concurrency", default=None, help="comma list (default 16,1)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--micro-seconds", type=float, default=None,
                   help="window of each in-process measurement (default: --duration)")
    p.add_argument("--micro-rate", type=float, default=2000.0,
                   help="decisions offered per second for the create latency")
    p.add_argument("--feedback-decisions", type=int, default=10_000,
                   help="decisions made before each feedback window")
    p.add_argument("--postgres-core", choices=["server", "generator"], default="server",
                   help="pin PostgreSQL with the servers (default) or with the load "
                   "generator, as if it ran on another host")
    p.add_argument("--quick", action="store_true",
                   help="1 s windows, 0.5 s warm-up, 1 repeat, c=16")
    p.add_argument("--models", type=Path, default=None, help="credit model directory")
    p.add_argument("--no-install", action="store_true", help="never apt-get wrk")
    p.add_argument("--generator", choices=["auto", "python"], default="auto")
    p.add_argument("--results", type=Path, default=RESULTS, help="report directory")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    duration = args.duration or (1.0 if args.quick else 5.0)
    micro_s = args.micro_seconds or min(duration, 3.0)
    return Options(
        stores=tuple(s for s in args.stores.split(",") if s),
        modes=tuple(s for s in args.modes.split(",") if s),
        parts=tuple(s for s in args.parts.split(",") if s),
        concurrency=tuple(int(c) for c in (args.concurrency or
                                           ("16" if args.quick else "16,1")).split(",")),
        duration_s=duration,
        warmup_s=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        repeats=args.repeats or (1 if args.quick else 3),
        micro=MicroOptions(seconds=micro_s, rate=args.micro_rate,
                           feedback_pool=max(2_000, int(8_000 * micro_s))),
        feedback_decisions=args.feedback_decisions, postgres_core=args.postgres_core,
        models=args.models,
        install=not args.no_install, generator=args.generator, results=args.results,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = options_from_args(args)
    unknown = (set(opts.stores) - set(STORES)) | (set(opts.modes) - set(MODES))
    if unknown:
        raise SystemExit(f"unknown stores or modes: {sorted(unknown)}")
    doc = run(opts)
    md = markdown(doc)
    write_results(doc, md, "store-cost", opts.results)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
