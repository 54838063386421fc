"""What a new project trips over: the checks and defaults that turn a silent or 500 failure into
a clear message (sign-in page, Celery, optional dependencies, setting names, the issuer's port)."""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from agentauth import checks, webauthn
from agentauth.capabilities import registry
from agentauth.conf import known_setting_names
from agentauth.views import base
from tests.conftest import ISSUER

ROOT = Path(__file__).resolve().parents[2]


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


# --- setting names ------------------------------------------------------------------------------


def test_a_misspelt_setting_is_reported_with_a_suggestion(settings: Any) -> None:
    settings.AGENTAUTH_APROVAL_METHODS = ["device_authorization"]
    (warning,) = checks.check_setting_names()
    assert warning.id == "agentauth.W002"
    assert "AGENTAUTH_APROVAL_METHODS" in warning.msg
    assert warning.hint == "Did you mean AGENTAUTH_APPROVAL_METHODS?"


def test_the_test_settings_have_no_unknown_names() -> None:
    assert checks.check_setting_names() == []


def test_every_documented_setting_is_known_and_every_known_one_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^### `(AGENTAUTH_[A-Z_]+)`", text, flags=re.M))
    assert documented == known_setting_names()


# --- CIBA and Celery ----------------------------------------------------------------------------


def test_ciba_is_opt_in(settings: Any, client: Client) -> None:
    del settings.AGENTAUTH_APPROVAL_METHODS
    doc = client.get("/.well-known/agent-configuration").json()
    assert doc["approval_methods"] == ["device_authorization"]


@pytest.fixture
def celery_conf() -> Iterator[Any]:
    """The project's Celery configuration, restored afterwards."""
    conf = current_app.conf
    saved = {k: conf[k] for k in ("broker_url", "task_always_eager")}
    yield conf
    conf.update(saved)


def test_ciba_without_a_broker_or_eager_tasks_is_an_error(settings: Any, celery_conf: Any) -> None:
    celery_conf.update(broker_url=None, task_always_eager=False)
    assert "agentauth.E061" in ids(checks.check_optional_dependencies())
    settings.AGENTAUTH_APPROVAL_METHODS = ["device_authorization"]
    async_caps = [cap.name for cap in registry if cap.mode == "async"]
    assert async_caps  # the test app declares some, so Celery is still needed
    assert "agentauth.E061" in ids(checks.check_optional_dependencies())


def test_celery_configured_passes(celery_conf: Any) -> None:
    celery_conf.update(broker_url="redis://127.0.0.1:6379/0", task_always_eager=False)
    assert checks.check_optional_dependencies() == []


# The broker being down is tests/domain/test_outbox.py: the request is accepted, delivery follows.


# --- optional dependencies ----------------------------------------------------------------------


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make a distribution look uninstalled: importing it fails as if it were absent."""

    def hide(*modules: str) -> None:
        for name in list(sys.modules):
            if any(name == m or name.startswith(m + ".") for m in modules):
                monkeypatch.delitem(sys.modules, name)
        for m in modules:
            monkeypatch.setitem(sys.modules, m, None)

    return hide


def test_ciba_without_celery_installed_is_an_error(without: Any) -> None:
    without("celery")
    assert "agentauth.E060" in ids(checks.check_optional_dependencies())


def test_webauthn_capability_without_py_webauthn(without: Any, user: Any, client: Client) -> None:
    without("webauthn")
    (error,) = [e for e in checks.check_optional_dependencies() if e.id == "agentauth.E062"]
    assert "django-agentauth[webauthn]" in error.msg
    with pytest.raises(ImproperlyConfigured, match=r"\[webauthn\]"):
        webauthn.begin_registration(client.session, user)


@pytest.mark.parametrize(
    ("hidden", "module", "extra"),
    [
        ("rest_framework", "agentauth.authentication", "drf"),
        ("rest_framework", "agentauth.permissions", "drf"),
        ("celery", "agentauth.tasks", "celery"),
    ],
)
def test_a_missing_extra_names_itself_on_import(
    without: Any, monkeypatch: pytest.MonkeyPatch, hidden: str, module: str, extra: str
) -> None:
    without(hidden)
    for name in ("agentauth.authentication", "agentauth.permissions", "agentauth.tasks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=rf"django-agentauth\[{extra}\]"):
        importlib.import_module(module)


def test_drf_settings_without_drf_installed(without: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["agentauth.authentication.AgentAuthentication"]
    }
    assert "agentauth.E063" not in ids(checks.check_optional_dependencies())
    without("rest_framework")
    assert "agentauth.E063" in ids(checks.check_optional_dependencies())


# --- the sign-in page ---------------------------------------------------------------------------


def test_login_url_that_resolves_nowhere(settings: Any) -> None:
    settings.LOGIN_URL = "/nowhere/login/"
    assert ids(checks.check_login_url()) == ["agentauth.E050"]


def test_login_url_as_a_url_name(settings: Any) -> None:
    settings.LOGIN_URL = "login"
    assert checks.check_login_url() == []


@pytest.mark.urls("tests.testapp.urls_signin")
def test_login_view_without_its_template_is_reported(settings: Any) -> None:
    settings.LOGIN_URL = "/broken/login/"
    assert ids(checks.check_login_url()) == ["agentauth.W051"]
    settings.LOGIN_URL = "/fresh/login/"
    assert checks.check_login_url() == []


@pytest.mark.django_db
@pytest.mark.urls("tests.testapp.urls_signin")
def test_agentauth_sign_in_page_works_without_a_project_template(client: Client, user: Any) -> None:
    page = client.get("/fresh/login/?next=/api/auth/connected")
    assert page.status_code == 200
    assert b"Sign in to review what an agent asks to do" in page.content
    response = client.post(
        "/fresh/login/",
        {"username": user.username, "password": "alice-password", "next": "/api/auth/connected"},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/api/auth/connected"
    # Django's open-redirect guard is kept: a foreign next is not followed.
    client.logout()
    response = client.post(
        "/fresh/login/",
        {"username": user.username, "password": "alice-password", "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and "evil" not in response.headers["Location"]


# --- the issuer's origin ------------------------------------------------------------------------


def test_a_request_on_another_origin_is_warned_about_once_in_debug(
    settings: Any, client: Client, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(base, "_origin_warned", False)
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = ["*"]
    with caplog.at_level(logging.WARNING, logger="agentauth"):
        client.get("/.well-known/agent-configuration")  # the issuer's origin: quiet
        assert not caplog.records
        client.get("/.well-known/agent-configuration", HTTP_HOST="127.0.0.1:8001")
        client.get("/.well-known/agent-configuration", HTTP_HOST="127.0.0.1:8001")
    (record,) = caplog.records
    assert "http://127.0.0.1:8001" in record.getMessage()
    assert ISSUER in record.getMessage()


def test_no_origin_warning_outside_debug(
    client: Client, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(base, "_origin_warned", False)
    with caplog.at_level(logging.WARNING, logger="agentauth"):
        client.get("/.well-known/agent-configuration", HTTP_HOST="127.0.0.1")
    assert not caplog.records
