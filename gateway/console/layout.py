"""The console's page frame, links and small shared pieces (definition lists, interval
bars, timestamps, error and login pages)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urlencode

from gateway.console.markup import Html, fill, join, number, tag

__all__ = ["ROOT", "Links", "dl", "error_body", "interval_bar", "login_body", "page", "when"]

ROOT = "/console"
"""Where the console is served."""


class Links:
    """The address of every console page (the snapshot writer maps them to files)."""

    def __init__(self, root: str = ROOT) -> None:
        self.root = root

    def home(self) -> str:
        return f"{self.root}/"

    def deployment(self, name: str) -> str:
        return f"{self.root}/deployments/{quote(name, safe='')}"

    def fairness(self, name: str, window: str | None = None) -> str:
        query = f"?{urlencode({'window': window})}" if window else ""
        return f"{self.deployment(name)}/fairness{query}"

    def decisions(self, **query: Any) -> str:
        kept = {k: v for k, v in query.items() if v not in (None, "", False)}
        return f"{self.root}/decisions" + (f"?{urlencode(kept)}" if kept else "")

    def decision(self, decision_id: str) -> str:
        return f"{self.root}/decisions/{quote(decision_id, safe='')}"

    def static(self, name: str) -> str:
        return f"{self.root}/static/{name}"

    def login(self, next_page: str | None = None) -> str:
        return f"{self.root}/login" + (f"?{urlencode({'next': next_page})}" if next_page else "")

    def logout(self) -> str:
        return f"{self.root}/logout"


_FRAME = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Arbiter console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{uplot_css}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<header class="top">
<a class="brand" href="{home}">Arbiter <span>console</span></a>
<nav>{nav}</nav>
<div class="who">{who}</div>
</header>
<main>
{body}
</main>
<script src="{uplot_js}"></script>
<script src="{js}"></script>
</body>
</html>
"""


def page(links: Links, title: str, body: Html, caller: str | None = None,
         signed_in: bool = False) -> str:
    """A whole page: header with navigation and the caller's name, ``body``, the
    chart scripts."""
    nav = join([tag("a", "Deployments", href=links.home()),
                tag("a", "Decisions", href=links.decisions())], " ")
    who = Html("")
    if caller:
        who = join([tag("span", caller, class_="caller")])
    if signed_in:
        who = join([who, tag("form", tag("button", "Sign out", type="submit"),
                             method="post", action=links.logout(), class_="logout")])
    return fill(_FRAME, title=title, home=links.home(), nav=nav, who=who, body=body,
                uplot_css=links.static("uPlot.min.css"), css=links.static("console.css"),
                uplot_js=links.static("uPlot.iife.min.js"), js=links.static("console.js"))


def when(seconds: float | None) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if seconds is None:
        return "–"
    stamp = dt.datetime.fromtimestamp(float(seconds), dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def dl(items: list[tuple[str, Any]]) -> Html:
    """A definition list of (term, value) pairs; values escaped unless :class:`Html`."""
    return tag("dl", join(join([tag("dt", k), tag("dd", v)]) for k, v in items),
               class_="facts")


def interval_bar(mean: float | None, low: float | None, high: float | None) -> Html:
    """An inline SVG of a value in [0, 1] with its interval."""
    if mean is None and low is None:
        return Html("")
    parts = [tag("line", x1="0", x2="100", y1="6", y2="6", class_="axis")]
    if low is not None and high is not None:
        parts.append(tag("rect", x=f"{100 * low:.2f}", y="2", height="8",
                         width=f"{max(100 * (high - low), 0.5):.2f}", class_="ci"))
    if mean is not None:
        parts.append(tag("line", x1=f"{100 * mean:.2f}", x2=f"{100 * mean:.2f}", y1="0",
                         y2="12", class_="mean"))
    label = f"{number(mean)} [{number(low)}, {number(high)}]"
    return tag("svg", tag("title", label), *parts, viewBox="0 0 100 12", width="140",
               height="14", class_="interval", role="img", aria_label=label)


def error_body(status: int, message: str, links: Links) -> Html:
    """The body of an error page."""
    return join([tag("h1", f"{status}"), tag("p", message, class_="error"),
                 tag("p", tag("a", "Back to the deployments", href=links.home()))])


def login_body(links: Links, next_page: str, message: str | None = None) -> Html:
    """The sign-in form: a bearer token with ``decisions:read``, kept in an HttpOnly,
    SameSite=Strict cookie."""
    form = tag(
        "form",
        tag("label", "Bearer token", tag("input", type="password", name="token",
                                          autocomplete="current-password", required=True,
                                          autofocus=True)),
        tag("input", type="hidden", name="next", value=next_page),
        tag("button", "Sign in", type="submit"),
        method="post", action=links.login(), class_="login",
    )
    note = tag("p", "The console needs a token with the decisions:read scope. It is kept "
               "in an HttpOnly cookie for this site only, for 8 hours or until you sign out.",
               class_="note")
    alert = tag("p", message, class_="error") if message else Html("")
    return join([tag("h1", "Sign in"), alert, form, note])
