"""Fallback closed-loop load generator, used when ``wrk`` / ``h2load`` are not installed.

REST: N keep-alive HTTP/1.1 connections on uvloop, each a raw asyncio protocol writing a
pre-built request and reading the response by ``Content-Length`` (no HTTP client library
on the hot path). gRPC: N tasks over ``ceil(N / 16)`` ``grpc.aio`` channels sending
pre-serialized bytes (no protobuf work per request).

Usage::

    python -m benchmarks.pyload {rest,grpc} ADDRESS BODY_FILE --concurrency N
        --duration S --out RESULT.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


class _HttpConn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        length = 0
        for line in bytes(self.buf[:end]).lower().split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:])
        if len(self.buf) >= end + 4 + length:
            status = int(self.buf[9:12])
            del self.buf[:end + 4 + length]
            self.waiter.set_result(status)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))


async def _rest(url: str, body: bytes, conc: int, stop_at: float, lat: list, errs: list):
    parts = urlsplit(url)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        _, conn = await loop.create_connection(_HttpConn, parts.hostname, parts.port)
        while (t0 := time.perf_counter()) < stop_at:
            conn.waiter = loop.create_future()
            conn.transport.write(request)
            try:
                status = await conn.waiter
            except ConnectionError:
                errs.append(1)
                return
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errs.append(1)
        conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(conc)))


async def _grpc(address: str, body: bytes, conc: int, stop_at: float, lat: list, errs: list):
    import grpc

    channels = [grpc.aio.insecure_channel(address) for _ in range(max(1, -(-conc // 16)))]
    calls = [ch.unary_unary(GRPC_INFER) for ch in channels]

    async def worker(i: int) -> None:
        call = calls[i % len(calls)]
        while (t0 := time.perf_counter()) < stop_at:
            try:
                await call(body, timeout=10)
            except grpc.aio.AioRpcError:
                errs.append(1)
                continue
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(i) for i in range(conc)))
    for ch in channels:
        await ch.close()


async def _main(args: argparse.Namespace, body: bytes) -> dict:
    lat: list[float] = []
    errs: list[int] = []
    run = _rest if args.transport == "rest" else _grpc
    start = time.perf_counter()
    await run(args.address, body, args.concurrency, start + args.duration, lat, errs)
    elapsed = time.perf_counter() - start
    ms = np.asarray(lat) * 1e3 if lat else np.asarray([np.nan])
    return {"requests": len(lat), "duration_s": elapsed, "errors": len(errs),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transport", choices=["rest", "grpc"])
    parser.add_argument("address", help="REST: infer URL; gRPC: host:port")
    parser.add_argument("body", help="file with the JSON body / serialized request")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    body = Path(args.body).read_bytes()
    try:
        import uvloop

        result = uvloop.run(_main(args, body))
    except ImportError:
        result = asyncio.run(_main(args, body))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
