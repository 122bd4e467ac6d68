"""A fake model pod that costs almost nothing per request: it answers every OIP REST
inference with the same pre-built JSON response (the ONNX credit model's ``label`` and
``probabilities`` for one row), without reading the inputs.

It lets a gateway benchmark measure the gateway rather than the model: a raw asyncio
protocol on uvloop (no web framework), keep-alive HTTP/1.1, requests read by
``Content-Length``. Routes: ``POST /v2/models/{name}/infer``, ``GET /v2/models/{name}``
(metadata), ``GET /v2/health/ready`` and ``/v2/health/live``; anything else is 404.

Usage: ``python -m benchmarks.fake_pod --name credit-gbm --port 8090``
"""

from __future__ import annotations

import argparse
import asyncio
import json

__all__ = ["main"]

_PROBS = [0.1234, 0.8766]


def _response(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _routes(name: str) -> dict[tuple[bytes, bytes], bytes]:
    tensor = {"datatype": "FP32", "shape": [-1, 20], "name": "input"}
    metadata = {"name": name, "versions": ["1"], "platform": "fake",
                "inputs": [tensor],
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]}
    infer = {"model_name": name, "model_version": "1", "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": _PROBS}]}
    ok = _response("200 OK", b'{"ready": true}')
    return {
        (b"POST", f"/v2/models/{name}/infer".encode()): _response(
            "200 OK", json.dumps(infer).encode()),
        (b"GET", f"/v2/models/{name}".encode()): _response(
            "200 OK", json.dumps(metadata).encode()),
        (b"GET", f"/v2/models/{name}/ready".encode()): ok,
        (b"GET", b"/v2/health/ready"): ok,
        (b"GET", b"/v2/health/live"): ok,
    }


class _Server(asyncio.Protocol):
    def __init__(self, routes: dict[tuple[bytes, bytes], bytes]) -> None:
        self.routes = routes
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[:end + 4 + length]
            method, path = head.split(b" ", 2)[:2]
            reply = self.routes.get((method, path.split(b"?", 1)[0]))
            assert self.transport is not None
            self.transport.write(reply or _response("404 Not Found", b'{"error": "not found"}'))


async def _serve(name: str, host: str, port: int) -> None:
    routes = _routes(name)
    server = await asyncio.get_running_loop().create_server(
        lambda: _Server(routes), host, port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="credit-gbm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.run(_serve(args.name, args.host, args.port))
    except ImportError:
        asyncio.run(_serve(args.name, args.host, args.port))


if __name__ == "__main__":
    main()
