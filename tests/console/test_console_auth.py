"""The console with auth: a page needs a token with ``decisions:read`` (or ``admin``),
in the Authorization header or through the login form's cookie (HttpOnly,
SameSite=Strict, out of the page's scripts' reach); any other token is refused, and the
console's routes open nothing of the API."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from gateway.console import COOKIE
from protos.server.auth import ADMIN, DECISIONS_READ, FEEDBACK, INFER
from tests.fakes import http_call
from tests.security import Tokens, bearer, write_tokens
from tests.servers import ServerThread, local_options


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return write_tokens(tmp_path_factory.mktemp("console-auth"))


@pytest.fixture(scope="module")
def guarded(lr_pod, tokens: Tokens) -> Iterator[ServerThread]:
    """A gateway with auth and the console."""
    config = GatewayConfig.model_validate({
        "models": {"lr": {"url": f"http://{lr_pod.http_hostport}", "name": "credit-lr"}},
        "deployments": {"credit": {"router": {"kind": "weighted", "weights": {"lr": 1}}}},
        "store": {"kind": "memory"},
        "auth": {"tokens_file": str(tokens.path)},
        "console": {"enabled": True},
    })
    with ServerThread(lambda: build_gateway(config, local_options(), 20)[1]) as gateway:
        yield gateway


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_header_tokens_need_decisions_read(guarded, tokens: Tokens) -> None:
    page = guarded.http_url + "/console/deployments/credit"
    assert _status(page) == 303  # to the login form
    assert _status(page, bearer("not-a-token")) == 401
    for scope in (INFER, FEEDBACK):
        assert _status(page, bearer(tokens.by_scope[scope])) == 403
    for scope in (DECISIONS_READ, ADMIN):
        assert _status(page, bearer(tokens.by_scope[scope])) == 200
    cookie = {"Cookie": f"{COOKIE}={tokens.by_scope[INFER]}"}
    assert _status(page, cookie) == 403
    assert _status(guarded.http_url + "/console/static/console.css") == 200
    # the console's open routes open nothing of the API
    assert http_call("GET", guarded.http_url + "/v2/deployments/credit")[0] == 401
    assert http_call("GET", guarded.http_url + "/v2/decisions/x")[0] == 401


def test_sign_in_from_another_site_is_refused(guarded, tokens: Tokens) -> None:
    body = f"token={quote(tokens.by_scope[DECISIONS_READ])}&next=/console/".encode()
    status, headers, _ = http_call(
        "POST", guarded.http_url + "/console/login", body,
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.test"})
    assert status == 403 and "Set-Cookie" not in headers


@pytest.mark.slow
def test_browser_signs_in_with_a_reader_token_only(guarded, tokens: Tokens, page,
                                                   screenshots) -> None:
    page.goto(guarded.http_url + "/console/deployments/credit")
    page.wait_for_url("**/console/login?next=*")
    page.fill("input[name=token]", tokens.by_scope[INFER])
    page.click("form.login button")
    assert "lacks the scope 'decisions:read'" in page.locator("p.error").inner_text()
    page.screenshot(path=str(screenshots / "login-refused.png"), full_page=True)
    assert page.context.cookies() == []
    page.fill("input[name=token]", tokens.by_scope[DECISIONS_READ])
    page.click("form.login button")
    page.wait_for_url("**/console/deployments/credit")
    assert "decisions:read-client" in page.locator("header .who").inner_text()
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == \
        (COOKIE, True, "Strict", "/console")
    assert page.evaluate("document.cookie") == ""  # out of the scripts' reach
    page.click("header .logout button")
    page.wait_for_url("**/console/login")
    assert page.context.cookies() == []
    page.goto(guarded.http_url + "/console/")
    page.wait_for_url("**/console/login?next=*")
