"""The deployment pages: every deployment at a glance, and one deployment's router
(traffic share over time, posteriors with intervals, champion and promotions with
their evidence), shadow agreement and the circuit breaker of each model."""

from __future__ import annotations

from typing import Any

from gateway.console.layout import Links, dl, interval_bar, when
from gateway.console.markup import Html, join, json_script, number, percent, tag

__all__ = ["deployment_body", "index_body"]


def index_body(states: dict[str, dict[str, Any]], links: Links) -> Html:
    """Every deployment: router, models, whether it can answer."""
    rows = []
    for name, state in states.items():
        router = state["router"]
        ready = state.get("health", {}).get("ready")
        rows.append(tag(
            "tr",
            tag("td", tag("a", name, href=links.deployment(name))),
            tag("td", router.get("kind")),
            tag("td", ", ".join(router.get("models", []))),
            tag("td", _standing(router)),
            tag("td", _ready(ready)),
            tag("td", tag("a", "decisions", href=links.decisions(deployment=name)),
                *((" · ", tag("a", "fairness", href=links.fairness(name)))
                  if state.get("monitored") else ())),
        ))
    head = tag("tr", *(tag("th", h) for h in ("Deployment", "Router", "Models", "Standing",
                                              "Ready", "")))
    return join([tag("h1", "Deployments"),
                 tag("table", tag("thead", head), tag("tbody", *rows), class_="grid")])


def _standing(router: dict[str, Any]) -> str:
    """Who leads: the champion, the primary, the best arm so far, or the weights."""
    if "champion" in router:
        return f"champion {router['champion']}"
    if "primary" in router:
        return f"primary {router['primary']}"
    means = {a: i.get("mean") for a, i in (router.get("arms") or {}).items()
             if isinstance(i.get("mean"), int | float)}
    if means:
        best = max(means, key=lambda a: means[a])
        if list(means.values()).count(means[best]) > 1:  # tied (at the prior, say)
            return "no arm ahead yet"
        return f"best so far {best} ({number(means[best])})"
    if "shares" in router:
        return ", ".join(f"{m} {percent(s)}" for m, s in router["shares"].items())
    return "–"


def _ready(ready: Any) -> Html:
    if ready is None:
        return Html("–")
    return tag("span", "ready" if ready else "not ready", class_="ok" if ready else "bad")


def deployment_body(state: dict[str, Any], traffic: dict[str, Any],
                    arms: list[dict[str, Any]], stored_agreement: dict[str, Any],
                    links: Links) -> Html:
    """One deployment's page (``state`` as ``GET /v2/deployments/{d}`` gives it, plus
    the console's own readings of the store)."""
    name, router = state["name"], state["router"]
    parts = [
        tag("h1", "Deployment ", tag("code", name), " ", tag("span", router["kind"],
                                                             class_="kind")),
        tag("p", tag("a", "Recent decisions", href=links.decisions(deployment=name)), " · ",
            tag("a", "Refused decisions", href=links.decisions(deployment=name, refused=1)),
            *((" · ", tag("a", "Fairness", href=links.fairness(name)))
              if state.get("monitored") else ()), class_="links"),
        _router_facts(router, state),
        _traffic(traffic),
        _arms(router, arms),
        _champion(router),
        _shadows(router, state.get("shadow_agreement", {}), stored_agreement),
        _breakers(state.get("health", {})),
    ]
    return join(parts)


def _router_facts(router: dict[str, Any], state: dict[str, Any]) -> Html:
    items: list[tuple[str, Any]] = [("Router", router["kind"]),
                                    ("Models", ", ".join(router.get("models", [])))]
    if "champion" in router:
        items.append(("Champion", tag("strong", router["champion"])))
        items.append(("Challengers' traffic", ", ".join(
            f"{m} {percent(s)}" for m, s in router.get("traffic", {}).items()) or "none"))
    if "primary" in router:
        items.append(("Primary", router["primary"]))
    if "shares" in router:
        items.append(("Weights", ", ".join(f"{m} {percent(s)}"
                                          for m, s in router["shares"].items())))
    if "epsilon" in router:
        items.append(("Exploration (epsilon)", number(router["epsilon"])))
    admission = state.get("admission") or {}
    if admission:
        items.append(("In flight (this replica)",
                      f"{admission.get('in_flight')} of {admission.get('max_in_flight')}, "
                      f"{admission.get('queued')} queued"))
    return dl(items)


def _traffic(traffic: dict[str, Any]) -> Html:
    title = tag("h2", "Traffic share over time")
    if not traffic["x"]:
        return join([title, tag("p", "No decisions yet.", class_="empty")])
    spec = {"kind": "time", "x": traffic["x"], "series": traffic["series"], "percent": True}
    totals = ", ".join(f"{arm} {percent(share)}" for arm, share in traffic["total"].items())
    note = (f"The last {traffic['decisions']} decisions, {when(traffic['since'])} to "
            f"{when(traffic['until'])}, in equal time buckets: {totals}.")
    return join([title, tag("div", class_="chart", id="traffic", data_chart="traffic-data"),
                 json_script("traffic-data", spec),
                 tag("p", note, class_="note", id="traffic-note")])


def _arms(router: dict[str, Any], arms: list[dict[str, Any]]) -> Html:
    if not arms:
        return Html("")
    bayes = any("alpha" in (a or {}) for a in (router.get("arms") or {}).values())
    what = ("posterior mean reward with its 95 % credible interval (Beta)" if bayes else
            "empirical mean reward with its 95 % Wilson interval")
    has_p = any(a["p_beats_champion"] is not None for a in arms)
    head = ["Arm", "Scored", "Reward sum", "Mean", "95 % interval", ""]
    if has_p:
        head.append("P(beats champion)")
    rows = []
    for a in arms:
        cells = [tag("td", a["arm"]), tag("td", number(a["n"]), class_="num"),
                 tag("td", number(a["reward_sum"], 1), class_="num"),
                 tag("td", number(a["mean"]), class_="num"),
                 tag("td", f"[{number(a['low'])}, {number(a['high'])}]", class_="num"),
                 tag("td", interval_bar(a["mean"], a["low"], a["high"]))]
        if has_p:
            cells.append(tag("td", number(a["p_beats_champion"]), class_="num"))
        rows.append(tag("tr", *cells, data_arm=a["arm"]))
    return join([tag("h2", "Arms"), tag("p", f"Each arm's {what}.", class_="note"),
                 _table(head, rows, "arms")])


def _table(head: list[str], rows: list[Html], css: str = "") -> Html:
    return tag("table", tag("thead", tag("tr", *(tag("th", h) for h in head))),
               tag("tbody", *rows), class_=f"grid {css}".strip())


def _champion(router: dict[str, Any]) -> Html:
    if "champion" not in router:
        return Html("")
    rule = router.get("promotion") or {}
    parts = [tag("h2", "Champion and promotions"),
             dl([("Champion", tag("strong", router["champion"])),
                 ("Promotion rule", _rule(rule))])]
    promotions = router.get("promotions") or []
    if promotions:
        rows = [tag("tr", tag("td", when(p.get("time"))), tag("td", tag("strong",
                                                                        p.get("champion"))),
                    tag("td", p.get("previous")), tag("td", p.get("reason")),
                    tag("td", _evidence(p.get("evidence") or {})))
                for p in reversed(promotions)]
        parts.append(_table(["Time", "Promoted", "Over", "Reason", "Evidence"], rows,
                            "promotions"))
    else:
        parts.append(tag("p", "No promotion yet.", class_="empty"))
    refusals = router.get("refusals") or []
    if refusals:
        rows = [tag("tr", tag("td", when(r.get("time"))), tag("td", r.get("challenger")),
                    tag("td", _evidence({"probability": r.get("probability"),
                                         "guard": r.get("evidence")})))
                for r in refusals]
        parts.append(join([tag("h3", "Promotions refused by the guardrail"),
                           _table(["Time", "Challenger", "Evidence"], rows, "refusals")]))
    return join(parts)


def _rule(rule: dict[str, Any]) -> str:
    if not rule:
        return "–"
    when_ = "automatic" if rule.get("auto") else "manual only"
    return (f"{when_}: a challenger with P(better) >= {rule.get('probability')} after "
            f"{rule.get('min_samples')} scored decisions each")


def _evidence(evidence: dict[str, Any]) -> Html:
    """A promotion's evidence: P(better), each side's counts and mean, the guardrail's
    verdict per attribute."""
    items = []
    if evidence.get("probability") is not None:
        items.append(tag("li", f"P(challenger better) = {number(evidence['probability'])}"))
    for side in ("champion", "challenger"):
        info = evidence.get(side)
        if isinstance(info, dict):
            items.append(tag("li", f"{side} {info.get('model', '')}: n = "
                                   f"{number(info.get('n'))}, mean = {number(info.get('mean'))}"))
    guard = evidence.get("guard")
    if isinstance(guard, dict):
        items.append(_guard(guard))
    return tag("ul", *items, class_="evidence") if items else Html("–")


def _guard(verdict: dict[str, Any]) -> Html:
    """The fairness guardrail's verdict: allowed or refused, and why, per attribute."""
    lines = []
    for name, v in (verdict.get("attributes") or {}).items():
        if "worse_by" in v:
            champ, chall = v.get("champion") or {}, v.get("challenger") or {}
            text = (f"{name}: worse by {number(v['worse_by'])} (worst group "
                    f"{champ.get('worst_group')} {number(champ.get('distance'))} for the "
                    f"champion, {chall.get('worst_group')} {number(chall.get('distance'))} "
                    "for the challenger)")
        else:
            text = f"{name}: {v.get('reason', 'allowed' if v.get('allowed') else 'refused')}"
        lines.append(tag("li", text))
    head = (f"fairness guardrail {'allowed' if verdict.get('allowed') else 'refused'} "
            f"({verdict.get('metric', '')}, tolerance {number(verdict.get('tolerance'))})")
    return tag("li", head, tag("ul", *lines) if lines else "")


def _shadows(router: dict[str, Any], running: dict[str, Any],
             stored: dict[str, Any]) -> Html:
    models = sorted(set(running) | set(stored) | set(router.get("shadows") or {}))
    if not models:
        return Html("")
    fractions = router.get("shadows") or {}
    rows = []
    for m in models:
        mine, live = stored.get(m, {}), running.get(m, {})
        rows.append(tag(
            "tr", tag("td", m),
            tag("td", percent(fractions[m]) if m in fractions else "–", class_="num"),
            tag("td", number(mine.get("compared")), class_="num"),
            tag("td", percent(mine.get("agreement")), class_="num"),
            tag("td", number(live.get("compared")), class_="num"),
            tag("td", percent(live.get("agreement")), class_="num"),
            tag("td", number(live.get("mean_abs_difference")), class_="num")))
    head = ["Shadow", "Mirrored", "Compared (recent)", "Agreement (recent)",
            "Compared (this replica)", "Agreement (this replica)", "Mean |difference|"]
    note = ("Recent: the decisions of the traffic chart, from the store (every replica's). "
            "This replica: running figures since it started.")
    return join([tag("h2", "Shadow agreement"), _table(head, rows, "shadows"),
                 tag("p", note, class_="note")])


def _breakers(health: dict[str, Any]) -> Html:
    models = health.get("models") or {}
    if not models:
        return Html("")
    rows = [tag("tr", tag("td", m), tag("td", tag("span", b.get("state"),
                                                  class_=f"breaker {b.get('state')}")),
                tag("td", number(b.get("consecutive_failures")), class_="num"),
                tag("td", b.get("last_error") or "–"))
            for m, b in models.items()]
    return join([tag("h2", "Models (circuit breakers of this replica)"),
                 _table(["Model", "Breaker", "Consecutive failures", "Last error"], rows,
                        "breakers")])
