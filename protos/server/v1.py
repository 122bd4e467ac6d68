"""KServe V1 prediction protocol over REST, for clients migrating from KServe.

``GET /v1/models``, ``GET /v1/models/{m}``, ``POST /v1/models/{m}:predict`` with
``{"instances": [...]}`` -> ``{"predictions": [...]}``. Instances become one tensor of the
model's first input (its datatype); predictions are its first declared output (for the
credit models, ``label``). Served by the same registry as the OIP routes, so a gateway
deployment answered over V1 is still a decision: its id is in the ``x-arbiter-*``
headers. ``:explain`` is not part of this protocol here (501).

Source: KServe "V1 Inference Protocol" (kserve/docs, data plane v1).
"""

from __future__ import annotations

import numpy as np
from aiohttp import web

from protos.codecs import json as jsonc
from protos.errors import InvalidRequestError, UnsupportedError
from protos.protocol import InferenceRequest, RequestedOutput, Tensor
from protos.server.http import MAX_ELEMENTS_KEY, REGISTRY_KEY, json_response

__all__ = ["add_v1_routes"]


async def _models(request: web.Request) -> web.Response:
    return json_response({"models": request.app[REGISTRY_KEY].names()})


async def _model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    ready = request.app[REGISTRY_KEY].model_ready(name)
    return json_response({"name": name, "ready": ready}, 200 if ready else 503)


def _instances(doc: object, spec, max_elements: int) -> np.ndarray:
    """The instances as one array of the input's datatype, decoded by the OIP JSON
    rules (rectangular, every value unchanged)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
        raise InvalidRequestError("V1 request body must be {\"instances\": [...]}")
    instances = doc["instances"]
    if not instances:
        raise InvalidRequestError("'instances' is empty")
    return jsonc.nested_array(instances, spec.datatype, spec.name, max_elements)


async def _predict(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    name = request.match_info["model"]
    metadata = registry.get(name).metadata()
    if not metadata.inputs or not metadata.outputs:
        raise UnsupportedError(f"model {name!r} does not declare its inputs and outputs")
    spec = metadata.inputs[0]
    limit = request.app[MAX_ELEMENTS_KEY]
    data = _instances(jsonc.loads(await request.read()), spec, limit)
    tensor = Tensor(spec.name, spec.datatype, tuple(int(d) for d in data.shape), data)
    output = metadata.outputs[0].name
    inference = InferenceRequest(name, [tensor], outputs=[RequestedOutput(output)])
    inference.headers = {k.lower(): v for k, v in request.headers.items()}
    response = await registry.infer(inference)
    predictions = response.output(output).data
    if predictions.dtype == object:
        predictions = np.array([v.decode(errors="replace") for v in predictions.ravel()],
                               dtype=object).reshape(predictions.shape)
    return json_response({"predictions": predictions.tolist()}, headers=response.headers)


async def _explain(request: web.Request) -> web.Response:
    raise UnsupportedError(
        "V1 :explain is not served; a gateway explains decisions off the request path "
        "(GET /v2/decisions/{id}/explanation)"
    )


def add_v1_routes(app: web.Application) -> None:
    """Add the V1 routes to an OIP app."""
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:[^/:]+}", _model)
    app.router.add_post("/v1/models/{model:[^/:]+}:predict", _predict)
    app.router.add_post("/v1/models/{model:[^/:]+}:explain", _explain)
