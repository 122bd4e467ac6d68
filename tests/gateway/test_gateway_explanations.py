"""Explanations by policy through a real gateway and real pods: every refusal explained
(``when: refusals``, the adverse outcome ``label`` 0), sampling and shedding only of the
others and counted, ``GET /v2/decisions/{id}/explanation`` (200, 202, 404, on demand),
inline answers within their deadline, and on-demand explanations when the store keeps
no inputs."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from gateway.app import build_gateway
from tests.fakes import http_call
from tests.gateway.conftest import gateway_config, metric_value, rest_infer
from tests.servers import ServerThread, local_options

ADVERSE = {"output": "label", "values": [0]}


def tree_shap(credit_models: dict[str, Path], **extra: Any) -> dict[str, Any]:
    """An explain block: exact Tree SHAP of the gbm's scikit-learn twin (milliseconds)."""
    return {"method": "tree_shap", "encoding": str(credit_models["encoding"]),
            "model_artifact": {"gbm": str(credit_models["gbm_sklearn"])}, "workers": 1,
            "adverse": ADVERSE, **extra}


GBM = {"kind": "weighted", "weights": {"gbm": 1}}


@pytest.fixture(scope="module")
def explaining(lr_pod, gbm_pod, mlp_pod, slow_pod, credit_models,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A gateway whose deployments explain refusals (``refusals``), a quarter of the
    others too (``sampled``, room for one at a time), inline (``inline``), every decision
    slowly (``slow``: Kernel SHAP of a pod that takes 0.5 s per call), or nothing
    (``plain``)."""
    kernel = {"method": "kernel_shap", "encoding": str(credit_models["encoding"]),
              "reference_data": str(credit_models["reference"]),
              "adverse": {"output": "label", "values": [0, 1]},  # every decision
              "kernel_shap_nsamples": 64, "background_size": 10, "workers": 1}
    deployments = {
        "refusals": {"router": GBM, "explain": tree_shap(credit_models)},
        "sampled": {"router": GBM, "explain": tree_shap(credit_models, when="sample",
                                                        sample_rate=0.25, max_queue=1)},
        "inline": {"router": GBM, "explain": tree_shap(credit_models, mode="inline",
                                                       when="all")},
        "slow": {"router": {"kind": "weighted", "weights": {"slow": 1}}, "explain": kernel},
        "slow-inline": {"router": {"kind": "weighted", "weights": {"slow": 1}},
                        "explain": {**kernel, "mode": "inline", "inline_deadline_s": 0.3}},
        "plain": {"router": GBM},
    }
    extra = {"slow": {"url": f"grpc://{slow_pod.grpc_target}", "name": "slow"}}
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    config = gateway_config(pods, tmp_path_factory.mktemp("explain") / "arbiter.sqlite",
                            deployments, extra)
    with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as server:
        yield server


def decide(url: str, deployment: str, rows: np.ndarray, **extra: Any) -> list[dict]:
    """One decision per row: ``{"decision_id", "label", "parameters"}``."""
    out = []
    for row in rows:
        status, _, doc = rest_infer(url, deployment, row[None], **extra)
        assert status == 200, doc
        label = next(o["data"][0] for o in doc["outputs"] if o["name"] == "label")
        out.append({"decision_id": doc["parameters"]["decision_id"], "label": label,
                    "parameters": doc["parameters"]})
    return out


def explanation(url: str, decision_id: str) -> tuple[int, dict, dict]:
    status, headers, body = http_call("GET", f"{url}/v2/decisions/{decision_id}/explanation")
    return status, headers, json.loads(body)


def wait_explained(url: str, decision_id: str, timeout_s: float = 60) -> dict:
    """The explanation document once ``GET .../explanation`` answers 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, doc = explanation(url, decision_id)
        if status == 200:
            return doc
        assert status == 202 and doc["status"] == "pending", (status, doc)
        assert time.monotonic() < deadline, f"{decision_id} still pending: {doc}"
        time.sleep(0.1)


def record(url: str, decision_id: str) -> dict:
    status, _, body = http_call("GET", f"{url}/v2/decisions/{decision_id}")
    assert status == 200
    return json.loads(body)


def metrics(url: str) -> str:
    return http_call("GET", url + "/metrics")[2].decode()


def test_every_refusal_is_explained_and_no_approval(explaining, holdout_x, credit_models):
    url = explaining.http_url
    decisions = decide(url, "refusals", holdout_x[:60])
    refused = [d for d in decisions if d["label"] == 0]
    approved = [d for d in decisions if d["label"] == 1]
    assert len(refused) >= 8 and approved
    gbm = joblib.load(credit_models["gbm_sklearn"])
    for decision, row in zip(decisions, holdout_x[:60], strict=True):
        if decision["label"] != 0:
            continue
        doc = wait_explained(url, decision["decision_id"])
        assert doc["status"] == "done" and doc["kind"] == "adverse" and doc["model"] == "gbm"
        assert doc["explained_at"] >= doc["decided_at"]
        shap = doc["explanation"]
        probability = gbm.predict_proba(row[None])[0]
        np.testing.assert_allclose(shap["prediction"], probability, atol=1e-6)
        log_odds = math.log(probability[1] / probability[0])  # Tree SHAP adds up to it
        assert sum(shap["shap_values"].values()) + shap["expected_value"] == \
            pytest.approx(log_odds, abs=1e-4)
    for decision in approved:
        assert record(url, decision["decision_id"])["explanation"] is None
    text = metrics(url)
    assert metric_value(text, "arbiter_explanations_total", deployment="refusals",
                        status="done") == len(refused)
    assert metric_value(text, "arbiter_explanations_shed_total", deployment="refusals") == 0


def test_sampling_and_shedding_touch_only_approvals_and_are_counted(explaining, holdout_x):
    """One at a time, each explanation finished before the next decision: approvals are
    sampled (a quarter explained), never shed. Then eight at a time with room for one
    explanation: approvals are shed too. Every refusal is explained; every approval left
    out is counted by its reason."""
    url = explaining.http_url
    calm = []
    for row in holdout_x[:80]:
        decision = decide(url, "sampled", row[None])[0]
        if record(url, decision["decision_id"])["explanation"]["status"] == "pending":
            wait_explained(url, decision["decision_id"])
        calm.append(decision)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        busy = [d for part in pool.map(lambda rows: decide(url, "sampled", rows),
                                       np.array_split(holdout_x[80:200], 16))
                for d in part]
    decisions = calm + busy
    refused = [d for d in decisions if d["label"] == 0]
    for decision in refused:
        assert wait_explained(url, decision["decision_id"])["status"] == "done"
    time.sleep(0.5)  # the last best-effort ones finish
    outcomes = {"calm": collections.Counter(), "busy": collections.Counter()}
    for phase, group in (("calm", calm), ("busy", busy)):
        for decision in group:
            if decision["label"] != 0:
                doc = record(url, decision["decision_id"])["explanation"]
                outcomes[phase][doc["reason"] if doc["status"] == "skipped" else doc["status"]] += 1
    calm_, busy_ = outcomes["calm"], outcomes["busy"]
    assert set(calm_) == {"done", "not_sampled"} and min(calm_.values()) > 0, calm_
    assert busy_["queue_full"] > 0, busy_
    text = metrics(url)
    for reason in ("not_sampled", "queue_full"):
        assert metric_value(text, "arbiter_explanations_shed_total", deployment="sampled",
                            reason=reason) == calm_[reason] + busy_[reason]
    assert calm_.total() + busy_.total() == len(decisions) - len(refused)
    assert metric_value(text, "arbiter_explanations_total", deployment="sampled",
                        status="done") == len(refused) + calm_["done"] + busy_["done"]


def test_get_explanation_statuses_and_on_demand(explaining, holdout_x):
    url = explaining.http_url
    status, _, doc = explanation(url, "no-such-decision")
    assert status == 404 and "not found" in doc["error"]
    plain = decide(url, "plain", holdout_x[:1])[0]
    status, _, doc = explanation(url, plain["decision_id"])
    assert status == 404 and "does not explain" in doc["error"]

    slow = decide(url, "slow", holdout_x[:1])[0]  # Kernel SHAP of a 0.5 s pod: owed a while
    status, headers, doc = explanation(url, slow["decision_id"])
    assert status == 202 and doc["status"] == "pending" and doc["kind"] == "adverse"
    assert headers["Retry-After"] == "1"
    slow_doc = wait_explained(url, slow["decision_id"])
    assert slow_doc["status"] == "done", slow_doc

    approved = next(d for d in decide(url, "refusals", holdout_x[:20]) if d["label"] == 1)
    assert record(url, approved["decision_id"])["explanation"] is None
    status, _, doc = explanation(url, approved["decision_id"])
    assert status == 202 and doc == {"status": "pending", "decision_id": approved["decision_id"],
                                     "kind": "requested", "attempts": 0,
                                     "decided_at": doc["decided_at"]}
    done = wait_explained(url, approved["decision_id"])
    assert done["status"] == "done" and done["kind"] == "requested"
    assert explanation(url, approved["decision_id"])[:1] == (200,)
    assert record(url, approved["decision_id"])["explanation"] == done


def test_inline_answer_carries_the_explanation_within_its_deadline(explaining, holdout_x):
    url = explaining.http_url
    decision = decide(url, "inline", holdout_x[:1])[0]
    carried = json.loads(decision["parameters"]["explanation"])
    assert carried["status"] == "done" and carried["decision_id"] == decision["decision_id"]
    assert carried == wait_explained(url, decision["decision_id"])

    late = decide(url, "inline", holdout_x[1:2], parameters={"explanation_deadline_s": 0})[0]
    assert json.loads(late["parameters"]["explanation"]) == {
        "status": "pending", "decision_id": late["decision_id"]}
    assert wait_explained(url, late["decision_id"])["status"] == "done"

    status, _, doc = rest_infer(url, "inline", holdout_x[:1],
                                parameters={"explanation_deadline_s": "soon"})
    assert status == 400 and "explanation_deadline_s" in doc["error"]


def test_inline_deadline_from_the_config_answers_before_a_slow_explanation(
        explaining, holdout_x):
    url = explaining.http_url  # Kernel SHAP of a 0.5 s pod: seconds; the deadline is 0.3 s
    start = time.monotonic()
    decision = decide(url, "slow-inline", holdout_x[2:3])[0]
    assert time.monotonic() - start < 5  # not timeout_s (30 s)
    assert json.loads(decision["parameters"]["explanation"]) == {
        "status": "pending", "decision_id": decision["decision_id"]}
    assert wait_explained(url, decision["decision_id"])["status"] == "done"


def test_store_without_inputs_still_explains_refusals_not_on_demand(
        gbm_pod, lr_pod, mlp_pod, holdout_x, credit_models) -> None:
    """``store.inputs: drop``: the job keeps the rows until explained, so refusals are
    explained; an approval asked for later cannot be (404), and nothing is left."""
    config = gateway_config({"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}, None,
                            {"refusals": {"router": GBM, "explain": tree_shap(credit_models)}})
    config = config.model_copy(update={"store": config.store.model_copy(
        update={"inputs": "drop"})})
    with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as server:
        url = server.http_url
        decisions = decide(url, "refusals", holdout_x[:30])
        for decision in decisions:
            assert record(url, decision["decision_id"])["inputs"] == {}
            if decision["label"] == 0:
                assert wait_explained(url, decision["decision_id"])["status"] == "done"
        approved = next(d for d in decisions if d["label"] == 1)
        status, _, doc = explanation(url, approved["decision_id"])
        assert status == 404 and "inputs were not kept" in doc["error"]


def test_grpc_get_explanation_answers_as_rest_does(explaining, holdout_x):
    import grpc

    from protos import arbiter_pb2, arbiter_pb2_grpc

    url = explaining.http_url
    with grpc.insecure_channel(explaining.grpc_target) as channel:
        stub = arbiter_pb2_grpc.DecisionServiceStub(channel)

        def get(decision_id: str) -> arbiter_pb2.ExplanationRecord:
            return stub.GetExplanation(arbiter_pb2.GetDecisionRequest(decision_id=decision_id),
                                       timeout=10)

        with pytest.raises(grpc.RpcError) as error:
            get("no-such-decision")
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        plain = decide(url, "plain", holdout_x[:1])[0]
        with pytest.raises(grpc.RpcError) as error:
            get(plain["decision_id"])
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert "does not explain" in error.value.details()

        slow = decide(url, "slow", holdout_x[1:2])[0]  # owed a while: pending over gRPC too
        owed = get(slow["decision_id"])
        assert owed.pending and json.loads(owed.json)["status"] == "pending"
        done = wait_explained(url, slow["decision_id"])
        final = get(slow["decision_id"])
        assert not final.pending and json.loads(final.json) == done
