"""Start the credit stack (three wrappers + gateway), run locust headless against it for a
fixed time, write locust's CSV and HTML reports and the arm-share CSV under
``benchmarks/results/``, then stop everything.

Usage::

    python -m benchmarks.loadtest [--duration 60s] [--users N] [--spawn-rate R]
        [--rps-per-user 5] [--user-class RestUser,GrpcUser] [--bucket-s 5]

The stack runs under ``arbiter up`` with a generated run file on free ports (or as
separate ``arbiter serve-model`` / ``arbiter gateway`` processes if ``gateway/up.py``
is absent). Every process is in its own session and is stopped with SIGTERM, then
SIGKILL, on exit, Ctrl-C or SIGTERM, so none outlives the run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import targets as tg
from benchmarks.harness import (
    CACHE,
    REPO,
    RESULTS,
    ServerProcess,
    credit_payload,
    ensure_models,
    free_port,
)

__all__ = ["main", "start_stack"]


def _up_stack(models: Path, work: Path) -> tuple[list[ServerProcess], int, int]:
    pods, lines = {}, ["pods:"]
    for key in ("lr", "gbm", "mlp"):
        pods[key] = (free_port(), free_port())
        lines.append(f"  {key}: {{settings: '{models / (key + '.yaml')}', "
                     f"http_port: {pods[key][0]}, grpc_port: {pods[key][1]}}}")
    http, grpc = free_port(), free_port()
    gw = ["models:"] + [f"  {k}: {{url: 'grpc://127.0.0.1:{g}', name: credit-{k}}}"
                        for k, (_, g) in pods.items()]
    gw += ["deployments:", "  single: {router: {kind: weighted, weights: {gbm: 1}}}",
           "  credit: {router: {kind: thompson, arms: [lr, gbm, mlp]}}"]
    (work / "gateway.yaml").write_text("\n".join(gw) + "\n")
    lines.append(f"gateway: {{config: gateway.yaml, http_port: {http}, grpc_port: {grpc}}}")
    (work / "arbiter.yaml").write_text("\n".join(lines) + "\n")
    proc = ServerProcess("arbiter-up", [sys.executable, "-m", "gateway.cli", "up", "--config",
                                        str(work / "arbiter.yaml")],
                         f"http://127.0.0.1:{http}/v2/health/ready", cwd=work)
    return [proc], http, grpc


def start_stack(models: Path, work: Path) -> tuple[list[ServerProcess], int, int]:
    """Start the stack; returns (processes, gateway HTTP port, gateway gRPC port)."""
    if (REPO / "gateway" / "up.py").exists():
        procs, http, grpc = _up_stack(models, work)
    else:
        payload = credit_payload(models)
        ref = tg.Reference.compute(models, payload)
        single, _ = tg.gateway(models, payload, ref, None, work=work)
        procs = single.processes
        http = int(single.endpoints[0].address.split(":")[2].split("/")[0])
        grpc = int(single.endpoints[1].address.split(":")[1])
    try:
        for proc in procs:
            proc.start()
            proc.wait_ready(180)
    except BaseException:
        for proc in reversed(procs):
            proc.stop()
        raise
    return procs, http, grpc


def _sigterm(*_: object) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", default="60s", help="locust --run-time (e.g. 60s, 5m)")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--spawn-rate", type=float, default=10.0)
    p.add_argument("--rps-per-user", type=float, default=5.0)
    p.add_argument("--user-class", default="RestUser,GrpcUser",
                   help="comma list of locustfile user classes")
    p.add_argument("--deployment", default="credit")
    p.add_argument("--bucket-s", type=float, default=5.0,
                   help="seconds per bucket of the arm-share CSV")
    p.add_argument("--models", type=Path, default=None, help="credit model directory")
    p.add_argument("--results", type=Path, default=RESULTS, help="report directory")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    models = args.models or ensure_models()
    work = CACHE / f"bench-loadtest-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"loadtest-{time.strftime('%Y%m%d-%H%M%S')}"
    print("[loadtest] starting lr, gbm, mlp wrappers and the gateway ...", flush=True)
    procs, http, grpc = start_stack(models, work)
    try:
        print(f"[loadtest] gateway on :{http} (gRPC :{grpc}); locust for {args.duration} "
              f"with {args.users} users ...", flush=True)
        env = {**os.environ, "ARBITER_GRPC": f"127.0.0.1:{grpc}",
               "ARBITER_DEPLOYMENT": args.deployment, "ARBITER_RPS": str(args.rps_per_user),
               "ARBITER_SHARE_CSV": f"{stem}_arm_share.csv",
               "ARBITER_BUCKET_S": str(args.bucket_s),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        locust = [sys.executable, "-m", "locust", "-f", str(REPO / "benchmarks/locustfile.py"),
                  "--headless", "--host", f"http://127.0.0.1:{http}",
                  "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
                  "--run-time", args.duration, "--csv", str(stem), "--html",
                  f"{stem}.html", "--only-summary", "--stop-timeout", "5",
                  *[c for c in args.user_class.split(",") if c]]
        rc = subprocess.run(locust, env=env, cwd=REPO).returncode
    finally:
        print("[loadtest] stopping the stack ...", flush=True)
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"[loadtest] reports: {stem}_stats.csv, {stem}.html, {stem}_arm_share.csv "
          f"(locust exit {rc}: 1 means some requests failed)", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
