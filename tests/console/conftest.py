"""A real gateway with the console on, in front of the real credit pods (scikit-learn,
ONNX Runtime, PyTorch), with traffic and truth feedback already sent:

* ``credit``: Thompson sampling over lr, gbm, mlp, with fairness monitoring by sex, age
  and foreign-worker status (the example's encoding: category names);
* ``credit-cc``: champion-challenger (lr over gbm, mlp), each decision explained by
  kernel SHAP;
* ``credit-shadow``: lr answers, gbm and mlp are mirrored (the tests that send more
  decisions send them here, so the others' counts stay as the fixture left them).

Headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright: the browser
fixtures skip when either is missing, and fail instead when ``ARBITER_REQUIRE_BROWSER=1``
(as in CI).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from examples.credit.encoding import load_frame
from gateway.app import build_gateway
from gateway.config import GatewayConfig
from tests.fakes import http_call
from tests.servers import ServerThread, local_options

REQUIRE_BROWSER_ENV = "ARBITER_REQUIRE_BROWSER"
SCREENSHOTS_ENV = "ARBITER_SCREENSHOTS"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-quic", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]
APPLICANTS = {"credit": 120, "credit-cc": 40, "credit-shadow": 30}
"""Applicants sent to each deployment, each followed by its truth."""


def monitoring(encoding: Path) -> dict[str, Any]:
    """The example's monitoring block (groups named through the encoding file)."""
    return {
        "encoding": str(encoding),
        "approval": {"output": "label", "value": 1},
        "groups": [
            {"name": "sex", "feature": "personal_status_and_sex",
             "categories": {"female": ["female : divorced/separated/married"],
                            "male": ["male : divorced/separated", "male : married/widowed",
                                     "male : single"]}},
            {"name": "age", "feature": "age_in_years", "bands": [0, 25, 40, 60, 200]},
        ],
        "reference": {"sex": "male", "age": "25-40"},
        "windows": ["hour", "day"],
        "alerts": [{"metric": "disparate_impact", "below": 0.8}],
        "refresh_s": 0, "evaluate_s": 0.2,
    }


def console_config(pods: dict[str, ServerThread], models: dict[str, Path],
                   store: Path) -> dict[str, Any]:
    """The console gateway's config document."""
    explain = {"method": "kernel_shap", "mode": "async", "output": "probabilities",
               "encoding": str(models["encoding"]), "reference_data": str(models["reference"]),
               "kernel_shap_nsamples": 64, "background_size": 10, "max_queue": 64,
               "timeout_s": 60, "workers": 1}
    return {
        "models": {key: {"url": f"http://{pod.http_hostport}", "name": f"credit-{key}"}
                   for key, pod in pods.items()},
        "deployments": {
            "credit": {"router": {"kind": "thompson", "arms": ["lr", "gbm", "mlp"]},
                       "seed": 7, "monitoring": monitoring(models["encoding"])},
            "credit-cc": {"router": {"kind": "champion_challenger", "champion": "lr",
                                     "challengers": ["gbm", "mlp"],
                                     "traffic": {"gbm": 0.2, "mlp": 0.1}},
                          "seed": 7, "explain": explain},
            "credit-shadow": {"router": {"kind": "shadow", "primary": "lr",
                                         "shadows": [{"model": "gbm"}, {"model": "mlp"}]}},
        },
        "store": {"kind": "sqlite", "path": str(store), "flush_interval_ms": 5},
        "console": {"enabled": True},
    }


@dataclass
class ConsoleRun:
    """The running console gateway and what was sent to it.

    Attributes:
        server: the gateway.
        decisions: deployment -> the decision documents its applicants got (in order).
        truths: decision id -> the truth sent.
    """

    server: ServerThread
    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    truths: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.http_url

    def record(self, decision_id: str) -> dict[str, Any]:
        status, _, body = http_call("GET", f"{self.url}/v2/decisions/{decision_id}")
        assert status == 200, body
        return json.loads(body)


def infer(url: str, deployment: str, row: np.ndarray, **extra: Any) -> dict[str, Any]:
    """One applicant (FP32 [1, 20]) to a deployment over REST; the response document."""
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(row.shape),
                       "data": np.asarray(row, np.float32).ravel().tolist()}], **extra}
    status, _, body = http_call("POST", f"{url}/v2/models/{deployment}/infer", doc)
    assert status == 200, body
    return json.loads(body)


def teach(url: str, deployment: str, decision_id: str, truth: int) -> None:
    """The truth of one decision."""
    status, _, body = http_call("POST", f"{url}/v2/deployments/{deployment}/feedback",
                                {"decision_id": decision_id, "truth": [truth]})
    assert status == 200 and json.loads(body)["status"] == "accepted", body


@pytest.fixture(scope="session")
def holdout(credit_models: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Held-out applicants and their truth."""
    return load_frame(credit_models["holdout"])


@pytest.fixture(scope="package")  # stopped (with its explanation processes) after tests/console
def console_run(lr_pod, gbm_pod, mlp_pod, credit_models, holdout,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleRun]:
    """The console gateway after :data:`APPLICANTS` applicants and their truth; the
    explanations of ``credit-cc`` are finished."""
    pods = {"lr": lr_pod, "gbm": gbm_pod, "mlp": mlp_pod}
    store = tmp_path_factory.mktemp("console") / "arbiter.sqlite"
    config = GatewayConfig.model_validate(console_config(pods, credit_models, store))
    x, y = holdout
    with ServerThread(lambda: build_gateway(config, local_options(), 30)[1]) as server:
        run = ConsoleRun(server)
        for deployment, count in APPLICANTS.items():
            run.decisions[deployment] = []
            for i in range(count):
                doc = infer(run.url, deployment, x[i:i + 1])
                decision_id = doc["parameters"]["decision_id"]
                teach(run.url, deployment, decision_id, int(y[i]))
                run.decisions[deployment].append(doc)
                run.truths[decision_id] = int(y[i])
        _wait_explained(run, [d["parameters"]["decision_id"]
                              for d in run.decisions["credit-cc"]])
        yield run


def _wait_explained(run: ConsoleRun, ids: list[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        pending = [i for i in pending
                   if (run.record(i).get("explanation") or {}).get("status") == "pending"]
        if pending:
            time.sleep(0.5)
    assert not pending, f"{len(pending)} explanations still pending after {timeout_s} s"


def refused_decision(run: ConsoleRun, deployment: str = "credit-cc") -> dict[str, Any]:
    """The record of the first decision of ``deployment`` that its routed model
    refused (label 0) and whose explanation is finished."""
    for doc in run.decisions[deployment]:
        if doc["outputs"][0]["name"] == "label" and doc["outputs"][0]["data"] == [0]:
            return run.record(doc["parameters"]["decision_id"])
    raise AssertionError(f"no refused applicant among {deployment}'s decisions")


# -- the browser ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright; skips (or fails with
    ``ARBITER_REQUIRE_BROWSER=1``) when Chromium or Playwright is missing. One per
    module: Playwright's synchronous API keeps an event loop running in the main thread
    while it lives, which would stop later asyncio tests from running theirs."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[test]')"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if problem is not None:
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(f"{problem} ({REQUIRE_BROWSER_ENV}=1)")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page (1280 x 900), with every console error and
    failed request of the page collected in ``page.problems``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.problems = []
    tab.on("console", lambda m: tab.problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.problems.append(str(e)))
    tab.on("requestfailed", lambda r: tab.problems.append(f"failed {r.url}"))
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests leave their screenshots (``ARBITER_SCREENSHOTS``, else a
    temporary folder)."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
