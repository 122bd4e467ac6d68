"""The console in a real headless Chromium, against a real gateway in front of the real
credit pods: the traffic chart drawn with the shares the clients saw, the arms' counts
and intervals of the API's state, a refused decision looked up by id with its inputs in
the data's terms, every model's output and its explanation, the fairness table of the
API's figures, the filters, and client data that stays text. Screenshots are kept in
``ARBITER_SCREENSHOTS`` (else a temporary folder)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.console.markup import percent
from tests.console.conftest import ConsoleRun, infer, refused_decision
from tests.fakes import http_call

pytestmark = pytest.mark.slow

INKED_PIXELS = """(selector) => {
  const canvas = document.querySelector(selector);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) { if (data[i] !== 0) { inked++; } }
  return inked;
}"""


def _api(run: ConsoleRun, path: str) -> Any:
    status, _, body = http_call("GET", run.url + path)
    assert status == 200, body
    return json.loads(body)


def _shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_deployment_page_draws_traffic_shares_and_the_arms(console_run, page,
                                                           screenshots) -> None:
    page.goto(f"{console_run.url}/console/deployments/credit")
    chart = page.locator("#traffic")
    chart.locator("canvas").wait_for()
    assert chart.get_attribute("data-series") == "3"
    assert chart.get_attribute("data-points") == "6"  # 120 decisions, one bucket per 20
    assert page.evaluate(INKED_PIXELS, "#traffic canvas") > 2000
    routed = Counter(d["parameters"]["routed_model"] for d in console_run.decisions["credit"])
    note = page.locator("#traffic-note").inner_text()
    for arm in ("lr", "gbm", "mlp"):
        assert f"{arm} {percent(routed[arm] / 120)}" in note
    state = _api(console_run, "/v2/deployments/credit")["router"]["arms"]
    for arm, info in state.items():
        cells = page.locator(f"table.arms tr[data-arm='{arm}'] td").all_inner_texts()
        assert cells[1] == str(info["n"]) and cells[3] == f"{info['mean']:.3f}"
        low, high = (float(v) for v in cells[4].strip("[]").split(", "))
        assert low < info["mean"] < high
    assert sum(info["n"] for info in state.values()) == 120
    _shot(page, screenshots, "deployment-credit")
    assert page.problems == []


def test_champion_challenger_page_shows_the_champion_and_shadow_agreement(
        console_run, page, screenshots) -> None:
    page.goto(f"{console_run.url}/console/deployments/credit-cc")
    page.locator("#traffic canvas").wait_for()
    assert "Champion\nlr" in page.locator("dl.facts").first.inner_text()
    state = _api(console_run, "/v2/deployments/credit-cc")
    assert page.locator("table.arms tbody tr").count() == 3
    for model, agreement in state["shadow_agreement"].items():
        row = page.locator("table.shadows tbody tr", has_text=model).first
        cells = row.locator("td").all_inner_texts()
        # one replica: the store's recent decisions agree with its running figures
        assert cells[2] == cells[4] == str(agreement["compared"])
        assert cells[3] == cells[5] == percent(agreement["agreement"])
    breakers = page.locator("table.breakers tbody tr").all_inner_texts()
    assert len(breakers) == 3 and all("closed" in b for b in breakers)
    _shot(page, screenshots, "deployment-credit-cc")
    assert page.problems == []


def test_refused_decision_looked_up_by_id(console_run, credit_models, page,
                                          screenshots) -> None:
    record = refused_decision(console_run)
    page.goto(f"{console_run.url}/console/decisions")
    page.fill("form.lookup input[name=id]", record["id"])
    page.click("form.lookup button")
    page.wait_for_url(f"**/console/decisions/{record['id']}")
    assert record["id"] in page.locator("h1").inner_text()
    encoding = json.loads(Path(credit_models["encoding"]).read_text())
    row = record["inputs"]["input"]["data"]
    for column in (0, 8, 19):  # categorical: the category's name, not its code
        name = encoding["feature_names"][column]
        shown = page.locator("table.inputs tr", has_text=name).first.locator("td").inner_text()
        assert shown == encoding["categorical"][str(column)][int(row[column])]
    outputs = page.locator("table.outputs tbody tr")
    assert outputs.count() == 1 + len(record["shadows"]) == 3
    routed = page.locator(f"table.outputs tr[data-model='{record['routed']}'] td")
    assert routed.nth(1).inner_text() == "routed" and routed.nth(2).inner_text() == "0 (bad)"
    facts = page.locator("dl.facts").first.inner_text()
    assert f"{record['propensity']:.3f}" in facts and "refused" in facts
    truth = console_run.truths[record["id"]]
    assert f"{truth} ({encoding['class_names'][truth]})" in page.locator("main").inner_text()
    _assert_explanation(page, record["explanation"])
    _shot(page, screenshots, "decision-refused")
    assert page.problems == []


def _assert_explanation(page: Any, document: dict[str, Any]) -> None:
    assert document["status"] == "done", document
    inner = document.get("explanation", document)
    reasons = document.get("reasons") or inner.get("reasons") or []
    shown = page.locator("main").inner_text()
    if reasons:
        listed = page.locator("ol.reasons li").all_inner_texts()
        assert len(listed) == len(reasons)
        assert all(t.startswith(r["sentence"]) for t, r in zip(listed, reasons, strict=True))
    else:
        assert inner["summary"] in shown
    contrary = document.get("contrary_reasons") or []  # values in the applicant's favour
    listed = page.locator("ul.reasons.contrary li").all_inner_texts()
    assert len(listed) == len(contrary)
    assert all(t.startswith(r["sentence"]) for t, r in zip(listed, contrary, strict=True))


def test_fairness_page_shows_the_api_figures(console_run, page, screenshots) -> None:
    page.goto(f"{console_run.url}/console/deployments/credit/fairness")
    figures = _api(console_run, "/v2/deployments/credit/fairness?window=all")
    models = figures["buckets"][-1]["models"]
    table = page.locator("table.fairness[data-attribute='sex']")
    for model, by_attribute in models.items():
        for group, mine in by_attribute["sex"]["groups"].items():
            cells = table.locator(f"tr[data-group='{group}'][data-model='{model}'] td")
            assert cells.nth(2).inner_text() == str(mine["decisions"])
            assert cells.nth(3).inner_text().startswith(percent(mine["approval_rate"]))
    assert sum(m["sex"]["groups"][g]["decisions"] for m in models.values()
               for g in m["sex"]["groups"]) == 120
    page.locator("#chart-sex-approval canvas").wait_for()
    assert page.evaluate(INKED_PIXELS, "#chart-sex-approval canvas") > 500
    if figures["alerts"]:
        assert page.locator("table.alerts tbody tr").count() == len(figures["alerts"])
    else:
        assert "No alert fires." in page.inner_text("main")
    _shot(page, screenshots, "fairness-credit")
    assert page.problems == []


def test_filters_list_refused_decisions_of_one_model(console_run, page, screenshots) -> None:
    page.goto(f"{console_run.url}/console/decisions")
    page.select_option("select[name=deployment]", "credit")
    page.select_option("select[name=model]", "gbm")
    page.check("input[name=refused]")
    page.click("form.filters button")
    page.wait_for_url("**/console/decisions?*refused=1*")
    expected = [d["parameters"]["decision_id"] for d in reversed(console_run.decisions["credit"])
                if d["parameters"]["routed_model"] == "gbm" and d["outputs"][0]["data"] == [0]]
    ids = page.locator("table.decisions a.id").all_inner_texts()
    assert ids == expected[:50] and ids
    assert page.locator("table.decisions .badge.refused").count() == len(ids)
    _shot(page, screenshots, "decisions-refused-gbm")


def test_client_data_is_shown_as_text(console_run, holdout, page) -> None:
    attack = '</code><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    doc = infer(console_run.url, "credit-shadow", holdout[0][:1], id=attack,
                parameters={"note": attack})
    page.goto(f"{console_run.url}/console/decisions/{doc['parameters']['decision_id']}")
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img, main script").count() == 0
    assert page.locator("main").inner_text().count(attack) == 2  # request id and parameter
    assert page.problems == []
