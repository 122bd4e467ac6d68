"""Machinery shared by the benchmarks: server processes, the payload, load generators,
and /proc accounting.

Pieces:
    * :class:`ServerProcess`: one server started as a subprocess in its own session
      (pinned to the server core), waited ready, stopped with SIGTERM then SIGKILL;
    * :func:`credit_payload`: the one-row credit request (REST JSON and gRPC protobuf);
    * :class:`Endpoint`: where to send that payload and how to check one response;
    * :func:`run_load`: a fixed-duration closed-loop load at one concurrency, by ``wrk``
      (REST) / ``h2load`` (gRPC) when installed, else by :mod:`benchmarks.pyload`, always
      pinned to the generator core; returns requests, req/s, p50 and p99;
    * :func:`tree_cpu_seconds` / :func:`tree_peak_rss_mb`: utime+stime and VmHWM summed
      over a process and its descendants.

Linux only (``/proc``, ``sched_setaffinity``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "REPO", "RESULTS", "CACHE", "ServerProcess", "Endpoint", "LoadResult", "Cores",
    "cores", "free_port", "credit_payload", "ensure_models", "ensure_tools", "run_load",
    "check_once", "tree_cpu_seconds", "tree_peak_rss_mb", "grpc_frame", "expect_probs",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / ".cache"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- cores
@dataclass(frozen=True, slots=True)
class Cores:
    """CPU sets: the servers run on ``server``, the load generator on ``generator``."""

    server: frozenset[int] | None
    generator: frozenset[int] | None

    def describe(self) -> str:
        if self.server is None:
            return "no pinning (fewer than 2 usable cores)"
        return (f"servers pinned to cores {sorted(self.server)}, "
                f"load generator to cores {sorted(self.generator or ())}")


def cores() -> Cores:
    """Servers on the first usable core, the generator (and this process) on the rest."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return Cores(None, None)
    return Cores(frozenset(usable[:1]), frozenset(usable[1:]))


def _pin(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------- processes
class ServerProcess:
    """A server subprocess in its own session, pinned to ``cpus``.

    Args:
        name: label used in progress lines and the log file name.
        argv: the command.
        ready_url: polled until it answers 200.
        cpus: CPU set for the process (and so its children and threads).
        env: extra environment variables.
        cwd: working directory.
    """

    def __init__(self, name: str, argv: Sequence[str], ready_url: str, *,
                 cpus: frozenset[int] | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready_url = ready_url
        self.cpus = cpus
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"bench_{name}_{os.getpid()}.log"
        self.keep_log = False  # set when the process failed: its log is kept for a look
        self._stopped = False

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def start(self) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                start_new_session=True, preexec_fn=_pin(self.cpus),
            )
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Poll ``ready_url`` until 200; raise with the log tail if the process dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self.keep_log = True
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.keep_log = True
        raise TimeoutError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole session, then SIGKILL whatever is left after ``grace_s``;
        the log file is removed unless the process failed."""
        if self.proc is None or self._stopped:
            return
        self._stopped = True
        self._stop(grace_s)
        if not self.keep_log:
            self.log_path.unlink(missing_ok=True)
        else:
            print(f"[bench] {self.name} log kept: {self.log_path}", flush=True)

    def _stop(self, grace_s: float) -> None:
        assert self.proc is not None
        pgid = self.proc.pid  # start_new_session: the process group is the leader's pid
        if self.proc.poll() is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        else:
            self.keep_log = True  # it died on its own
        try:
            os.killpg(pgid, signal.SIGKILL)  # stragglers (worker processes) too
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


# ------------------------------------------------------------------------------ /proc
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _tree(pids: Sequence[int]) -> list[int]:
    children = _children_map()
    out: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime (all threads) of ``pids`` and their live descendants, in seconds."""
    total = 0
    for pid in _tree(pids):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _CLK_TCK


def tree_peak_rss_mb(pids: Sequence[int]) -> float:
    """Sum of VmHWM (peak resident set) of ``pids`` and their descendants, in MiB."""
    total_kb = 0
    for pid in _tree(pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            continue
    return total_kb / 1024


# ---------------------------------------------------------------------------- payload
def ensure_models(out: Path | None = None) -> Path:
    """The credit models directory, trained with ``examples/credit/train.py`` if absent."""
    out = out or CACHE / "bench-models"
    needed = ("gbm.onnx", "gbm.yaml", "lr.joblib", "lr.yaml", "reference.npy")
    if all((out / n).exists() for n in needed):
        return out
    print(f"[bench] training the credit models into {out} ...", flush=True)
    subprocess.run([sys.executable, str(REPO / "examples/credit/train.py"), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return out


@dataclass(frozen=True, slots=True)
class Payload:
    """One credit row: as a NumPy row, an OIP JSON body and a protobuf request per model."""

    row: np.ndarray

    def json_body(self, outputs: Sequence[str] = ()) -> bytes:
        body: dict = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                                  "data": [float(v) for v in self.row]}]}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        return json.dumps(body, separators=(",", ":")).encode()

    def grpc_body(self, model_name: str, outputs: Sequence[str] = ()) -> bytes:
        from protos import open_inference_pb2 as pb

        req = pb.ModelInferRequest(model_name=model_name)
        tensor = req.inputs.add(name="input", datatype="FP32", shape=[1, 20])
        tensor.contents.fp32_contents.extend(float(v) for v in self.row)
        for name in outputs:
            req.outputs.add(name=name)
        return req.SerializeToString()


def credit_payload(models: Path) -> Payload:
    """The first encoded training row (FP32 ``[1, 20]``)."""
    return Payload(np.load(models / "reference.npy")[0].astype(np.float32))


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


# -------------------------------------------------------------------------- endpoints
@dataclass(slots=True)
class Endpoint:
    """One (server, transport) pair to load.

    Attributes:
        target: server label, e.g. ``arbiter-onnx``.
        transport: ``rest`` or ``grpc``.
        address: REST: the full infer URL; gRPC: ``host:port``.
        body: REST: the JSON body; gRPC: the serialized ``ModelInferRequest``.
        validate: raises ``AssertionError`` unless ``(outputs)`` is right, where
            ``outputs`` maps output name -> flat float array.
        pids: the server processes (roots) whose CPU and RSS count for this endpoint.
    """

    target: str
    transport: str
    address: str
    body: bytes
    validate: Callable[[dict[str, np.ndarray]], None]
    pids: Callable[[], list[int]] = field(default=lambda: [])


def expect_probs(output: str, expected: Sequence[np.ndarray] | None,
                 required: Sequence[str] = ()) -> Callable[[dict[str, np.ndarray]], None]:
    """A validator: outputs ``required`` present, ``output`` a probability pair equal to
    one of ``expected`` (any pair summing to 1 when ``expected`` is None)."""

    def check(outputs: dict[str, np.ndarray]) -> None:
        missing = [n for n in (*required, output) if n not in outputs]
        assert not missing, f"missing outputs {missing}; got {sorted(outputs)}"
        probs = np.asarray(outputs[output], dtype=np.float64).ravel()
        assert probs.shape == (2,) and abs(probs.sum() - 1) < 1e-3, f"bad probs {probs}"
        if expected is not None:
            assert any(np.allclose(probs, e, atol=1e-4) for e in expected), (
                f"probabilities {probs} differ from the reference {list(expected)}")

    return check


def _rest_outputs(raw: bytes) -> dict[str, np.ndarray]:
    doc = json.loads(raw)
    return {o["name"]: np.asarray(o["data"], dtype=np.float64).ravel() for o in doc["outputs"]}


_RAW_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
               "BOOL": np.bool_, "UINT8": np.uint8}


def _grpc_outputs(raw: bytes) -> dict[str, np.ndarray]:
    from protos import open_inference_pb2 as pb

    msg = pb.ModelInferResponse.FromString(raw)
    out: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(msg.outputs):
        if i < len(msg.raw_output_contents):
            data = np.frombuffer(msg.raw_output_contents[i], dtype=_RAW_DTYPES[tensor.datatype])
        else:
            c = tensor.contents
            data = np.asarray(
                list(c.fp32_contents) or list(c.fp64_contents) or list(c.int64_contents)
                or list(c.int_contents) or list(c.bool_contents) or list(c.uint_contents))
        out[tensor.name] = data.astype(np.float64).ravel()
    return out


def check_once(ep: Endpoint, timeout_s: float = 10.0) -> None:
    """Send the payload once; raise unless the status is OK and the outputs are right."""
    if ep.transport == "rest":
        req = urllib.request.Request(ep.address, data=ep.body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"{ep.target} REST: HTTP {exc.code}: {exc.read()[:300]!r}") from None
        assert status == 200, f"{ep.target} REST: HTTP {status}"
        outputs = _rest_outputs(raw)
    else:
        import grpc

        with grpc.insecure_channel(ep.address) as channel:
            call = channel.unary_unary(GRPC_INFER)
            raw = call(ep.body, timeout=timeout_s)
        outputs = _grpc_outputs(raw)
    try:
        ep.validate(outputs)
    except AssertionError as exc:
        raise AssertionError(f"{ep.target} {ep.transport}: {exc}") from None


# -------------------------------------------------------------------------- generators
@dataclass(slots=True)
class LoadResult:
    """One closed-loop run."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    generator: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def ensure_tools(install: bool) -> dict[str, str | None]:
    """Paths of ``wrk`` and ``h2load``; with ``install``, try ``apt-get install`` (root
    only) for the missing ones. A missing tool means the Python generator is used."""
    tools = {"wrk": "wrk", "h2load": "nghttp2-client"}
    found = {t: shutil.which(t) for t in tools}
    missing = [pkg for t, pkg in tools.items() if not found[t]]
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"[bench] installing {' '.join(missing)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            cmd = ["apt-get", "install", "-y", "-q", *missing]
            if subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode:
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                               timeout=300)
                subprocess.run(cmd, env=env, capture_output=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"[bench] apt-get failed ({exc}); using the Python generator", flush=True)
        found = {t: shutil.which(t) for t in tools}
    return found


_WRK_LUA = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"non2xx": %d, "errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def _run_wrk(wrk: str, ep: Endpoint, conc: int, duration_s: float, cpus, tmp: Path) -> LoadResult:
    body, script = tmp / "body.json", tmp / "bench.lua"
    body.write_bytes(ep.body)
    script.write_text(_WRK_LUA)
    argv = [wrk, "-t1", f"-c{conc}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s",
            "-s", str(script), ep.address]
    out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_pin(cpus),
                         env={**os.environ, "BENCH_BODY": str(body)}, timeout=duration_s + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    doc = json.loads(line[6:])
    return LoadResult(doc["requests"], doc["duration_us"] / 1e6, doc["p50_us"] / 1e3,
                      doc["p99_us"] / 1e3, doc["non2xx"] + doc["errors"], "wrk")


def _run_h2load(h2load: str, ep: Endpoint, conc: int, duration_s: float, cpus,
                tmp: Path) -> LoadResult:
    body, log = tmp / "body.grpc", tmp / "h2load.log"
    body.write_bytes(grpc_frame(ep.body))
    conns = max(1, conc // 16)  # one HTTP/2 connection per 16 in-flight streams
    window = f"{max(1, round(duration_s * 1000))}ms"
    argv = [h2load, "-t1", f"-c{conns}", f"-m{conc // conns}", "-D", window,
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-d", str(body), f"--log-file={log}", f"http://{ep.address}{GRPC_INFER}"]
    out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_pin(cpus),
                         timeout=duration_s + 60)
    if out.returncode != 0 or not log.exists():
        raise RuntimeError(f"h2load failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    rows = np.loadtxt(log, dtype=np.int64, ndmin=2)
    if rows.size == 0:
        return LoadResult(0, duration_s, float("nan"), float("nan"), 1, "h2load")
    ok = rows[:, 1] == 200
    lat_ms = rows[ok, 2] / 1e3
    return LoadResult(int(ok.sum()), duration_s, float(np.percentile(lat_ms, 50)),
                      float(np.percentile(lat_ms, 99)), int((~ok).sum()), "h2load")


def _run_python(ep: Endpoint, conc: int, duration_s: float, cpus, tmp: Path) -> LoadResult:
    body, out_path = tmp / "body.bin", tmp / "pyload.json"
    body.write_bytes(ep.body)
    argv = [sys.executable, "-m", "benchmarks.pyload", ep.transport, ep.address, str(body),
            "--concurrency", str(conc), "--duration", str(duration_s), "--out", str(out_path)]
    out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_pin(cpus),
                         cwd=REPO, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"pyload failed: {out.stderr[-800:]}")
    doc = json.loads(out_path.read_text())
    return LoadResult(doc["requests"], doc["duration_s"], doc["p50_ms"], doc["p99_ms"],
                      doc["errors"], f"python-{ep.transport}")


def run_load(ep: Endpoint, concurrency: int, duration_s: float, *,
             tools: dict[str, str | None] | None = None, cpus=None) -> LoadResult:
    """Closed loop: ``concurrency`` requests in flight for ``duration_s`` seconds.

    REST at concurrency 1 always uses the Python generator: wrk 4.1's latencies at c=1
    on this project's machine at times summed to several times the run's wall time
    (mean 2.05 ms x 7,471 requests in a 3 s run), which one connection in a closed loop
    cannot do; the Python generator times each request with ``perf_counter``.
    """
    tools = tools or {}
    if concurrency == 1 and ep.transport == "rest":
        tools = {**tools, "wrk": None}
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmpdir:
        tmp = Path(tmpdir)
        if ep.transport == "rest" and tools.get("wrk"):
            return _run_wrk(tools["wrk"], ep, concurrency, duration_s, cpus, tmp)
        if ep.transport == "grpc" and tools.get("h2load"):
            return _run_h2load(tools["h2load"], ep, concurrency, duration_s, cpus, tmp)
        return _run_python(ep, concurrency, duration_s, cpus, tmp)
