"""HTML built safely: every value is escaped unless it is already :class:`Html`.

The console renders client data (a decision's inputs, parameters, request id, error
messages), so nothing reaches a page unescaped by accident: :func:`esc` escapes any
value that is not ``Html``, :func:`tag` escapes its attributes and children, and
:func:`fill` escapes every value it puts into a template. Data for the charts goes in
a ``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are JSON
escapes (:func:`json_script`), so it can never close the block.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["Html", "esc", "fill", "join", "json_script", "number", "percent", "tag"]


class Html(str):
    """Markup that is already safe to put in a page."""

    __slots__ = ()


def esc(value: Any) -> Html:
    """``value`` as text in a page (quotes escaped too, so it fits attributes);
    :class:`Html` is kept as it is, None is empty."""
    if isinstance(value, Html):
        return value
    if value is None:
        return Html("")
    return Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], separator: str = "") -> Html:
    """The parts, each escaped unless already :class:`Html`, one after the other."""
    return Html(esc(separator).join(esc(p) for p in parts))


def tag(element: str, /, *children: Any, **attrs: Any) -> Html:
    """``<element attrs>children</element>``. Attribute names drop a trailing ``_``
    (``class_``) and turn ``_`` into ``-`` (``data_x``); True is a bare attribute, None
    and False are left out."""
    parts = [element]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{esc(value)}"')
    opening = f"<{' '.join(parts)}>"
    if element in ("input", "meta", "link", "br"):
        return Html(opening)
    return Html(f"{opening}{join(children)}</{element}>")


def fill(template: str, **values: Any) -> Html:
    """``template`` (a constant of the console's own) with each ``{name}`` replaced by
    its value, escaped unless already :class:`Html`."""
    return Html(template.format(**{k: esc(v) for k, v in values.items()}))


def json_script(element_id: str, doc: Any) -> Html:
    """A ``<script type="application/json">`` block holding ``doc`` (non-finite floats
    become null)."""
    raw = orjson.dumps(_finite(doc)).decode()
    raw = raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Html(f'<script type="application/json" id="{esc(element_id)}">{raw}</script>')


def _finite(doc: Any) -> Any:
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {str(k): _finite(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_finite(v) for v in doc]
    return doc


def number(value: Any, digits: int = 3) -> str:
    """A number for a table cell ("–" when missing or not finite)."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return str(value)


def percent(value: Any, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage ("–" when missing)."""
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not math.isfinite(value):
        return "–"
    return f"{100 * value:.{digits}f} %"
