"""The console's routes on the gateway's aiohttp app, and who may see them.

=====  ==============================================  ===================================
verb   path                                            page
=====  ==============================================  ===================================
GET    /console/                                       every deployment
GET    /console/deployments/{deployment}               router, traffic, arms, promotions,
                                                       shadows, breakers
GET    /console/deployments/{deployment}/fairness      ``?window=``: rates per group, alerts
GET    /console/decisions                              ``?deployment=&model=&outcome=
                                                       &refused=1&limit=`` (``?id=`` opens one)
GET    /console/decisions/{decision_id}                one decision
GET    /console/login, POST /console/login             sign in with a bearer token
POST   /console/logout                                 sign out
GET    /console/static/{name}                          the stylesheet and the chart script
=====  ==============================================  ===================================

With auth, every page needs a token holding ``decisions:read`` (or ``admin``), sent as
``Authorization: Bearer <token>`` or, since a browser cannot send that header when it
follows a link, kept by the login form in a cookie (HttpOnly, SameSite=Strict, path
``/console``, Secure over TLS, 8 hours). The console checks it with the gateway's own
:class:`~protos.server.auth.AuthPolicy`; its routes are therefore left open to the
server stack's middleware, which reads the header only. A page without a token
redirects to the login form; an unknown token gets 401, one without the scope 403.
Pages are served with a Content-Security-Policy that allows scripts and styles from
the console alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiohttp import web

from gateway.console.decisions import decision_body, decisions_body
from gateway.console.deployments import deployment_body, index_body
from gateway.console.fairness import fairness_body
from gateway.console.layout import ROOT, Links, error_body, login_body, page
from gateway.console.markup import Html
from gateway.console.reading import (
    OUTCOMES,
    Encoding,
    approval_of,
    arm_rows,
    decision_filter,
    newest,
    stored_agreement,
    traffic,
)
from protos.errors import (
    ArbiterError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from protos.server.auth import DECISIONS_READ, AuthPolicy, Principal

__all__ = ["CONSOLE_ROUTES", "COOKIE", "Console", "add_console"]

log = logging.getLogger("arbiter.console")

COOKIE = "arbiter_console"
"""Cookie holding the token the login form was given."""
COOKIE_MAX_AGE_S = 8 * 3600
TRAFFIC_DECISIONS = 1000
"""Most recent decisions read for a deployment's traffic chart and shadow agreement."""
LIST_LIMIT = 50
MAX_LIST_LIMIT = 500

CONSOLE_ROUTES = frozenset({
    ROOT, f"{ROOT}/", f"{ROOT}/login", f"{ROOT}/logout", f"{ROOT}/static/{{name}}",
    f"{ROOT}/deployments/{{deployment}}", f"{ROOT}/deployments/{{deployment}}/fairness",
    f"{ROOT}/decisions", f"{ROOT}/decisions/{{decision_id}}",
})
"""Route patterns of the console (open to the stack's middleware: see the docstring)."""

_STATIC = {"uPlot.iife.min.js": "application/javascript", "uPlot.min.css": "text/css",
           "console.js": "application/javascript", "console.css": "text/css"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-store"}

Page = tuple[str, Html]
Handler = Callable[[web.Request], Awaitable[Page | web.StreamResponse]]


class Console:
    """The console of one gateway (see the module docstring).

    Args:
        gateway: the running gateway (``gateway.app.Gateway``): its deployments, store,
            fairness monitors.
        policy: the gateway's auth policy; None: no auth (every caller sees everything).
    """

    def __init__(self, gateway: Any, policy: AuthPolicy | None, links: Links | None = None):
        self.gateway = gateway
        self.policy = policy
        self.links = links or Links()
        specs = {name: d.spec for name, d in gateway.deployments.items()}
        self.encodings = {name: Encoding.of(spec) for name, spec in specs.items()}
        self.approvals = {name: approval_of(spec) for name, spec in specs.items()}
        folder = Path(__file__).parent / "static"
        self.static = {name: (folder / name).read_bytes() for name in _STATIC}

    # -- who is calling --------------------------------------------------------------
    def caller(self, request: web.Request) -> Principal | None:
        """The caller, from the Authorization header or the login cookie; None
        without auth.

        Raises:
            UnauthenticatedError: no token, or an unknown one.
            PermissionDeniedError: the token lacks ``decisions:read``.
        """
        if self.policy is None:
            return None
        authorization = request.headers.get("Authorization")
        cookie = request.cookies.get(COOKIE)
        if not authorization and cookie:
            authorization = f"Bearer {cookie}"
        caller = self.policy.principal(authorization)
        if not caller.allows(DECISIONS_READ):
            raise PermissionDeniedError(f"token {caller.name!r} lacks the scope "
                                        f"{DECISIONS_READ!r} the console needs")
        return caller

    def guarded(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """``handler`` behind the auth check, its page framed, errors shown as pages."""

        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                caller = self.caller(request)
            except UnauthenticatedError as exc:
                if not request.headers.get("Authorization") and COOKIE not in request.cookies:
                    return see_other(self.links.login(request.path_qs))
                response = self.html(401, "Sign in", login_body(
                    self.links, request.path_qs, exc.message))
                response.del_cookie(COOKIE, path=ROOT)
                return response
            except PermissionDeniedError as exc:
                return self.html(403, "Forbidden", error_body(403, exc.message, self.links),
                                 signed_in=COOKIE in request.cookies)
            name = caller.name if caller is not None else None
            signed_in = caller is not None and COOKIE in request.cookies
            try:
                result = await handler(request)
            except ArbiterError as exc:
                return self.html(exc.status, str(exc.status),
                                 error_body(exc.status, exc.message, self.links), name,
                                 signed_in)
            if isinstance(result, web.StreamResponse):
                return result
            title, body = result
            return self.html(200, title, body, name, signed_in)

        return serve

    def html(self, status: int, title: str, body: Html, caller: str | None = None,
             signed_in: bool = False) -> web.Response:
        """A framed page with the console's security headers."""
        text = page(self.links, title, body, caller, signed_in)
        return web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8", headers=_HEADERS)

    # -- sign in and out -------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self.policy is None:
            return see_other(self.links.home())
        return self.html(200, "Sign in", login_body(self.links,
                                                    _next(request.query.get("next"))))

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Check the form's token; keep it in the cookie and go to ``next``."""
        if self.policy is None:
            return see_other(self.links.home())
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlparse(origin).netloc != request.host:
            return self.html(403, "Forbidden", error_body(
                403, "sign-in from another site refused", self.links))
        form = await request.post()
        token, next_page = str(form.get("token", "")).strip(), _next(str(form.get("next", "")))
        try:
            caller = self.policy.principal(f"Bearer {token}")
        except UnauthenticatedError as exc:
            return self.html(401, "Sign in", login_body(self.links, next_page, exc.message))
        if not caller.allows(DECISIONS_READ):
            message = f"token {caller.name!r} lacks the scope {DECISIONS_READ!r}"
            return self.html(403, "Sign in", login_body(self.links, next_page, message))
        response = see_other(next_page)
        response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE_S, path=ROOT,
                            httponly=True, samesite="Strict", secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = see_other(self.links.login() if self.policy else self.links.home())
        response.del_cookie(COOKIE, path=ROOT)
        return response

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.static:
            raise web.HTTPNotFound()
        return web.Response(body=self.static[name], content_type=_STATIC[name],
                            charset="utf-8", headers={"Cache-Control": "public, max-age=3600",
                                                      "X-Content-Type-Options": "nosniff"})

    # -- pages -----------------------------------------------------------------------
    def state(self, name: str) -> dict[str, Any]:
        """A deployment's state as ``GET /v2/deployments/{d}`` gives a non-admin caller
        (no pod URLs), and whether it is monitored."""
        snapshot = self.gateway.deployment(name).snapshot()
        snapshot["models"] = {k: {n: v for n, v in m.items() if n != "url"}
                              for k, m in snapshot.get("models", {}).items()}
        snapshot["monitored"] = name in self.gateway.monitors
        return snapshot

    async def index(self, request: web.Request) -> Page:
        states = {name: self.state(name) for name in self.gateway.deployments}
        return "Deployments", index_body(states, self.links)

    async def deployment(self, request: web.Request) -> Page:
        name = request.match_info["deployment"]
        state = self.state(name)
        deployment = self.gateway.deployment(name)
        recent = await newest(self.gateway.store, name, TRAFFIC_DECISIONS)
        shares = traffic(recent, list(deployment.router.models))
        agreement = stored_agreement(recent, deployment.spec.feedback.output)
        body = deployment_body(state, shares, arm_rows(state["router"]), agreement,
                               self.links)
        return f"Deployment {name}", body

    async def decisions(self, request: web.Request) -> Page | web.StreamResponse:
        query = request.query
        if query.get("id", "").strip():
            return see_other(self.links.decision(query["id"].strip()))
        filters = _filters(query, self.gateway)
        names = [filters["deployment"]] if filters["deployment"] else list(
            self.gateway.deployments)
        found = []
        for name in names:
            keep = decision_filter(filters["model"], filters["outcome"], filters["refused"],
                                   self.approvals[name])
            found += await newest(self.gateway.store, name, filters["limit"], keep)
        found = sorted(found, key=lambda d: (d.time, d.id), reverse=True)[:filters["limit"]]
        choices = {"deployments": list(self.gateway.deployments),
                   "models": sorted(self.gateway.config.models)}
        return "Decisions", decisions_body(found, filters, choices, self.approvals,
                                           self.encodings, self.links)

    async def decision(self, request: web.Request) -> Page:
        record = await self.gateway.store.get(request.match_info["decision_id"])
        approval = self.approvals.get(record.deployment) or approval_of(
            next(iter(self.gateway.deployments.values())).spec)
        body = decision_body(record, approval, self.encodings.get(record.deployment),
                             self.links)
        return f"Decision {record.id}", body

    async def fairness(self, request: web.Request) -> Page:
        name = request.match_info["deployment"]
        self.gateway.deployment(name)
        monitor = self.gateway.monitors.get(name)
        if monitor is None:
            raise ModelNotFoundError(f"deployment {name!r} has no monitoring")
        windows = list(monitor.windows)
        window = request.query.get("window") or (windows[1] if len(windows) > 1 else "all")
        totals = self.gateway.fairness(name, {"window": "all", "buckets": "1"})
        over_time = None
        if window != "all":
            over_time = self.gateway.fairness(name, {"window": window, "buckets": "48"})
        return f"Fairness of {name}", fairness_body(name, totals, over_time, windows,
                                                    self.links)


def _next(value: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if value and (value == ROOT or value.startswith(ROOT + "/")) and "\\" not in value:
        return value
    return f"{ROOT}/"


def _filters(query: Any, gateway: Any) -> dict[str, Any]:
    """The decision list's filters from the query string.

    Raises:
        ModelNotFoundError: an unknown deployment.
        InvalidRequestError: an unknown model or outcome, a bad limit.
    """
    deployment = query.get("deployment") or None
    if deployment is not None:
        gateway.deployment(deployment)
    model = query.get("model") or None
    if model is not None and model not in gateway.config.models:
        raise InvalidRequestError(f"unknown model {model!r}")
    outcome = query.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidRequestError(f"outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
    limit = query.get("limit", str(LIST_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST_LIMIT:
        raise InvalidRequestError(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    refused = query.get("refused", "") in ("1", "on", "true")
    return {"deployment": deployment, "model": model, "outcome": outcome,
            "refused": refused, "limit": int(limit)}


def add_console(app: web.Application, gateway: Any, policy: AuthPolicy | None) -> Console:
    """Serve the console on ``app`` (see the module docstring); with ``policy``, its
    routes are opened to the stack's middleware and checked by the console itself."""
    console = Console(gateway, policy)
    if policy is not None:
        policy.open_paths = policy.open_paths | CONSOLE_ROUTES
    add = app.router.add_get
    add(ROOT, _home)
    add(f"{ROOT}/", console.guarded(console.index))
    add(f"{ROOT}/deployments/{{deployment}}", console.guarded(console.deployment))
    add(f"{ROOT}/deployments/{{deployment}}/fairness", console.guarded(console.fairness))
    add(f"{ROOT}/decisions", console.guarded(console.decisions))
    add(f"{ROOT}/decisions/{{decision_id}}", console.guarded(console.decision))
    add(f"{ROOT}/login", console.login_form)
    app.router.add_post(f"{ROOT}/login", console.login)
    app.router.add_post(f"{ROOT}/logout", console.logout)
    add(f"{ROOT}/static/{{name}}", console.static_file)
    return console


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` (returned, not raised: the stack's error table would turn
    a raised redirect into a JSON error)."""
    return web.Response(status=303, headers={"Location": location})


async def _home(request: web.Request) -> web.Response:
    return see_other(f"{ROOT}/")
