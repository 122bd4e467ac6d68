"""The cost of auth and of TLS on a model pod (ONNX credit model) at 16 concurrent
requests, REST and gRPC: plain, bearer token (auth), TLS, and both.

The pod runs pinned to the server core (``harness.cores``), the load generator (this
script: aiohttp for REST, ``grpc.aio`` for gRPC, both keeping their connections) on the
other; the server's CPU per request comes from /proc. The generator is the same in every
column, so the columns compare; absolute req/s are below the C load generators' of
``benchmarks/compare.py``.

    python -m benchmarks.security_cost [--duration 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    REPO,
    RESULTS,
    ServerProcess,
    cores,
    credit_payload,
    ensure_models,
    free_port,
    tree_cpu_seconds,
)

CONCURRENCY = 16
MODES = ("plain", "auth", "tls", "auth+tls")


def _credentials(folder: Path) -> tuple[Path, str, dict[str, Path]]:
    import trustme
    import yaml

    from protos.server.auth import hash_token

    token = "bench-" + os.urandom(16).hex()
    tokens = folder / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"name": "bench", "sha256": hash_token(token),
                                       "scopes": ["infer"]}]))
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return tokens, token, files


def _start(mode: str, models: Path, tokens: Path, files: dict[str, Path], cpus):
    http, grpc = free_port(), free_port()
    argv = [sys.executable, "-m", "gateway.cli", "serve-model", "--settings",
            str(models / "gbm.yaml"), "--framework", "onnx", "--model", str(models / "gbm.onnx"),
            "--http-port", str(http), "--grpc-port", str(grpc), "--log-level", "WARNING"]
    if "auth" in mode:
        argv += ["--auth-tokens-file", str(tokens)]
    if "tls" in mode:
        argv += ["--tls-cert", str(files["cert"]), "--tls-key", str(files["key"])]
    scheme = "https" if "tls" in mode else "http"
    proc = ServerProcess(f"security-{mode}", argv, f"{scheme}://127.0.0.1:{http}/v2/health/ready",
                         cpus=cpus, cwd=REPO).start()
    context = ssl.create_default_context(cafile=str(files["ca"]))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(proc.ready_url, timeout=1,
                                        context=context if scheme == "https" else None) as r:
                if r.status == 200:
                    return proc, http, grpc
        except OSError:
            time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"{mode}: pod not ready:\n{proc.log_tail()}")


async def _rest(url: str, body: bytes, headers: dict, context, duration_s: float) -> list[float]:
    import aiohttp

    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, ssl=context or False)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + duration_s

        async def worker() -> None:
            while (start := time.perf_counter()) < stop:
                async with session.post(url, data=body, headers=headers) as reply:
                    await reply.read()
                    assert reply.status == 200, reply.status
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies


async def _grpc(target: str, body: bytes, metadata, ca: bytes | None,
                duration_s: float) -> list[float]:
    import grpc

    from protos import open_inference_pb2 as pb
    from protos import open_inference_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest.FromString(body)
    channel = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca)) if ca
               else grpc.aio.insecure_channel(target))
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    latencies: list[float] = []
    stop = time.perf_counter() + duration_s

    async def worker() -> None:
        while (start := time.perf_counter()) < stop:
            await stub.ModelInfer(request, metadata=metadata, timeout=10)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await channel.close()
    return latencies


def _measure(mode: str, transport: str, proc, http: int, grpc: int, token: str,
             files: dict[str, Path], payload, duration_s: float) -> dict:
    tls = "tls" in mode
    context = ssl.create_default_context(cafile=str(files["ca"])) if tls else None
    headers = {"Authorization": f"Bearer {token}"} if "auth" in mode else {}
    metadata = (("authorization", f"Bearer {token}"),) if "auth" in mode else None

    def load(seconds: float) -> list[float]:
        if transport == "rest":
            url = f"{'https' if tls else 'http'}://127.0.0.1:{http}/v2/models/credit-gbm/infer"
            return asyncio.run(_rest(url, payload.json_body(), headers, context, seconds))
        ca = files["ca"].read_bytes() if tls else None
        return asyncio.run(_grpc(f"127.0.0.1:{grpc}", payload.grpc_body("credit-gbm"),
                                 metadata, ca, seconds))

    load(1.0)  # warm up: connections, TLS sessions, JIT-free but cache-warm paths
    cpu0 = tree_cpu_seconds([proc.pid])
    started = time.perf_counter()
    latencies = load(duration_s)
    elapsed = time.perf_counter() - started
    cpu = tree_cpu_seconds([proc.pid]) - cpu0
    ms = np.asarray(latencies) * 1000
    return {"mode": mode, "transport": transport, "requests": len(latencies),
            "rps": round(len(latencies) / elapsed, 1), "p50_ms": round(float(np.median(ms)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "server_cpu_ms_per_req": round(cpu * 1000 / max(1, len(latencies)), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    args = parser.parse_args(argv)
    models = ensure_models()
    payload = credit_payload(models)
    pinning = cores()
    if pinning.generator is not None:
        os.sched_setaffinity(0, pinning.generator)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_security_") as tmp:
        tokens, token, files = _credentials(Path(tmp))
        for mode in MODES:
            proc, http, grpc = _start(mode, models, tokens, files, pinning.server)
            try:
                for transport in ("rest", "grpc"):
                    row = _measure(mode, transport, proc, http, grpc, token, files, payload,
                                   args.duration)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                proc.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "security_cost.json").write_text(json.dumps(
        {"concurrency": CONCURRENCY, "pinning": pinning.describe(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
