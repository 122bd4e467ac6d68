"""How a model pod should serve gRPC: the candidate servers side by side, each a process
pinned to the server core and loaded by h2load on the generator core, interleaved, with
medians over the repeats.

Usage::

    python -m benchmarks.grpc_servers [--duration 4] [--repeats 3] [--concurrency 16]

Variants (the ONNX credit pod, one FP32 [1, 20] row per request):

* ``pod``: ``arbiter serve-model`` as shipped (gRPC by grpc's thread-pool server, its
  calls run on the event loop that also serves REST); its REST endpoint is loaded too:
  ``rest`` is the reference of the ratio;
* ``threads``: the same gRPC server (64 pool threads) and model in a process that
  serves gRPC alone;
* ``aio``: the ``grpc.aio`` server (``grpc_threads=0``) and the same model in a process
  that serves gRPC alone (grpc.aio's cost does not depend on sharing the loop with REST:
  measured equal);
* ``floor-threads`` / ``floor-aio``: the transports alone: ModelInfer answers a fixed,
  pre-encoded response without decoding the request or running a model.

Per cell: req/s, p50/p99 latency, server CPU per request (utime+stime of every thread)
and context switches per request (voluntary and involuntary, every thread). Writes
``benchmarks/results/grpc-servers-<stamp>.{json,md}`` and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO,
    RESULTS,
    Endpoint,
    ServerProcess,
    cores,
    credit_payload,
    ensure_models,
    ensure_tools,
    free_port,
    run_load,
    tree_cpu_seconds,
)

__all__ = ["VARIANTS", "main", "run"]

VARIANTS = ("pod", "threads", "aio", "floor-threads", "floor-aio")
_SERVICE = "inference.GRPCInferenceService"


# ------------------------------------------------------------------ the served variants
def _model(models: Path):
    from wrappers.loader import wrapper_from_settings
    from wrappers.settings import load_settings
    from wrappers.target import ModelTarget

    settings = load_settings(models / "gbm.yaml")
    return ModelTarget(wrapper_from_settings(settings), settings)


def _fixed_response(models: Path) -> bytes:
    """The pod's encoded answer to the credit row, for the floor variants."""
    from protos.codecs import grpc as codec
    from protos.open_inference_pb2 import ModelInferRequest
    from protos.registry import ModelRegistry

    async def answer() -> bytes:
        target = _model(models)
        await target.load()
        message = ModelInferRequest.FromString(credit_payload(models).grpc_body("credit-gbm"))
        response = await ModelRegistry([target]).infer(codec.request_from_pb(message))
        return codec.response_to_pb(response).SerializeToString()

    return asyncio.run(answer())


async def _serve_alone(models: Path, port: int, threads: int) -> None:
    """The pod's gRPC server (``threads`` as in ``build_server``) and model, no REST."""
    from prometheus_client import CollectorRegistry

    from protos.registry import ModelRegistry
    from protos.server import grpc as grpc_server
    from protos.server.metrics import ServerMetrics

    target = _model(models)
    await target.load()
    registry = ModelRegistry([target])
    metrics = ServerMetrics(CollectorRegistry(), lambda n: n in registry.names())
    server = grpc_server.build_server(registry, metrics, threads=threads)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await asyncio.Event().wait()


async def _serve_floor_aio(answer: bytes, port: int) -> None:
    import grpc

    async def infer(request: bytes, context) -> bytes:
        return answer

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        _SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _serve_floor_threads(answer: bytes, port: int, threads: int = 64) -> None:
    from concurrent import futures

    import grpc

    def infer(request: bytes, context) -> bytes:
        return answer

    server = grpc.server(futures.ThreadPoolExecutor(threads))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        _SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def serve(variant: str, models: Path, port: int) -> None:
    """Serve ``variant`` (other than ``pod``, which is ``arbiter serve-model``) on
    ``port`` until killed."""
    import uvloop

    if variant in ("threads", "aio"):
        uvloop.run(_serve_alone(models, port, 64 if variant == "threads" else 0))
    elif variant == "floor-aio":
        uvloop.run(_serve_floor_aio(_fixed_response(models), port))
    elif variant == "floor-threads":
        _serve_floor_threads(_fixed_response(models), port)
    else:
        raise SystemExit(f"unknown variant {variant!r}")


# ------------------------------------------------------------------------- measuring
class _GrpcProcess(ServerProcess):
    """A server process whose readiness is a gRPC ``ModelInfer`` that succeeds."""

    def __init__(self, name: str, argv: list[str], port: int, body: bytes, cpus) -> None:
        super().__init__(name, argv, "", cpus=cpus, cwd=REPO)
        self.port, self.body = port, body

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        import grpc

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
                    call = channel.unary_unary(f"/{_SERVICE}/ModelInfer")
                    call(self.body, timeout=2)
                    return
            except grpc.RpcError:
                time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready:\n{self.log_tail()}")


def _switches(pid: int) -> int:
    """Context switches (voluntary + involuntary) of every thread of ``pid``."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except OSError:
            continue
    return total


def _processes(models: Path, body: bytes, cpus) -> list[tuple[str, ServerProcess, list]]:
    """(variant, process, [(transport, address)]) for every variant."""
    out = []
    http, grpc = free_port(), free_port()
    pod = ServerProcess(
        "pod", [sys.executable, "-m", "gateway.cli", "serve-model", "--settings",
                str(models / "gbm.yaml"), "--host", "127.0.0.1", "--http-port", str(http),
                "--grpc-port", str(grpc), "--log-level", "WARNING"],
        f"http://127.0.0.1:{http}/v2/health/ready", cpus=cpus, cwd=REPO)
    out.append(("pod", pod, [("rest", f"http://127.0.0.1:{http}/v2/models/credit-gbm/infer"),
                             ("grpc", f"127.0.0.1:{grpc}")]))
    for variant in VARIANTS[1:]:
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.grpc_servers", "serve", variant,
                "--models", str(models), "--port", str(port)]
        out.append((variant, _GrpcProcess(variant, argv, port, body, cpus),
                    [("grpc", f"127.0.0.1:{port}")]))
    return out


def run(duration_s: float, repeats: int, concurrency: int) -> dict[str, Any]:
    """Start every variant, load each endpoint ``repeats`` times (order reversed on odd
    repeats), stop; the results document."""
    pinning = cores()
    tools = ensure_tools(install=True)
    if not tools.get("h2load"):
        raise SystemExit("h2load (nghttp2-client) is needed for this benchmark")
    models = ensure_models()
    payload = credit_payload(models)
    body = payload.grpc_body("credit-gbm")
    procs = _processes(models, body, pinning.server)
    endpoints = []
    for variant, proc, addresses in procs:
        for transport, address in addresses:
            data = payload.json_body() if transport == "rest" else body
            endpoints.append((variant, proc, Endpoint(variant, transport, address, data,
                                                      lambda outputs: None)))
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    load = os.getloadavg()[0]
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        for _, proc, _ in procs:
            proc.start()
        for _, proc, _ in procs:
            proc.wait_ready()
        for rep in range(repeats):
            for variant, proc, ep in endpoints if rep % 2 == 0 else endpoints[::-1]:
                run_load(ep, concurrency, 1.0, tools=tools, cpus=pinning.generator)
                cpu0, sw0 = tree_cpu_seconds([proc.pid]), _switches(proc.pid)
                res = run_load(ep, concurrency, duration_s, tools=tools, cpus=pinning.generator)
                n = max(res.requests, 1)
                sample = {"rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
                          "cpu_us_per_req": (tree_cpu_seconds([proc.pid]) - cpu0) / n * 1e6,
                          "switches_per_req": (_switches(proc.pid) - sw0) / n,
                          "errors": res.errors}
                samples.setdefault((variant, ep.transport), []).append(sample)
                print(f"[grpc-servers] rep {rep + 1} {variant:16s} {ep.transport:4s} "
                      f"{sample['rps']:7.0f} req/s  {sample['cpu_us_per_req']:5.0f} us CPU/req  "
                      f"{sample['switches_per_req']:5.1f} switches/req", flush=True)
    finally:
        for _, proc, _ in procs:
            proc.stop()
    rows = [{"variant": v, "transport": t, "repeats": len(s),
             **{k: statistics.median(x[k] for x in s) for k in s[0] if k != "errors"},
             "errors": sum(int(x["errors"]) for x in s)} for (v, t), s in samples.items()]
    return {"started": started, "pinning": pinning.describe(), "duration_s": duration_s,
            "repeats": repeats, "concurrency": concurrency,
            "loadavg_1m_start_end": [round(load, 2), round(os.getloadavg()[0], 2)],
            "rows": rows}


def markdown(doc: dict[str, Any]) -> str:
    """The results as a markdown table, each row's req/s also as a ratio to the pod's REST."""
    rest = next((r["rps"] for r in doc["rows"] if r["transport"] == "rest"), None)
    lines = [f"{doc['started']}, {doc['pinning']}; c={doc['concurrency']}, "
             f"{doc['duration_s']:g} s per cell, median of {doc['repeats']}; 1-minute load "
             f"average at start / end: {doc['loadavg_1m_start_end']}", "",
             "| variant | transport | req/s | vs pod REST | p50 ms | p99 ms | CPU us/req "
             "| switches/req |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in doc["rows"]:
        ratio = f"{r['rps'] / rest:.2f}" if rest else "-"
        lines.append(f"| {r['variant']} | {r['transport']} | {r['rps']:.0f} | {ratio} "
                     f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us_per_req']:.0f} "
                     f"| {r['switches_per_req']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="serve one variant (used by the benchmark itself)")
    srv.add_argument("variant", choices=VARIANTS[1:])
    srv.add_argument("--models", type=Path, required=True)
    srv.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args(argv)
    if args.command == "serve":
        serve(args.variant, args.models, args.port)
        return 0
    doc = run(args.duration, args.repeats, args.concurrency)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"grpc-servers-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    text = markdown(doc)
    stem.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
