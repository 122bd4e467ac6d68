"""Fairness monitoring through a real gateway in front of real pods: a champion that
errs on 20 % of applicants, a fair challenger that errs on 12.5 %, and a biased
challenger, the most accurate (93 %), that refuses every woman. Its alert fires and
its promotion is refused with the evidence; the fair challenger is promoted. Figures
equal what the models answered, survive a restart and agree across two gateway
processes on one store."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from tests.fakes import (
    RuleCreditWrapper,
    credit_like_settings,
    fairness_rows,
    http_call,
    model_pod,
)
from tests.gateway.conftest import metric_value, rest_infer
from tests.gateway.processes import GatewayProcess
from tests.servers import ServerThread, local_options

WRAPPERS = {  # model key -> its rule (see tests.fakes.RuleCreditWrapper)
    "fair80": lambda: RuleCreditWrapper(err_every=5),
    "fair": lambda: RuleCreditWrapper(err_every=8),
    "biased": lambda: RuleCreditWrapper(refuse_column=8, refuse_value=0.0),
}
N = 400
MONITORING: dict[str, Any] = {
    "groups": [
        {"name": "sex", "column": 8, "categories": {"female": [0], "male": [1, 2, 3]}},
        {"name": "age", "column": 12, "bands": [0, 25, 40, 60, 200]},
        {"name": "channel", "parameter": "channel",
         "categories": {"web": ["web"], "branch": ["branch"]}},
    ],
    "reference": {"sex": "male", "age": "40-60"},
    "windows": ["hour", "day"],
    "alerts": [{"metric": "disparate_impact", "below": 0.8, "confidence": 0.95}],
    "guardrail": {"metric": "disparate_impact", "tolerance": 0.1, "min_decisions": 20,
                  "attributes": ["sex"]},
    "refresh_s": 0.5, "evaluate_s": 0.2,
}
DEPLOYMENT = {
    "router": {"kind": "champion_challenger", "champion": "fair80",
               "challengers": ["biased", "fair"],
               "promotion": {"auto": True, "min_samples": 100, "probability": 0.95}},
    "monitoring": MONITORING,
}


@pytest.fixture(scope="module")
def rule_pods() -> Iterator[dict[str, ServerThread]]:
    pods = {key: ServerThread(model_pod(make(), credit_like_settings(key)))
            for key, make in WRAPPERS.items()}
    for pod in pods.values():
        pod.__enter__()
    try:
        yield pods
    finally:
        for pod in pods.values():
            pod.__exit__(None, None, None)


def _config_doc(pods: dict[str, ServerThread], store: Path) -> dict[str, Any]:
    return {
        "models": {key: {"url": f"http://{pod.http_hostport}", "name": key}
                   for key, pod in pods.items()},
        "deployments": {"cc": DEPLOYMENT},
        "store": {"kind": "sqlite", "path": str(store), "flush_interval_ms": 5},
    }


def _expected(x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and sex: decisions, approval rate and accuracy of what it answers."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, make in WRAPPERS.items():
        label = make().predict({"input": x})["label"]
        out[key] = {}
        for group, rows in (("female", x[:, 8] == 0), ("male", x[:, 8] != 0)):
            out[key][group] = {"decisions": int(rows.sum()),
                               "approval_rate": float(label[rows].mean()),
                               "accuracy": float((label[rows] == y[rows]).mean())}
    return out


def _decide_and_teach(url: str, x: np.ndarray, y: np.ndarray, start: int, stop: int,
                      feedback_url: str | None = None) -> None:
    for i in range(start, stop):
        channel = "web" if i % 2 else "branch"
        status, _, doc = rest_infer(url, "cc", x[i:i + 1], parameters={"channel": channel})
        assert status == 200, doc
        item = {"decision_id": doc["parameters"]["decision_id"], "truth": [int(y[i])]}
        status, _, body = http_call("POST", f"{feedback_url or url}/v2/deployments/cc/feedback",
                                    item)
        assert status == 200 and json.loads(body)["status"] == "accepted", body


def _sex_figures(doc: dict) -> dict[str, dict[str, dict[str, float]]]:
    models = doc["buckets"][-1]["models"]
    return {m: {g: {k: f[k] for k in ("decisions", "approval_rate", "accuracy")}
                for g, f in models[m]["sex"]["groups"].items()} for m in models}


def test_biased_challenger_alerts_and_is_refused_a_fair_one_is_promoted(
        rule_pods: dict[str, ServerThread], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = GatewayConfig.model_validate(_config_doc(rule_pods, tmp_path / "a.sqlite"))
    x, y = fairness_rows(N)
    expected = _expected(x, y)
    with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as gateway:
        _decide_and_teach(gateway.http_url, x, y, 0, N)
        status, _, body = http_call("GET", f"{gateway.http_url}/v2/deployments/cc")
        router = json.loads(body)["router"]
        fairness = json.loads(http_call(
            "GET", f"{gateway.http_url}/v2/deployments/cc/fairness?window=all")[2])
        hours = json.loads(http_call(
            "GET", f"{gateway.http_url}/v2/deployments/cc/fairness?window=hour")[2])
        deadline = time.monotonic() + 5
        while True:  # the alerts are evaluated every 0.2 s
            metrics = http_call("GET", f"{gateway.http_url}/metrics")[2].decode()
            alert = {m: metric_value(metrics, "arbiter_fairness_alert", deployment="cc",
                                     model=m, attribute="sex", group="female", window="all")
                     for m in WRAPPERS}
            if alert["biased"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        bad = http_call("GET", f"{gateway.http_url}/v2/deployments/cc/fairness?window=week")
    # the fair challenger was promoted, with the guardrail's figures as evidence
    assert router["champion"] == "fair"
    promotion = router["promotions"][-1]
    assert (promotion["previous"], promotion["champion"], promotion["reason"]) == \
        ("fair80", "fair", "auto")
    guard = promotion["evidence"]["guard"]
    assert guard["allowed"] and guard["metric"] == "disparate_impact"
    female = guard["attributes"]["sex"]["groups"]["female"]
    assert female["fair80"]["value"] == pytest.approx(1.0, abs=0.1)
    assert female["fair"]["value"] == pytest.approx(1.0, abs=0.1)
    # the biased challenger never was: its refusal holds the figures
    assert all(p["champion"] != "biased" for p in router["promotions"])
    refusal = next(r for r in router["refusals"] if r["challenger"] == "biased")
    sex = refusal["evidence"]["attributes"]["sex"]
    assert not refusal["evidence"]["allowed"] and refusal["probability"] >= 0.95
    assert sex["challenger"] == {"model": "biased", "worst_group": "female", "distance": 0.0}
    assert sex["worse_by"] > 0.9 and sex["groups"]["female"]["biased"]["value"] == 0.0
    assert refusal["champion"] == "fair"
    # figures per group equal what each model answered
    assert _sex_figures(fairness) == {
        m: {g: pytest.approx(v) for g, v in groups.items()} for m, groups in expected.items()}
    assert sum(b["models"]["fair"]["sex"]["groups"]["female"]["decisions"]
               for b in hours["buckets"]) == expected["fair"]["female"]["decisions"]
    channel = fairness["buckets"][0]["models"]["fair"]["channel"]["groups"]
    assert channel["web"]["decisions"] == channel["branch"]["decisions"] == N // 2
    di = fairness["buckets"][0]["models"]["biased"]["sex"]["fairness"]["female"]
    assert di["disparate_impact"]["value"] == 0.0 and di["disparate_impact"]["ci_high"] < 0.8
    # the alert fires for the biased model only, and is logged naming who and where
    assert alert == {"fair80": 0.0, "fair": 0.0, "biased": 1.0}
    assert [a["model"] for a in fairness["alerts"] if a["attribute"] == "sex"] in \
        ([], ["biased"], ["biased"] * 3)
    warnings = [r.getMessage() for r in caplog.records if "fairness alert" in r.getMessage()]
    assert any("deployment 'cc', model 'biased', sex group 'female'" in w
               and "window 'all'" in w for w in warnings), warnings
    assert not any("model 'fair" in w and "sex group" in w for w in warnings), warnings
    assert bad[0] == 400 and b"not monitored" in bad[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_figures_survive_a_restart_and_agree_across_processes(
        rule_pods: dict[str, ServerThread], tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(_config_doc(rule_pods, tmp_path / "shared.sqlite")))
    x, y = fairness_rows(N)
    expected = _expected(x[:200], y[:200])
    first, second = GatewayProcess(config).start(), GatewayProcess(config).start()
    try:
        _decide_and_teach(first.url, x, y, 0, 100, feedback_url=second.url)
        _decide_and_teach(second.url, x, y, 100, 200, feedback_url=first.url)
        deadline = time.monotonic() + 30  # a rebuild reads what the other process decided
        while True:
            views = [_sex_figures(g.get("/v2/deployments/cc/fairness")) for g in (first, second)]
            if views[0] == views[1] or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert views[0] == views[1]
        assert views[0] == {m: {g: pytest.approx(v) for g, v in groups.items()}
                            for m, groups in expected.items()}
        before = first.get("/v2/deployments/cc/fairness")
    finally:
        first.stop()
        second.stop()
    with GatewayProcess(config) as restarted:
        after = restarted.get("/v2/deployments/cc/fairness")
    assert after["buckets"] == before["buckets"]


@pytest.mark.parametrize("refresh_s", [0.0, 30.0])  # rebuilt from the store / replaced live
def test_a_corrected_truth_replaces_the_one_counted(
        rule_pods: dict[str, ServerThread], tmp_path: Path, refresh_s: float) -> None:
    doc = _config_doc(rule_pods, tmp_path / "c.sqlite")
    doc["deployments"]["cc"] = {
        "router": {"kind": "champion_challenger", "champion": "fair80",
                   "challengers": ["fair"]},
        "monitoring": {**MONITORING, "guardrail": None, "refresh_s": refresh_s}}
    config = GatewayConfig.model_validate(doc)
    x, y = fairness_rows(20)  # rows 0 and 10 are women; fair80 errs on row 0 (k = 0)
    with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as gateway:
        ids = []
        for i in range(20):
            status, _, answer = rest_infer(gateway.http_url, "cc", x[i:i + 1])
            ids.append(answer["parameters"]["decision_id"])
            http_call("POST", f"{gateway.http_url}/v2/deployments/cc/feedback",
                      {"decision_id": ids[-1], "truth": [int(y[i])]})

        def women() -> dict:
            figures = json.loads(http_call(
                "GET", f"{gateway.http_url}/v2/deployments/cc/fairness")[2])
            return figures["buckets"][0]["models"]["fair80"]["sex"]["groups"]["female"]

        assert (women()["scored"], women()["accuracy"]) == (2, 0.5)
        status, _, body = http_call("POST", f"{gateway.http_url}/v2/deployments/cc/feedback",
                                    {"decision_id": ids[0], "truth": [1 - int(y[0])],
                                     "correction": True})
        assert json.loads(body)["status"] == "corrected"
        deadline = time.monotonic() + 5
        while women()["accuracy"] != 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (women()["scored"], women()["accuracy"], women()["decisions"]) == (2, 1.0, 2)
