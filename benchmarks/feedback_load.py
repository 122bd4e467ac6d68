"""Feedback load against a gateway: make decisions, then send one feedback for each,
``--concurrency`` in flight, and count the acknowledged ones.

Phase 1 (not timed) posts ``--decisions`` inference requests to
``/v2/models/{deployment}/infer`` (16 in flight) and keeps each answer's
``x-arbiter-decision-id``. Phase 2 posts ``{"decision_id", "reward": 1}`` to
``/v2/deployments/{deployment}/feedback`` for those decisions, each once, for
``--duration`` seconds or until they run out; a feedback counts when it is answered
200 with status ``accepted`` (the gateway answers after the commit). Keep-alive
HTTP/1.1 over raw asyncio connections, as :mod:`benchmarks.pyload`.

Usage::

    python -m benchmarks.feedback_load http://127.0.0.1:8000 DEPLOYMENT BODY_FILE
        --decisions 10000 --concurrency 8 --duration 5 --out RESULT.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

__all__ = ["main"]


class _Conn(asyncio.Protocol):
    """One keep-alive connection; :meth:`send` returns (status, head, body)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buf[:end]).lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:])
        if len(self.buf) >= end + 4 + length:
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            self.waiter.set_result((int(head[9:12]), head, body))

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    async def send(self, request: bytes) -> tuple[int, bytes, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def _post(host: str, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _decision_id(head: bytes) -> str | None:
    for line in head.split(b"\r\n"):
        if line.startswith(b"x-arbiter-decision-id:"):
            return line[22:].strip().decode()
    return None


async def _connect(url: str, n: int) -> list[_Conn]:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    conns = [await loop.create_connection(_Conn, parts.hostname, parts.port) for _ in range(n)]
    return [conn for _, conn in conns]


async def _decide(url: str, deployment: str, body: bytes, count: int) -> list[str]:
    host = urlsplit(url).netloc
    request = _post(host, f"/v2/models/{deployment}/infer", body)
    conns = await _connect(url, 16)
    ids: list[str] = []
    remaining = iter(range(count))

    async def worker(conn: _Conn) -> None:
        for _ in remaining:
            status, head, _ = await conn.send(request)
            decision_id = _decision_id(head)
            if status != 200 or decision_id is None:
                raise RuntimeError(f"inference answered {status}")
            ids.append(decision_id)

    await asyncio.gather(*(worker(c) for c in conns))
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return ids


async def _feedback(url: str, deployment: str, ids: Iterator[str], conc: int,
                    duration_s: float) -> dict[str, float]:
    host = urlsplit(url).netloc
    path = f"/v2/deployments/{deployment}/feedback"
    conns = await _connect(url, conc)
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s

    async def worker(conn: _Conn) -> None:
        nonlocal errors
        for decision_id in ids:
            if time.perf_counter() >= stop_at:
                return
            body = json.dumps({"decision_id": decision_id, "reward": 1}).encode()
            t0 = time.perf_counter()
            status, _, reply = await conn.send(_post(host, path, body))
            if status == 200 and json.loads(reply).get("status") == "accepted":
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    ms = np.asarray(lat) * 1e3 if lat else np.asarray([np.nan])
    return {"acknowledged": len(lat), "duration_s": elapsed, "per_s": len(lat) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "errors": errors}


async def _main(args: argparse.Namespace, body: bytes) -> dict[str, float]:
    ids = await _decide(args.url, args.deployment, body, args.decisions)
    result = await _feedback(args.url, args.deployment, iter(ids), args.concurrency,
                             args.duration)
    result["decisions"] = len(ids)
    result["ran_out"] = result["acknowledged"] + result["errors"] >= len(ids)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="gateway base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("deployment")
    parser.add_argument("body", help="file with the JSON inference body")
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
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
