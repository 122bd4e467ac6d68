"""``arbiter up``: every model-wrapper pod of a local run file and the gateway in front
of them, as separate processes, the way a Helm release lays them out on Kubernetes.

Run file (``examples/credit/arbiter.yaml``)::

    pods:
      lr:  {settings: models/lr.yaml, http_port: 9101, grpc_port: 9001}
      gbm: {settings: models/gbm.yaml, http_port: 9102, grpc_port: 9002}
    gateway: {config: gateway.yaml, http_port: 8000, grpc_port: 8001}

Pods start first; when each reports ready (``GET /v2/health/ready`` is 200) the gateway
starts. Logs are interleaved, each line prefixed with its process's name. Ctrl-C or
SIGTERM stops everything (gateway first, each process draining). A pod that dies once
running is restarted, after 1 s, then 2, 4, ... up to 30 s while it keeps dying (back
to 1 s once it has stayed up 30 s); meanwhile the gateway routes around it (its circuit
breaker). If a process fails to start, or the gateway dies, the rest are stopped and
``up`` exits 1 with that process's last lines. Children get SIGTERM if ``up`` itself
dies (Linux ``PR_SET_PDEATHSIG``), so none is orphaned. For development and demos;
production uses the Helm charts.

Before anything starts, ``up`` refuses a gateway config that would not reach the run
file's pods: a model whose pod (the pod serving that model name) listens elsewhere, or
whose port belongs to a pod serving another model, is named with both URLs.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["RunFile", "Process", "run_up", "load_run_file", "check_upstreams"]

log = logging.getLogger("arbiter.up")

RESTART_BACKOFF_S = (1.0, 30.0)
"""First and longest wait before restarting a pod that died; doubled per death, back to
the first once the pod has stayed up the longest."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PodSpec(_Spec):
    """One model-wrapper pod."""

    settings: Path = Field(description="Model settings YAML (relative to the run file).")
    http_port: int = Field(ge=1, le=65535, description="REST port.")
    grpc_port: int = Field(ge=1, le=65535, description="gRPC port.")


class GatewayRunSpec(_Spec):
    """The gateway process."""

    config: Path = Field(description="Gateway config YAML (relative to the run file).")
    http_port: int = Field(default=8000, ge=1, le=65535, description="REST port.")
    grpc_port: int = Field(default=8001, ge=1, le=65535, description="gRPC port.")


class RunFile(_Spec):
    """A local run file."""

    pods: dict[str, PodSpec] = Field(description="Pods by name.")
    gateway: GatewayRunSpec = Field(description="The gateway in front of the pods.")
    ready_timeout_s: float = Field(default=120, gt=0, description="Wait for readiness, s.")
    host: str = Field(default="127.0.0.1", description="Interface every process binds.")


def load_run_file(path: Path) -> RunFile:
    """Read a run file; relative paths resolve against its folder.

    Raises:
        ValueError: missing file, not YAML, or invalid (naming the field).
    """
    try:
        raw = yaml.safe_load(path.read_text())
        run = RunFile.model_validate(raw)
    except FileNotFoundError:
        raise ValueError(f"run file not found: {path}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"invalid run file {path}: {exc}") from None
    base = path.parent.resolve()
    pods = {k: p.model_copy(update={"settings": base / p.settings}) for k, p in run.pods.items()}
    gateway = run.gateway.model_copy(update={"config": base / run.gateway.config})
    return run.model_copy(update={"pods": pods, "gateway": gateway})


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Process:
    """A child process with prefixed, interleaved output and a readiness probe."""

    def __init__(self, name: str, args: list[str], ready_url: str) -> None:
        self.name = name
        self.args = args
        self.ready_url = ready_url
        self.tail: deque[str] = deque(maxlen=20)
        self.popen: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> None:
        """Spawn it (again, after it died) and start copying its output."""
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            self.tail.append(line)
            sys.stdout.write(f"[{self.name}] {line}\n")
            sys.stdout.flush()

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        """Whether its readiness endpoint answers 200."""
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s`` seconds."""
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class StartupError(RuntimeError):
    """A process failed to start."""


def _check_port(host: str, port: int, owner: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise StartupError(f"{owner}: port {port} on {host} is already in use") from None


def _processes(run: RunFile) -> tuple[list[Process], Process]:
    cli = [sys.executable, "-m", "gateway.cli"]
    pods = []
    for name, pod in run.pods.items():
        if not pod.settings.exists():
            raise StartupError(f"{name}: model settings not found: {pod.settings}")
        for port in (pod.http_port, pod.grpc_port):
            _check_port(run.host, port, name)
        args = [*cli, "serve-model", "--settings", str(pod.settings), "--host", run.host,
                "--http-port", str(pod.http_port), "--grpc-port", str(pod.grpc_port)]
        pods.append(Process(name, args, f"http://{run.host}:{pod.http_port}/v2/health/ready"))
    gw = run.gateway
    if not gw.config.exists():
        raise StartupError(f"gateway: config not found: {gw.config}")
    from gateway.config import ConfigError, load_config

    try:  # refuse a bad gateway config before any pod starts
        config = load_config(gw.config)
    except ConfigError as exc:
        raise StartupError(f"gateway: {exc}") from None
    check_upstreams(run, config)
    for port in (gw.http_port, gw.grpc_port):
        _check_port(run.host, port, "gateway")
    args = [*cli, "gateway", "--config", str(gw.config), "--host", run.host,
            "--http-port", str(gw.http_port), "--grpc-port", str(gw.grpc_port)]
    return pods, Process("gateway", args, f"http://{run.host}:{gw.http_port}/v2/health/ready")


def _pod_urls(run: RunFile) -> dict[str, tuple[str, dict[str, int]]]:
    """Model name -> (pod name, {"http": port, "grpc": port}) for each pod whose
    settings file names its model."""
    served = {}
    for name, pod in run.pods.items():
        try:
            model = (yaml.safe_load(pod.settings.read_text()) or {}).get("name")
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # the pod itself will say what is wrong with its settings
        if isinstance(model, str):
            served[model] = (name, {"http": pod.http_port, "grpc": pod.grpc_port})
    return served


def check_upstreams(run: RunFile, config) -> None:
    """Refuse a gateway config whose models would not reach the run file's pods.

    A model served by a pod of the run file (same model name) must use that pod's port
    for its protocol (gRPC or REST); a model on a pod's port must be that pod's model.
    Models on other ports are left alone (pods outside the run file).

    Raises:
        StartupError: naming the model and both URLs.
    """
    served = _pod_urls(run)
    by_port = {port: (pod, model) for model, (pod, ports) in served.items()
               for port in ports.values()}
    for key, ref in config.models.items():
        url = urlparse(ref.url)
        found = served.get(ref.name)
        if found is not None:
            pod, ports = found
            expected = f"{url.scheme}://{run.host}:{ports[ref.protocol]}"
            if url.port != ports[ref.protocol]:
                raise StartupError(
                    f"gateway: model {key!r} ({ref.name}) is at {ref.url} in the gateway "
                    f"config, but pod {pod!r} of the run file serves it at {expected}")
        elif url.port in by_port:
            pod, model = by_port[url.port]
            raise StartupError(
                f"gateway: model {key!r} ({ref.name}) is at {ref.url} in the gateway config, "
                f"but that port is pod {pod!r}'s, which serves {model!r}")


def _wait_ready(processes: list[Process], timeout_s: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(processes)
    while waiting:
        if stop.is_set():
            raise StartupError("interrupted during startup")
        for proc in list(waiting):
            if not proc.alive():
                time.sleep(0.2)  # let the last lines arrive
                tail = "\n  ".join(list(proc.tail)[-8:])
                raise StartupError(f"{proc.name} exited during startup:\n  {tail}")
            if proc.ready():
                log.info("%s ready", proc.name)
                waiting.remove(proc)
        if time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise StartupError(f"not ready after {timeout_s:.0f} s: {names}")
        time.sleep(0.2)


def run_up(path: Path) -> int:
    """Run the file's pods and gateway until Ctrl-C / SIGTERM or a failure.

    Returns:
        0 after a requested stop, 1 after a failure (startup or a process dying).
    """
    try:
        run = load_run_file(path)
        pods, gateway = _processes(run)
    except (ValueError, StartupError) as exc:
        log.error("%s", exc)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started: list[Process] = []
    try:
        for proc in pods:
            proc.start()
            started.append(proc)
        _wait_ready(pods, run.ready_timeout_s, stop)
        gateway.start()
        started.append(gateway)
        _wait_ready([gateway], run.ready_timeout_s, stop)
        log.info("up: gateway on http://%s:%d (gRPC %d); Ctrl-C stops everything",
                 run.host, run.gateway.http_port, run.gateway.grpc_port)
        return _supervise(pods, gateway, stop)
    except StartupError as exc:
        log.error("%s", exc)
        return 0 if stop.is_set() else 1
    finally:
        for proc in reversed(started):
            proc.stop()


def _supervise(pods: list[Process], gateway: Process, stop: threading.Event) -> int:
    """Restart pods that die, with backoff; end when stopped (0) or the gateway dies (1)."""
    first, longest = RESTART_BACKOFF_S
    backoff = {proc.name: first for proc in pods}
    due: dict[str, float] = {}
    while not stop.wait(0.2):
        if not gateway.alive():
            tail = "\n  ".join(list(gateway.tail)[-8:])
            log.error("gateway exited unexpectedly:\n  %s", tail)
            return 1
        now = time.monotonic()
        for proc in pods:
            if proc.alive():
                if now - proc.started_at >= longest:
                    backoff[proc.name] = first
            elif proc.name not in due:
                due[proc.name] = now + backoff[proc.name]
                tail = "\n  ".join(list(proc.tail)[-8:])
                log.error("%s exited (code %s); restarting in %.0f s:\n  %s", proc.name,
                          proc.popen.returncode if proc.popen else None, backoff[proc.name],
                          tail)
                backoff[proc.name] = min(2 * backoff[proc.name], longest)
            elif now >= due[proc.name]:
                del due[proc.name]
                proc.start()
                log.info("%s restarted", proc.name)
    log.info("stopping")
    return 0
