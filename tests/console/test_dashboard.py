"""The Grafana dashboard (charts/gateway/dashboards/arbiter.json) queries what the
gateway exports: every metric its PromQL names is in a real gateway's /metrics after
traffic (counters with ``_total``, histograms with ``_bucket``), and every label it
matches or groups by is one that metric carries (from the registrations in
gateway/metrics.py and protos/server/metrics.py)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import http_call

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "gateway" / "dashboards" / "arbiter.json"
REGISTRATIONS = (ROOT / "gateway" / "metrics.py", ROOT / "protos" / "server" / "metrics.py")
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
METRIC = re.compile(r"\b(arbiter_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|ignoring|on)\s*\(([^)]*)\)")


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expression) of every target, and of every query variable."""
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((variable["name"], variable["query"]["query"]))
    return found


def _registered_labels() -> dict[str, set[str]]:
    """Metric family name -> its label names, read from the registrations' source."""
    labels: dict[str, set[str]] = {}
    for path in REGISTRATIONS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                    "Counter", "Gauge", "Histogram"):
                name = node.args[0].value
                names = next((a for a in node.args[2:] if isinstance(a, ast.List)), None)
                names = names or next((k.value for k in node.keywords
                                       if k.arg == "labelnames"), None)
                labels[name] = {e.value for e in names.elts} if names else set()
    return labels


@pytest.fixture(scope="module")
def exported(console_run) -> dict[str, str]:
    """Sample name -> family name of every series the console gateway exports."""
    status, _, body = http_call("GET", f"{console_run.url}/metrics")
    assert status == 200
    names = {}
    for family in text_string_to_metric_families(body.decode()):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def test_every_query_names_an_exported_metric_and_its_labels(exported) -> None:
    labels = _registered_labels()
    queries = _queries(_dashboard())
    assert len(queries) >= 25
    for title, expr in queries:
        metrics = METRIC.findall(expr)
        assert metrics, f"{title}: no metric in {expr}"
        carried: set[str] = set()
        for name, selector in metrics:
            assert name in exported, f"{title}: {name} is not exported ({expr})"
            family = exported[name]
            mine = labels[family] | ({"le"} if name.endswith("_bucket") else set())
            carried |= mine
            for label in MATCHER.findall(selector or ""):
                assert label in mine, f"{title}: {name} has no label {label!r}"
        for group in GROUPING.findall(expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                assert label in carried, f"{title}: grouping by {label!r} in {expr}"


def test_the_dashboard_covers_what_operators_watch(exported) -> None:
    text = DASHBOARD.read_text()
    for metric in ("arbiter_route_decisions_total", "arbiter_posterior_mean",
                   "arbiter_requests_total", "arbiter_request_duration_seconds_bucket",
                   "arbiter_upstream_duration_seconds_bucket", "arbiter_shed_requests_total",
                   "arbiter_failed_decisions_total", "arbiter_shadow_agreement_ratio",
                   "arbiter_explanation_queue_depth", "arbiter_explanation_backlog",
                   "arbiter_decision_store_up", "arbiter_fairness",
                   "arbiter_fairness_alert", "arbiter_upstream_breaker_state"):
        assert metric in text and metric in exported, metric
    dashboard = _dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["description"]
            assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + \
                panel["gridPos"]["w"] <= 24
