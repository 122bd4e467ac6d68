"""The decision pages: recent decisions with filters and a look-up by id, and one
decision in full: its inputs in the data's own terms, every model's output (routed and
shadows), the routed model and its propensity, the feedback with its history, and the
explanation's reasons."""

from __future__ import annotations

from typing import Any

from gateway.console.layout import Links, dl, when
from gateway.console.markup import Html, join, number, tag
from gateway.console.reading import OUTCOMES, Encoding, outcome_of, refused
from gateway.decisions import Decision
from gateway.groups import ApprovalSpec

__all__ = ["decision_body", "decisions_body"]

_SHOWN_VALUES = 64


def decisions_body(decisions: list[Decision], filters: dict[str, Any],
                   choices: dict[str, list[str]], approvals: dict[str, ApprovalSpec],
                   encodings: dict[str, Encoding | None], links: Links) -> Html:
    """The decision list: the look-up form, the filters, the newest decisions first."""
    lookup = tag("form", tag("label", "Decision id", tag("input", name="id", type="search",
                                                          placeholder="decision id",
                                                          required=True)),
                 tag("button", "Open", type="submit"), method="get",
                 action=links.decisions(), class_="lookup")
    rows = [_row(d, approvals.get(d.deployment, ApprovalSpec()), encodings.get(d.deployment),
                 links) for d in decisions]
    head = ["Time", "Decision", "Deployment", "Routed model", "Propensity", "Output",
            "Outcome", "Explanation"]
    table = tag("table", tag("thead", tag("tr", *(tag("th", h) for h in head))),
                tag("tbody", *rows), class_="grid decisions")
    shown = (f"{len(decisions)} most recent decisions" if decisions else
             "No decision matches.")
    return join([tag("h1", "Decisions"), lookup, _filters(filters, choices, links),
                 tag("p", shown, class_="note"), table if decisions else ""])


def _filters(filters: dict[str, Any], choices: dict[str, list[str]], links: Links) -> Html:
    def select(name: str, label: str, options: list[tuple[str, str]]) -> Html:
        chosen = filters.get(name) or ""
        return tag("label", label, tag("select", *(
            tag("option", text, value=value, selected=value == chosen)
            for value, text in [("", "any"), *options]), name=name))

    return tag(
        "form",
        select("deployment", "Deployment", [(d, d) for d in choices["deployments"]]),
        select("model", "Routed model", [(m, m) for m in choices["models"]]),
        select("outcome", "Outcome", [(k, f"{k}: {v}") for k, v in OUTCOMES.items()]),
        tag("label", tag("input", type="checkbox", name="refused", value="1",
                         checked=bool(filters.get("refused"))), "refused only",
            class_="check"),
        tag("button", "Filter", type="submit"),
        method="get", action=links.decisions(), class_="filters",
    )


def _row(d: Decision, approval: ApprovalSpec, encoding: Encoding | None,
         links: Links) -> Html:
    output = (d.outputs.get(d.routed) or {}).get(approval.output) or {}
    shown = _values(output.get("data"), encoding)
    if refused(d, approval):
        shown = join([shown, " ", tag("span", "refused", class_="badge refused")])
    explanation = (d.explanation or {}).get("status", "–")
    return tag("tr",
               tag("td", when(d.time)),
               tag("td", tag("a", d.id, href=links.decision(d.id), class_="id")),
               tag("td", tag("a", d.deployment, href=links.deployment(d.deployment))),
               tag("td", d.routed), tag("td", number(d.propensity), class_="num"),
               tag("td", shown), tag("td", outcome_of(d)), tag("td", explanation))


def _values(data: Any, encoding: Encoding | None) -> Html:
    if not isinstance(data, list):
        return Html("–")
    labels = [encoding.label(v) if encoding else str(v) for v in data[:_SHOWN_VALUES]]
    more = f" … ({len(data)} values)" if len(data) > _SHOWN_VALUES else ""
    return join([", ".join(labels), more])


def decision_body(d: Decision, approval: ApprovalSpec, encoding: Encoding | None,
                  links: Links) -> Html:
    """One decision in full."""
    facts: list[tuple[str, Any]] = [
        ("Deployment", tag("a", d.deployment, href=links.deployment(d.deployment))),
        ("Time", when(d.time)), ("Router", d.router),
        ("Routed model", tag("strong", d.routed)),
        ("Propensity", f"{number(d.propensity)} (probability that the router chose "
                       f"{d.routed})"),
        ("Status", tag("span", d.status, class_="ok" if d.status == "ok" else "bad")),
    ]
    if refused(d, approval):
        facts.append(("Decision", tag("span", "refused", class_="badge refused")))
    if d.fallback:
        facts.append(("Fallback", f"answered in place of {d.fallback.get('from')} "
                                  f"({d.fallback.get('reason')})"))
    if d.request_id:
        facts.append(("Request id", tag("code", d.request_id)))
    for key, value in d.parameters.items():
        facts.append((f"Parameter {key}", tag("code", _short(value))))
    return join([tag("h1", "Decision ", tag("code", d.id, class_="id")), dl(facts),
                 _inputs(d.inputs, encoding), _outputs(d, encoding),
                 _feedback(d, encoding), _explanation(d.explanation)])


def _plain(value: Any) -> str:
    """A value of the data: a category name as it is, a number without noise."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + " …"


def _inputs(inputs: dict[str, Any], encoding: Encoding | None) -> Html:
    parts = [tag("h2", "Inputs")]
    if not inputs:
        return join([*parts, tag("p", "The store keeps no inputs (store.inputs: drop).",
                                 class_="empty")])
    first = next(iter(inputs))
    rows = encoding.rows(inputs[first]) if encoding is not None else None
    if rows is not None and encoding is not None:
        head = ["Feature", *(f"Row {i + 1}" for i in range(len(rows)))] if len(rows) > 1 \
            else ["Feature", "Value"]
        body = [tag("tr", tag("th", name, scope="row"), *(tag("td", _plain(row[c]))
                                                           for row in rows))
                for c, name in enumerate(encoding.feature_names)]
        parts.append(tag("table", tag("thead", tag("tr", *(tag("th", h) for h in head))),
                         tag("tbody", *body), class_="grid inputs"))
        inputs = {k: v for k, v in inputs.items() if k != first}
    for name, doc in inputs.items():
        parts.append(tag("h3", name))
        parts.append(dl(_tensor_facts(doc)))
    return join(parts)


def _tensor_facts(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    facts: list[tuple[str, Any]] = [("Datatype", doc.get("datatype")),
                                    ("Shape", str(doc.get("shape")))]
    if "sha256" in doc:
        facts.append(("SHA-256", tag("code", doc["sha256"])))
    elif "data" in doc:
        data = doc["data"]
        facts.append(("Data", tag("code", _short(data[:_SHOWN_VALUES], 2000))))
    else:
        facts.append(("Data", "not recorded (too large)"))
    return facts


def _outputs(d: Decision, encoding: Encoding | None) -> Html:
    models = [d.routed, *[m for m in d.shadows if m != d.routed]]
    names: list[str] = []
    for m in models:
        names.extend(n for n in (d.outputs.get(m) or {}) if n not in names)
    head = ["Model", "Role", *names, "Latency (ms)", "Reward", "Error"]
    rows = []
    for m in models:
        outputs = d.outputs.get(m) or {}
        role = "routed" if m == d.routed else "shadow"
        cells = [tag("td", tag("strong", m) if role == "routed" else m), tag("td", role)]
        for n in names:
            data = (outputs.get(n) or {}).get("data")
            cells.append(tag("td", _output_values(n, data, encoding)))
        latency = d.latency_ms.get(m)
        reward = (d.rewards or {}).get(m)
        cells += [tag("td", number(latency, 2), class_="num"),
                  tag("td", number(reward), class_="num"),
                  tag("td", d.errors.get(m) or ("no answer yet" if m not in d.outputs else "–"))]
        rows.append(tag("tr", *cells, data_model=m))
    return join([tag("h2", "Outputs"), tag("table", tag("thead", tag("tr", *(
        tag("th", h) for h in head))), tag("tbody", *rows), class_="grid outputs")])


def _output_values(name: str, data: Any, encoding: Encoding | None) -> Html:
    if not isinstance(data, list):
        return Html("–")
    if all(isinstance(v, float) for v in data):
        return Html(", ".join(number(v) for v in data[:_SHOWN_VALUES]))
    return _values(data, encoding)


def _feedback(d: Decision, encoding: Encoding | None) -> Html:
    parts = [tag("h2", "Feedback")]
    if d.feedback is None:
        return join([*parts, tag("p", "No feedback yet.", class_="empty")])
    parts.append(dl(_feedback_facts(d.feedback, encoding)))
    if d.feedback_history:
        rows = [tag("tr", tag("td", when(h.get("time"))), tag("td", _short(h.get("truth"))),
                    tag("td", number(h.get("reward"))),
                    tag("td", ", ".join(f"{m} {number(r)}"
                                        for m, r in (h.get("rewards") or {}).items())))
                for h in d.feedback_history]
        parts.append(join([tag("h3", "Replaced by corrections (oldest first)"),
                           tag("table", tag("thead", tag("tr", *(tag("th", h) for h in (
                               "Time", "Truth", "Reward", "Rewards")))),
                               tag("tbody", *rows), class_="grid history")]))
    return join(parts)


def _feedback_facts(feedback: dict[str, Any], encoding: Encoding | None
                    ) -> list[tuple[str, Any]]:
    facts: list[tuple[str, Any]] = [("Received", when(feedback.get("time")))]
    truth = feedback.get("truth")
    if isinstance(truth, list):
        facts.append(("Truth", _values(truth, encoding)))
    elif truth is not None:
        facts.append(("Truth", tag("code", _short(truth))))
    if feedback.get("reward") is not None:
        facts.append(("Reward", number(feedback["reward"])))
    if feedback.get("source"):
        facts.append(("Source", feedback["source"]))
    if feedback.get("correction"):
        facts.append(("Correction", "yes"))
    facts.append(("Taught the router", ", ".join(feedback.get("learned") or []) or "no arm"))
    return facts


def _explanation(explanation: dict[str, Any] | None) -> Html:
    title = tag("h2", "Explanation")
    if not explanation:
        return join([title, tag("p", "This deployment does not explain its decisions.",
                                class_="empty")])
    docs = explanation.get("rows") or [explanation]
    parts = [title]
    for i, doc in enumerate(docs):
        if len(docs) > 1:
            parts.append(tag("h3", f"Row {i + 1}"))
        parts.append(_explained(doc))
    return join(parts)


def _explained(doc: dict[str, Any]) -> Html:
    """One explanation: its reasons when it gives them (the sentences an applicant is
    sent), else its summary, anchor or SHAP values; its status when not done."""
    inner = doc["explanation"] if isinstance(doc.get("explanation"), dict) else doc
    status = doc.get("status", "–")
    if status != "done":
        why, detail = doc.get("reason") or "", doc.get("detail") or ""
        return tag("p", f"Explanation {status}", f": {why}" if why else "",
                   f" ({detail})" if detail else "", class_="explanation-status")
    parts = []
    reasons = [r for r in doc.get("reasons") or inner.get("reasons") or []
               if isinstance(r, dict)]
    if reasons:
        parts.append(tag("ol", *(_reason(r) for r in reasons), class_="reasons"))
    withheld = [r for r in doc.get("withheld_reasons") or inner.get("withheld_reasons") or []
                if isinstance(r, dict)]
    if withheld:
        parts += [tag("h3", "Withheld from the applicant (protected features)"),
                  tag("ul", *(_reason(r) for r in withheld), class_="reasons withheld")]
    contrary = [r for r in doc.get("contrary_reasons") or inner.get("contrary_reasons") or []
                if isinstance(r, dict)]
    if contrary:
        parts += [tag("h3", "Not sent to the applicant (values in their favour)"),
                  tag("ul", *(_reason(r) for r in contrary), class_="reasons contrary")]
    if inner.get("summary"):
        parts.append(tag("p", inner["summary"], class_="summary"))
    return join([*parts, _anchor(inner), _shap(inner), _method(inner)])


def _reason(reason: dict[str, Any]) -> Html:
    code = reason.get("code")
    return tag("li", reason.get("sentence") or _short(reason), " ",
               tag("code", code, class_="code") if code else "")


def _method(doc: dict[str, Any]) -> Html:
    bits = [f"method {doc['method']}" if doc.get("method") else "",
            f"model {doc['model']}" if doc.get("model") else "",
            f"class {doc['explained_class_name']}" if doc.get("explained_class_name") else ""]
    text = ", ".join(b for b in bits if b)
    return tag("p", text, class_="note") if text else Html("")


def _anchor(doc: dict[str, Any]) -> Html:
    if not doc.get("anchor"):
        return Html("")
    return join([tag("ul", *(tag("li", c) for c in doc["anchor"]), class_="anchor"),
                 tag("p", f"precision {number(doc.get('precision'))}, coverage "
                          f"{number(doc.get('coverage'))}", class_="note")])


def _shap(doc: dict[str, Any]) -> Html:
    values = doc.get("shap_values")
    if not isinstance(values, dict):
        return Html("")
    top = sorted(values.items(), key=lambda kv: -abs(kv[1]))[:8]
    rows = [tag("tr", tag("td", k), tag("td", number(v), class_="num")) for k, v in top]
    return tag("table", tag("tbody", *rows), class_="grid shap")
