"""Explanations attached to decisions: one explanation worker per deployment.

Each decision of a deployment with ``explain`` gets ``explanation: {"status":
"pending"}`` at once; the worker (a process pool, off the event loop) explains the
routed model's prediction for every row of the decision's input, calling that model
through its own OIP client in batches, and the result (done, skipped or failed with the
reason) is written onto the decision. In ``inline`` mode the response waits for it and
carries it in ``parameters.explanation`` (JSON text). A promotion refits the
deployment's explainers in the background.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import orjson

from gateway.config import GatewayConfig, router_models
from gateway.decisions import Decision, DecisionStore
from gateway.metrics import GatewayMetrics
from protos.protocol import InferenceRequest

__all__ = ["ExplainHub"]

log = logging.getLogger("arbiter.explain")


class ExplainHub:
    """The explanation workers of every deployment that asks for explanations."""

    def __init__(self, config: GatewayConfig, store: DecisionStore, metrics: GatewayMetrics):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.workers: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()

    def hook(self, name: str):
        """The callable a deployment calls with each new decision; returns a future of
        the explanation document (awaited in ``inline`` mode)."""

        def explain(decision: Decision, request: InferenceRequest):
            worker = self.workers.get(name)
            if worker is None:
                decision.explanation = {"status": "skipped", "reason": "explainer not started"}
                self.metrics.explanations.labels(name, "skipped").inc()
                return None
            decision.explanation = {"status": "pending"}
            task = asyncio.create_task(self._explain(name, worker, decision, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return task

        return explain

    async def _explain(self, name: str, worker, decision: Decision, request: InferenceRequest):
        rows = np.asarray(request.inputs[0].data, dtype=np.float32)
        rows = rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows.reshape(1, -1)
        futures = [await worker.submit(decision.id, decision.routed, row) for row in rows]
        self.metrics.explanation_queue.labels(name).set(worker.stats.queue_depth)
        results = [(await f).to_dict() for f in futures]
        document = results[0] if len(results) == 1 else _combine(results)
        self.store.attach_explanation(decision.id, document)
        for result in results:
            self.metrics.explanations.labels(name, result["status"]).inc()
            if result.get("latency_s") is not None:
                self.metrics.explanation_duration.labels(name).observe(result["latency_s"])
        self.metrics.explanation_queue.labels(name).set(worker.stats.queue_depth)
        return document

    async def start(self, deployments: dict[str, Any]) -> None:
        """Create and fit the workers (after the model pods have answered)."""
        from explain.worker import ExplanationWorker

        for name, deployment in deployments.items():
            spec = deployment.spec.explain
            if spec is None or spec.mode == "off":
                continue
            worker = ExplanationWorker(spec, self._predictors(deployment, spec))
            errors = await worker.start()
            for model, error in errors.items():
                log.error("%s: explainer for %s could not be fitted: %s", name, model, error)
            self.workers[name] = worker

    def _predictors(self, deployment: Any, spec) -> dict[str, Any]:
        from explain.client import ModelEndpoint

        predictors = {}
        for key in router_models(deployment.spec.router):
            upstream = deployment.upstreams[key]
            meta = upstream.metadata()
            predictors[key] = ModelEndpoint(
                url=upstream.ref.url, model=upstream.ref.name,
                input_name=meta.inputs[0].name, input_datatype=meta.inputs[0].datatype,
                output_name=spec.output, model_version=upstream.ref.version,
                timeout_s=spec.timeout_s, token=upstream.ref.token(),
                **{k: str(v) for k, v in (("ca_file", upstream.ref.ca_file),
                                          ("client_cert", upstream.ref.client_cert),
                                          ("client_key", upstream.ref.client_key)) if v},
            )
        return predictors

    def on_promotion(self, name: str) -> None:
        """Refit the deployment's explainers in the background after a promotion."""
        worker = self.workers.get(name)
        if worker is None:
            return
        task = asyncio.create_task(worker.refit())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace_s: float = 3.0) -> None:
        """Let pending explanations finish for up to ``grace_s`` seconds (recorded as
        failed with reason ``closed`` after that), then stop the pools."""
        await asyncio.gather(*(w.close(grace_s=grace_s) for w in self.workers.values()))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


def _combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = {r["status"] for r in results}
    status = "done" if statuses == {"done"} else "failed" if "failed" in statuses else "skipped"
    return {"status": status, "rows": results}


def explanation_parameter(document: dict[str, Any]) -> str:
    """The explanation as the JSON text carried in response ``parameters``."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY).decode()
