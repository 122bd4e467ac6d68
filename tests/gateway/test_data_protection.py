"""Data protection: what a decision record keeps of an applicant's inputs
(``store.inputs``: store, hash, drop) through a real gateway, and the retention purge
(``store.retention_days``) deleting old decisions with everything attached to them on
every backend, while what the routers learned stays."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from gateway.decisions import build_store
from protos.errors import DecisionNotFoundError
from routers.state import ArmStats, Learning
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.gateway.stores import KINDS, decision, eventually, feedback_doc, store_spec
from tests.servers import ServerThread, local_options

ROW = [0.25 * i for i in range(20)]
DOC = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": ROW}]}
DAY_S = 86_400


@pytest.fixture(scope="module")
def pod() -> Iterator[ServerThread]:
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("m"))) as server:
        yield server


def _gateway(pod: ServerThread, inputs: str) -> ServerThread:
    config = GatewayConfig.model_validate({
        "models": {"a": {"url": f"grpc://{pod.grpc_target}", "name": "m"}},
        "deployments": {"credit": {"router": {"kind": "weighted", "weights": {"a": 1}}}},
        "store": {"kind": "memory", "inputs": inputs},
    })
    return ServerThread(lambda: build_gateway(config, local_options(), 20)[1])


def _recorded_inputs(gateway: ServerThread) -> tuple[dict, dict]:
    status, _, raw = http_call("POST", gateway.http_url + "/v2/models/credit/infer", DOC)
    assert status == 200
    decision_id = json.loads(raw)["parameters"]["decision_id"]
    status, _, raw = http_call("GET", f"{gateway.http_url}/v2/decisions/{decision_id}")
    assert status == 200
    record = json.loads(raw)
    status, _, raw = http_call("POST", gateway.http_url + "/v2/deployments/credit/feedback",
                               {"decision_id": decision_id, "truth": [1]})
    assert status == 200 and json.loads(raw)["rewards"] == {"a": 1.0}  # truth still scores
    return record["inputs"], record["outputs"]


@pytest.mark.parametrize("mode", ["store", "hash", "drop"])
def test_store_inputs_mode(pod: ServerThread, mode: str) -> None:
    with _gateway(pod, mode) as gateway:
        inputs, outputs = _recorded_inputs(gateway)
    tensor = {"datatype": "FP32", "shape": [1, 20], "data": ROW}
    canonical = json.dumps(tensor, sort_keys=True, separators=(",", ":")).encode()
    expected = {
        "store": {"input": tensor},
        "hash": {"input": {"sha256": hashlib.sha256(canonical).hexdigest(),
                           "datatype": "FP32", "shape": [1, 20]}},
        "drop": {},
    }[mode]
    assert inputs == expected
    assert outputs["a"]["label"]["data"] == [1]  # outputs are kept whatever the mode


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_purge_deletes_old_decisions_with_everything_attached(
        kind: str, request: pytest.FixtureRequest, tmp_path) -> None:
    store = build_store(store_spec(kind, request, tmp_path))
    await store.open(["dep"])
    try:
        now = time.time()
        old = decision(at=now - 10 * DAY_S, shadows=["gbm"])
        new = decision(at=now - 1 * DAY_S, shadows=["gbm"])
        for made in (old, new):
            await store.create(made, wait=True)
            store.add_shadow_output(made.id, "gbm", {"label": {"data": [1]}}, 2.0)
            store.attach_explanation(made.id, {"status": "done"})
            learning = Learning("dep", {"lr": 1.0})
            await store.record_feedback(made, feedback_doc(1.0, ["lr"]), {"lr": 1.0}, learning)
        assert await store.purge(now - 7 * DAY_S) == 1
        with pytest.raises(DecisionNotFoundError):
            await store.get(old.id)
        kept = await store.get(new.id)
        assert kept.feedback is not None and kept.explanation == {"status": "done"}
        assert kept.outputs["gbm"] == {"label": {"data": [1]}}
        assert store.cached(old.id) is None
        assert store.state.arm_stats("dep")["lr"] == ArmStats(2, 2.0)  # what was learned stays
        assert await store.purge(now - 7 * DAY_S) == 0
    finally:
        await store.close()


async def test_retention_days_purges_at_open(tmp_path, request) -> None:
    spec = store_spec("sqlite", request, tmp_path)
    store = build_store(spec)
    await store.open(["dep"])
    old = decision(at=time.time() - 40 * DAY_S)
    await store.create(old, wait=True)
    await store.close()
    kept = build_store(spec.model_copy(update={"retention_days": 30}))
    await kept.open(["dep"])
    try:
        async def gone() -> bool:
            try:
                await kept.get(old.id)
            except DecisionNotFoundError:
                return True
            return False

        assert await eventually(gone, 5.0)
    finally:
        await kept.close()
