"""The overload test's load generator, run as its own process.

``python -m tests.gateway.overload_client URL CLIENTS SECONDS`` sends the test's request
from CLIENTS concurrent clients for SECONDS seconds and prints one JSON list of
``[seconds, status, retry_after]`` per request on stdout.

It runs apart from pytest because the measured latencies are the client's: in the
pytest process, which holds every module and object the suite has loaded (about 1 GB by
then), a full garbage collection pauses the clients' event loop for tens of
milliseconds and that pause would be counted as the gateway's.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import aiohttp

BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                               "data": [0.5] * 20}]}).encode()
QUEUE_TIMEOUT = 4290  # a 429 after waiting out queue_timeout_ms: counted apart


async def _client(session: aiohttp.ClientSession, url: str, deadline: float,
                  results: list[tuple[float, int, str | None]]) -> None:
    await asyncio.sleep(random.uniform(0.0, 1.0))  # clients arrive over the first second
    while time.monotonic() < deadline:
        start = time.monotonic()
        retry_after = None
        try:
            async with session.post(url, data=BODY,
                                    headers={"Content-Type": "application/json"}) as reply:
                body = await reply.read()
                status, retry_after = reply.status, reply.headers.get("Retry-After")
                if status == 429 and b"queue_timeout_ms" in body:
                    status = QUEUE_TIMEOUT
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        results.append((time.monotonic() - start, status, retry_after))
        if status in (429, 503, QUEUE_TIMEOUT):  # back off as asked, with jitter (no herd)
            await asyncio.sleep(float(retry_after or 1) * random.uniform(0.5, 1.5))


async def load(url: str, clients: int, seconds: float) -> list[tuple[float, int, str | None]]:
    """Run the clients; returns ``(seconds, status, Retry-After)`` per request."""
    results: list[tuple[float, int, str | None]] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_client(session, url, deadline, results)
                               for _ in range(clients)))
    return results


if __name__ == "__main__":
    url, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    json.dump(asyncio.run(load(url, clients, seconds)), sys.stdout)
