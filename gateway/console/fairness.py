"""The fairness page: per protected attribute, group and model, the approval and error
rates (with their intervals) and the disparate impact against the reference group, the
alerts that fire, and charts of the rates over time (the documents of
``GET /v2/deployments/{d}/fairness``)."""

from __future__ import annotations

from typing import Any

from gateway.console.layout import Links
from gateway.console.markup import Html, join, json_script, number, percent, tag

__all__ = ["fairness_body"]


def fairness_body(name: str, totals: dict[str, Any], over_time: dict[str, Any] | None,
                  windows: list[str], links: Links) -> Html:
    """The page of deployment ``name``: ``totals`` is the ``window=all`` document,
    ``over_time`` the chosen window's (None for ``all``)."""
    chosen = over_time["window"] if over_time else "all"
    tabs = tag("p", "Window: ", *(
        tag("a", w, href=links.fairness(name, w), class_="tab active" if w == chosen
            else "tab") for w in windows), class_="tabs")
    buckets = totals.get("buckets") or []
    latest = buckets[-1]["models"] if buckets else {}
    parts = [tag("h1", "Fairness of ", tag("code", name)),
             tag("p", tag("a", "Deployment", href=links.deployment(name)), class_="links"),
             tabs, _alerts(totals.get("alerts") or [])]
    attributes = _attributes(latest)
    if not attributes:
        parts.append(tag("p", "No decision counted yet.", class_="empty"))
    confidence = totals.get("confidence", 0.95)
    for attribute, reference in attributes.items():
        parts.append(tag("h2", attribute, " ", tag("span", f"reference group {reference}",
                                                   class_="kind")))
        parts.append(_table(latest, attribute, confidence))
        if over_time is not None:
            parts.append(_charts(over_time, attribute))
    return join(parts)


def _attributes(models: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for figures in models.values():
        for attribute, doc in figures.items():
            found.setdefault(attribute, doc.get("reference", ""))
    return found


def _alerts(alerts: list[dict[str, Any]]) -> Html:
    title = tag("h2", "Alerts")
    if not alerts:
        return join([title, tag("p", "No alert fires.", class_="ok-note")])
    rows = [tag("tr", tag("td", a.get("model")), tag("td", a.get("attribute")),
                tag("td", a.get("group")), tag("td", a.get("window")),
                tag("td", a.get("metric")),
                tag("td", f"{number(a.get('value'))} [{number(a.get('ci_low'))}, "
                          f"{number(a.get('ci_high'))}]", class_="num"),
                tag("td", f"below {a['below']}" if a.get("below") is not None
                    else f"above {a.get('above')}"))
            for a in alerts]
    head = ["Model", "Attribute", "Group", "Window", "Metric", "Value [interval]", "Rule"]
    return join([title, tag("table", tag("thead", tag("tr", *(tag("th", h) for h in head))),
                            tag("tbody", *rows), class_="grid alerts")])


def _rate(figures: dict[str, Any], metric: str, error: bool = False) -> str:
    value = figures.get(metric)
    low, high = (figures.get(f"{metric}_ci") or [None, None])[:2]
    if error and value is not None:
        value = 1 - value
        low, high = (None if high is None else 1 - high), (None if low is None else 1 - low)
    if value is None:
        return "–"
    return f"{percent(value)} [{percent(low)}, {percent(high)}]"


def _table(models: dict[str, Any], attribute: str, confidence: float) -> Html:
    head = ["Group", "Model", "Decisions", "Approval rate", "Scored", "Error rate",
            "TPR", "FPR", "Disparate impact"]
    rows = []
    groups: list[str] = []
    for figures in models.values():
        for group in (figures.get(attribute) or {}).get("groups", {}):
            if group not in groups:
                groups.append(group)
    for group in groups:
        for model, figures in models.items():
            doc = figures.get(attribute) or {}
            mine = (doc.get("groups") or {}).get(group)
            if mine is None:
                continue
            di = ((doc.get("fairness") or {}).get(group) or {}).get("disparate_impact") or {}
            di_text = "reference" if group == doc.get("reference") else (
                f"{number(di.get('value'))} [{number(di.get('ci_low'))}, "
                f"{number(di.get('ci_high'))}]" if di.get("value") is not None else "–")
            rows.append(tag(
                "tr", tag("td", group), tag("td", model),
                tag("td", number(mine.get("decisions")), class_="num"),
                tag("td", _rate(mine, "approval_rate"), class_="num"),
                tag("td", number(mine.get("scored")), class_="num"),
                tag("td", _rate(mine, "accuracy", error=True), class_="num"),
                tag("td", _rate(mine, "tpr"), class_="num"),
                tag("td", _rate(mine, "fpr"), class_="num"),
                tag("td", di_text, class_="num"), data_group=group, data_model=model))
    note = (f"All decisions of the horizon; [low, high] are {confidence:.0%} intervals "
            "(Wilson for rates, Katz for the disparate impact).")
    return join([tag("table", tag("thead", tag("tr", *(tag("th", h) for h in head))),
                     tag("tbody", *rows), class_="grid fairness", data_attribute=attribute),
                 tag("p", note, class_="note")])


def _charts(doc: dict[str, Any], attribute: str) -> Html:
    buckets = doc.get("buckets") or []
    labels = [b["bucket"] for b in buckets]
    series: dict[str, dict[tuple[str, str], list[Any]]] = {"approval": {}, "error": {}}
    for i, bucket in enumerate(buckets):
        for model, figures in bucket["models"].items():
            for group, mine in ((figures.get(attribute) or {}).get("groups") or {}).items():
                for kind, value in (("approval", mine.get("approval_rate")),
                                    ("error", None if mine.get("accuracy") is None
                                     else 1 - mine["accuracy"])):
                    line = series[kind].setdefault((model, group), [None] * len(buckets))
                    line[i] = value
    parts = []
    for kind, title in (("approval", "Approval rate"), ("error", "Error rate")):
        lines = series[kind]
        if not any(v is not None for values in lines.values() for v in values):
            continue
        element = f"chart-{attribute}-{kind}"
        spec = {"kind": "category", "x": list(range(len(labels))), "labels": labels,
                "percent": True,
                "series": [{"label": f"{model} · {group}", "values": values}
                           for (model, group), values in sorted(lines.items())]}
        parts.append(tag("figure", tag("figcaption", f"{title} per {doc['window']}"),
                         tag("div", class_="chart", id=element, data_chart=f"{element}-data"),
                         json_script(f"{element}-data", spec)))
    return tag("div", *parts, class_="charts") if parts else Html("")
