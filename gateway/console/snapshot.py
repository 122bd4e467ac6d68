"""A static copy of a running console: its pages saved as files whose links point to
each other, readable offline after the gateway has stopped (the demo writes one).

The crawl starts at ``/console/`` and follows the console's own links: every
deployment and fairness page (each window), the decision lists without filters or by
deployment, the first ``decisions`` decision pages they link to, and the static files.
Links to pages left out point nowhere; forms (look-up, filters, sign-out) need the live
console and are left as they are.
"""

from __future__ import annotations

import html
import re
import time
import urllib.request
from collections import deque
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from gateway.console.layout import ROOT, when

__all__ = ["snapshot_name", "write_snapshot"]

_LINK = re.compile(r'(href|src|action)="(/console/[^"]*)"')
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def snapshot_name(link: str) -> str:
    """The file a console address is saved as, e.g. ``/console/deployments/credit`` ->
    ``deployment-credit.html``, ``/console/static/console.css`` -> ``static/console.css``."""
    parts = urlsplit(link)
    path = parts.path[len(ROOT):].strip("/")
    if path.startswith("static/"):
        return "static/" + _UNSAFE.sub("_", path[len("static/"):])
    words = path.split("/") if path else ["index"]
    if words[0] in ("deployments", "decisions") and len(words) > 1:
        words[0] = words[0][:-1]
    for key, value in parse_qsl(parts.query):
        words.append(f"{key}-{value}")
    return _UNSAFE.sub("_", "-".join(words)) + ".html"


def _wanted(link: str, decision_pages: int) -> bool:
    parts = urlsplit(link)
    path, query = parts.path, dict(parse_qsl(parts.query))
    if path.startswith(f"{ROOT}/static/") or path in (f"{ROOT}/", ROOT):
        return True
    if path.startswith(f"{ROOT}/deployments/"):
        return set(query) <= {"window"}
    if path == f"{ROOT}/decisions":
        return set(query) <= {"deployment", "refused"}
    if path.startswith(f"{ROOT}/decisions/"):
        return decision_pages > 0
    return False


def write_snapshot(base_url: str, out: Path, token: str | None = None,
                   decisions: int = 20, timeout_s: float = 30.0) -> list[Path]:
    """Crawl the console at ``base_url`` (``http://host:port``) into ``out``.

    Args:
        base_url: the gateway's REST address.
        out: folder written (``index.html`` is the first page).
        token: bearer token with ``decisions:read`` when the gateway has auth.
        decisions: most decision pages saved.
        timeout_s: per request.

    Returns:
        The files written.

    Raises:
        urllib.error.URLError: the gateway cannot be reached, or a page fails.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out.mkdir(parents=True, exist_ok=True)
    queue, seen, pages = deque([f"{ROOT}/"]), {f"{ROOT}/"}, {}
    written: list[Path] = []
    budget = decisions
    while queue:
        link = queue.popleft()
        request = urllib.request.Request(base_url.rstrip("/") + link, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            body = reply.read()
        target = out / snapshot_name(link)
        target.parent.mkdir(parents=True, exist_ok=True)
        if link.startswith(f"{ROOT}/static/"):
            target.write_bytes(body)
            written.append(target)
            continue
        text = body.decode()
        pages[target] = text
        for _, found in _LINK.findall(text):
            found = html.unescape(found)
            if found in seen or not _wanted(found, budget):
                continue
            if urlsplit(found).path.startswith(f"{ROOT}/decisions/"):
                budget -= 1
            seen.add(found)
            queue.append(found)
    stamp = f'<p class="note">Snapshot of {html.escape(base_url)} taken {when(time.time())}.</p>'
    for target, text in pages.items():
        text = _LINK.sub(lambda m: _relinked(m, seen), text).replace("<main>\n",
                                                                      f"<main>\n{stamp}\n", 1)
        target.write_text(text)
        written.append(target)
    return written


def _relinked(match: re.Match, saved: set[str]) -> str:
    """A saved page's file name; a page not saved points nowhere (forms keep theirs)."""
    attribute, link = match.group(1), html.unescape(match.group(2))
    if attribute == "action":
        return match.group(0)
    if link not in saved:
        return f'{attribute}="#" title="not in this snapshot"'
    return f'{attribute}="{html.escape(snapshot_name(link))}"'
