"""The OIP batch clients against real servers on port 0 (aiohttp REST, grpcio gRPC)."""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import numpy as np
import orjson
import pytest
from aiohttp import web

from explain.client import ModelEndpoint, connect
from protos.errors import InferenceError, UpstreamUnavailableError


class OipServer:
    """A minimal OIP REST server for one sklearn classifier ('credit')."""

    def __init__(self, model):
        self.model = model
        self.requests = 0
        self.connections: set[tuple] = set()
        self.bodies: list[dict] = []

    async def infer(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != "credit":
            return web.json_response({"error": "model not found"}, status=404)
        body = orjson.loads(await request.read())
        self.requests += 1
        self.bodies.append(body)
        self.connections.add(request.transport.get_extra_info("peername"))
        tensor = body["inputs"][0]
        X = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        proba = self.model.predict_proba(X)
        outputs = [
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": list(proba.shape),
                "data": proba.ravel().tolist(),
            }
        ]
        return web.Response(
            body=orjson.dumps({"model_name": "credit", "outputs": outputs}),
            content_type="application/json",
        )


@pytest.fixture
async def rest_server(credit):
    server = OipServer(credit.lr)
    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", server.infer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


async def test_rest_client_returns_model_probabilities(credit, rest_server):
    client = connect(ModelEndpoint(rest_server.url, "credit", input_name="x"))
    batches = [credit.X[800:900], credit.X[900:950], credit.X[950:951]]
    for X in batches:
        got = await asyncio.to_thread(client, X)
        np.testing.assert_allclose(got, credit.lr.predict_proba(X), rtol=0, atol=1e-12)
    assert rest_server.requests == 3
    assert len(rest_server.connections) == 1  # keep-alive
    body = rest_server.bodies[0]
    assert body["inputs"][0]["name"] == "x" and body["inputs"][0]["datatype"] == "FP32"
    assert body["inputs"][0]["shape"] == [100, 20]
    assert body["outputs"] == [{"name": "probabilities"}]
    client.close()


async def test_rest_client_errors(credit, rest_server):
    unknown = connect(ModelEndpoint(rest_server.url, "nope"))
    wrong_output = connect(ModelEndpoint(rest_server.url, "credit", output_name="label"))
    down = connect(ModelEndpoint("http://127.0.0.1:1", "credit", timeout_s=2))
    try:
        with pytest.raises(InferenceError, match="HTTP 404: model not found"):
            await asyncio.to_thread(unknown, credit.X[:2])
        with pytest.raises(InferenceError, match="no output 'label'"):
            await asyncio.to_thread(wrong_output, credit.X[:2])
        with pytest.raises(UpstreamUnavailableError):
            await asyncio.to_thread(down, credit.X[:2])
    finally:
        for client in (unknown, wrong_output, down):
            client.close()


def test_unsupported_scheme():
    with pytest.raises(ValueError, match="unsupported model URL"):
        connect(ModelEndpoint("ftp://host:1", "credit"))


def test_grpc_client_returns_model_probabilities(credit):
    from protos import open_inference_pb2 as pb
    from protos import open_inference_pb2_grpc as pb_grpc

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        calls = 0

        def ModelInfer(self, request, context):
            Servicer.calls += 1
            tensor = request.inputs[0]
            X = np.asarray(tensor.contents.fp32_contents, np.float32).reshape(list(tensor.shape))
            proba = credit.lr.predict_proba(X)
            out = pb.ModelInferResponse.InferOutputTensor(
                name=request.outputs[0].name, datatype="FP64", shape=list(proba.shape)
            )
            return pb.ModelInferResponse(
                model_name=request.model_name,
                outputs=[out],
                raw_output_contents=[proba.astype("<f8").tobytes()],
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = connect(ModelEndpoint(f"grpc://127.0.0.1:{port}", "credit"))
        X = credit.X[800:850]
        np.testing.assert_allclose(client(X), credit.lr.predict_proba(X), rtol=0, atol=1e-12)
        assert Servicer.calls == 1
        client.close()
    finally:
        server.stop(None).wait()


async def test_rest_client_splits_large_batches(credit, rest_server):
    client = connect(ModelEndpoint(rest_server.url, "credit", input_name="x", max_rows_per_call=64))
    X = credit.X[:150]
    got = await asyncio.to_thread(client, X)
    np.testing.assert_allclose(got, credit.lr.predict_proba(X), rtol=0, atol=1e-12)
    assert rest_server.requests == 3  # 64 + 64 + 22 rows
    assert [b["inputs"][0]["shape"][0] for b in rest_server.bodies] == [64, 64, 22]
    client.close()
