"""The console over plain HTTP: off unless configured, bad input answered with 4xx
pages, the security headers, the outcome filter against the truths sent, and a static
snapshot whose pages link to each other."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from gateway.console.snapshot import snapshot_name, write_snapshot
from tests.console.conftest import ConsoleRun
from tests.fakes import http_call
from tests.servers import ServerThread, local_options

DECISION_LINK = re.compile(r'href="/console/decisions/([0-9a-f]+)"')


def _get(run: ConsoleRun, path: str) -> tuple[int, dict[str, str], str]:
    status, headers, body = http_call("GET", run.url + path)
    return status, headers, body.decode()


def test_console_is_off_unless_configured(lr_pod) -> None:
    config = GatewayConfig.model_validate({
        "models": {"lr": {"url": f"http://{lr_pod.http_hostport}", "name": "credit-lr"}},
        "deployments": {"credit": {"router": {"kind": "weighted", "weights": {"lr": 1}}}},
        "store": {"kind": "memory"},
    })
    assert config.console.enabled is False
    with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as gateway:
        for path in ("/console", "/console/", "/console/static/console.js"):
            assert http_call("GET", gateway.http_url + path)[0] == 404


def test_pages_carry_the_security_headers(console_run) -> None:
    status, headers, body = _get(console_run, "/console/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    status, headers, body = _get(console_run, "/console/static/uPlot.iife.min.js")
    assert status == 200 and "MIT License" in body.splitlines()[0]
    assert headers["Content-Type"].startswith("application/javascript")
    assert http_call("GET", console_run.url + "/console")[0] == 200  # redirected to /console/


def test_bad_input_gets_4xx_pages(console_run) -> None:
    cases = {
        "/console/deployments/nowhere": (404, "deployment &#x27;nowhere&#x27; not found"),
        "/console/deployments/credit-cc/fairness": (404, "has no monitoring"),
        "/console/deployments/credit/fairness?window=week": (400, "not monitored"),
        "/console/decisions/0123456789abcdef": (404, "0123456789abcdef"),
        "/console/decisions?outcome=great": (400, "outcome must be one of"),
        "/console/decisions?limit=0": (400, "limit must be"),
        "/console/decisions?limit=x": (400, "limit must be"),
        "/console/decisions?model=nope": (400, "unknown model"),
        "/console/decisions?deployment=nope": (404, "not found"),
        "/console/static/secrets.txt": (404, ""),
    }
    for path, (code, text) in cases.items():
        status, _, body = _get(console_run, path)
        assert (status, text in body) == (code, True), (path, status, body[:300])


def test_lookup_by_id_redirects_to_the_decision(console_run) -> None:
    decision_id = console_run.decisions["credit"][0]["parameters"]["decision_id"]
    status, headers, _ = http_call("GET", f"{console_run.url}/console/decisions?id={decision_id}")
    assert status == 200  # urllib follows the 303
    status, _, body = _get(console_run, f"/console/decisions/{decision_id}")
    assert status == 200 and decision_id in body


def test_outcome_filter_lists_the_decisions_whose_model_was_wrong(console_run) -> None:
    answered = {d["parameters"]["decision_id"]: d["outputs"][0]["data"][0]
                for d in console_run.decisions["credit"]}
    wrong = [i for i in reversed(list(answered)) if answered[i] != console_run.truths[i]]
    right = [i for i in reversed(list(answered)) if answered[i] == console_run.truths[i]]
    _, _, body = _get(console_run, "/console/decisions?deployment=credit&outcome=wrong&limit=500")
    assert DECISION_LINK.findall(body) == wrong
    _, _, body = _get(console_run, "/console/decisions?deployment=credit&outcome=right&limit=500")
    assert DECISION_LINK.findall(body) == right
    _, _, body = _get(console_run, "/console/decisions?deployment=credit&limit=7")
    assert DECISION_LINK.findall(body) == list(reversed(list(answered)))[:7]


def test_snapshot_pages_link_to_each_other(console_run, tmp_path: Path) -> None:
    written = write_snapshot(console_run.url, tmp_path, decisions=5)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"index.html", "deployment-credit.html", "deployment-credit-cc.html",
            "deployment-credit-fairness.html", "deployment-credit-fairness-window-day.html",
            "decisions.html", "decisions-deployment-credit.html",
            "static/console.css", "static/uPlot.iife.min.js"} <= names
    assert sum(n.startswith("decision-") for n in names) == 5
    for path in written:
        if path.suffix != ".html":
            continue
        text = path.read_text()
        for link in re.findall(r'(?:href|src)="([^"#?]+)"', text):
            assert link.startswith("data:") or (tmp_path / link).exists(), (path.name, link)
        assert "Snapshot of" in text
    assert snapshot_name("/console/decisions?deployment=credit&refused=1") == \
        "decisions-deployment-credit-refused-1.html"
