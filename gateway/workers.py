"""``--workers N``: N server processes on one REST port and one gRPC port.

Python serves one core per process, so a gateway (or a model pod) uses every core of
its node by running N worker processes that bind the same ports with ``SO_REUSEPORT``;
the kernel spreads new connections across them. The supervising process resolves the
ports first (port 0 picks free ones) and holds them, bound but not listening, so no
other program can take them while workers start or restart. It forwards SIGTERM and
SIGINT to the workers (each drains its requests), restarts a worker that dies with
backoff (1 s doubling to 30 s, as a kubelet does), and exits when all have stopped.

Gateway workers share what they learn through the store (SQLite or PostgreSQL; an
in-memory store is refused). Prometheus metrics are aggregated across workers through
``prometheus_client``'s multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a temporary
folder the supervisor creates): any worker's ``/metrics`` shows the sums of all.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

__all__ = ["WorkerPlan", "run_workers"]

log = logging.getLogger("arbiter.workers")

_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What to start.

    Attributes:
        argv: the command line of one worker, without ports (``arbiter`` arguments).
        workers: how many processes (>= 2).
        host: interface to bind.
        http_port: REST port (0: any free port).
        grpc_port: gRPC port (0: any free port; -1: no gRPC).
    """

    argv: list[str]
    workers: int
    host: str
    http_port: int
    grpc_port: int


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (without listening) ``host:port`` with SO_REUSEPORT.

    Raises:
        OSError: the port is taken by a process that did not set SO_REUSEPORT.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind port {port}: {exc.strerror}") from None
    return sock


def _die_with_parent() -> None:  # runs in the child before exec
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: workers outlive a killed supervisor
        pass


def run_workers(plan: WorkerPlan) -> int:
    """Run the workers until SIGTERM/SIGINT; returns the exit status (0 when every
    worker stopped cleanly).

    Raises:
        OSError: a port is taken.
    """
    held = [_reserve(plan.host, plan.http_port)]
    if plan.grpc_port >= 0:
        held.append(_reserve(plan.host, plan.grpc_port))
    ports = [s.getsockname()[1] for s in held]
    metrics_dir = tempfile.mkdtemp(prefix="arbiter-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    argv = [sys.executable, "-m", "gateway.cli", *plan.argv, "--workers", "1",
            "--reuse-port", "--host", plan.host, "--http-port", str(ports[0]),
            "--grpc-port", str(ports[1] if len(ports) > 1 else -1)]
    log.info("starting %d workers on REST %s:%d%s", plan.workers, plan.host, ports[0],
             f", gRPC {ports[1]}" if len(ports) > 1 else "")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return _supervise(argv, env, plan.workers, stop)
    finally:
        for sock in held:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(argv: list[str], env: dict[str, str], count: int, stop: threading.Event) -> int:
    def start(index: int) -> subprocess.Popen:
        return subprocess.Popen([*argv, "--worker-index", str(index)], env=env,
                                preexec_fn=_die_with_parent)

    workers = [start(i) for i in range(count)]
    backoff = [1.0] * count
    restart_at = [0.0] * count
    while not stop.wait(0.2):
        for i, proc in enumerate(workers):
            if proc.poll() is None or time.monotonic() < restart_at[i]:
                continue
            if restart_at[i] == 0.0:
                log.error("worker %d (pid %d) exited with %s; restarting in %.0f s",
                          i, proc.pid, proc.returncode, backoff[i])
                _mark_dead(proc.pid, env)
                restart_at[i] = time.monotonic() + backoff[i]
                backoff[i] = min(_MAX_BACKOFF_S, backoff[i] * 2)
                continue
            restart_at[i] = 0.0
            workers[i] = start(i)
    log.info("stopping %d workers", count)
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = [proc.wait() for proc in workers]
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def _mark_dead(pid: int, env: dict[str, str]) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, env["PROMETHEUS_MULTIPROC_DIR"])
