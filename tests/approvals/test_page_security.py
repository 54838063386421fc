"""Pages for people: security headers, no inline script or style, a 503 page when a service is
down, and an atomic user-code attempt count (spec §8.10, §8.11; RFC 8628 §5.1)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.cache import cache
from django.db import OperationalError
from django.test import Client

from agentauth.models import ApprovalRequest
from agentauth.testing import Keypair
from tests.conftest import Api

pytestmark = pytest.mark.django_db

BROKEN_CACHES = {
    "default": {"BACKEND": "tests.api.test_tokens.BrokenCache"},
    "working": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}


@pytest.fixture(autouse=True)
def _clear_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def signed_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def pending_approval(api: Api, client: Client) -> str:
    """A live device request opened by the signed-in person; its approval page path."""
    reply = api.register(Keypair.generate(), body={"name": "Helper", "capabilities": ["transfer"]})
    response = client.post("/api/auth/device", {"code": reply.body["approval"]["user_code"]})
    assert response.status_code == 302
    return str(response["Location"])


def page_paths(api: Api, client: Client) -> list[str]:
    return [
        "/api/auth/device",
        pending_approval(api, client),
        "/api/auth/reauth",
        "/api/auth/webauthn",
        "/api/auth/connected",
    ]


def assert_locked_down(response: Any) -> None:
    csp = response["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["form-action"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


def test_every_page_sends_the_security_headers(api: Api, signed_in: Client) -> None:
    # spec: §8.10 — attacker-chosen text is shown on these pages; nothing may run or frame them.
    for path in page_paths(api, signed_in):
        response = signed_in.get(path)
        assert response.status_code == 200, path
        assert_locked_down(response)


def test_the_pages_lock_themselves_down_without_djangos_middleware(
    api: Api, signed_in: Client, settings: Any
) -> None:
    # The headers are the pages' own (views/pages.py), not borrowed from SecurityMiddleware or
    # XFrameOptionsMiddleware, which a project may leave out or configure differently.
    settings.MIDDLEWARE = [
        m
        for m in settings.MIDDLEWARE
        if m
        not in (
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        )
    ]
    for path in page_paths(api, signed_in):
        assert_locked_down(signed_in.get(path))


def test_redirects_and_errors_are_locked_down_too(api: Api, client: Client, user: Any) -> None:
    assert_locked_down(client.get("/api/auth/connected"))  # sign-in redirect
    client.force_login(user)
    assert_locked_down(client.get("/api/auth/approve/apr_nope"))  # 404
    assert_locked_down(client.post("/api/auth/webauthn/begin"))  # JSON endpoint of the pages


def test_pages_have_no_inline_script_or_style(api: Api, signed_in: Client) -> None:
    # The CSP forbids inline code, so the pages must carry none (it would silently break).
    for path in page_paths(api, signed_in):
        html = signed_in.get(path).content.decode()
        assert "<style" not in html and " style=" not in html, path
        assert re.search(r" on[a-z]+=", html) is None, path
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'src="/static/agentauth/' in tag, (path, tag)
        assert "javascript:" not in html


def test_device_page_answers_503_when_the_cache_is_down(signed_in: Client, settings: Any) -> None:
    # Fail closed and say so: a clear 503 page, never a 500 or an unmetered code check.
    settings.CACHES = BROKEN_CACHES
    response = signed_in.post("/api/auth/device", {"code": "BCDF-GHJK"})
    assert response.status_code == 503
    assert response["Retry-After"].isdigit()
    assert response["Content-Type"].startswith("text/html")
    assert b"Temporarily unavailable" in response.content
    assert_locked_down(response)


def test_approval_page_answers_503_when_the_database_is_down(
    api: Api, signed_in: Client, monkeypatch: Any
) -> None:
    path = pending_approval(api, signed_in)

    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("database is unavailable")

    monkeypatch.setattr(ApprovalRequest.objects, "select_related", down)
    response = signed_in.get(path)
    assert response.status_code == 503 and b"Temporarily unavailable" in response.content
    begin = signed_in.post(path + "/webauthn/begin")
    assert begin.status_code == 503 and begin.json()["error"] == "temporarily_unavailable"


def test_a_right_code_gives_its_attempt_back(api: Api, signed_in: Client, settings: Any) -> None:
    # RFC 8628 §5.1: the lock-out counts wrong guesses; a person entering right codes is not
    # locked out by them.
    settings.AGENTAUTH_USER_CODE_MAX_ATTEMPTS = 2
    for _ in range(4):
        pending_approval(api, signed_in)
    assert signed_in.post("/api/auth/device", {"code": "BCDF-GHJK"}).status_code == 200
    pending_approval(api, signed_in)
