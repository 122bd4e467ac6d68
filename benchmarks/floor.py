"""The floor: the least a Python server can do to answer an OIP JSON request for the ONNX
credit model (aiohttp + uvloop + orjson, the session run inline on the event loop).

Usage: ``python -m benchmarks.floor --model gbm.onnx --name credit-gbm --port 8090``
"""

import argparse

import numpy as np
import onnxruntime as ort
import orjson
import uvloop
from aiohttp import web


def make_app(model: str, name: str) -> web.Application:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    async def infer(request: web.Request) -> web.Response:
        tensor = orjson.loads(await request.read())["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        results = session.run(outputs, {tensor["name"]: x})
        return web.Response(body=orjson.dumps({"model_name": name, "outputs": [
            {"name": n, "datatype": "INT64" if r.dtype == np.int64 else "FP32",
             "shape": list(r.shape), "data": r.ravel().tolist()}
            for n, r in zip(outputs, results, strict=True)]}), content_type="application/json")

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_post(f"/v2/models/{name}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--name", default="credit-gbm")
    p.add_argument("--port", type=int, default=8090)
    args = p.parse_args()
    web.run_app(make_app(args.model, args.name), host="127.0.0.1", port=args.port,
                print=None, access_log=None, loop=uvloop.new_event_loop())
