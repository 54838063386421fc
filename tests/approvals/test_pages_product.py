"""What the approval and connected-apps pages show and offer (spec §7.1, §8.10, §8.11, §10.8):
choices left to the person, plain words, no button for someone who may not decide, hosts told
apart, the site's own base template, and French through the translation files."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import translation

from agentauth.models import Agent, ApprovalRequest
from agentauth.testing import Keypair, host_token, make_host
from tests.conftest import Api

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


def open_request(client: Client, api: Api, host_key: Keypair, capabilities: list[str]) -> str:
    reply = api.register(host_key, body={"name": "Helper", "capabilities": capabilities})
    code = reply.body["approval"]["user_code"]
    response = client.post("/api/auth/device", {"code": code})
    assert response.status_code == 302, response.content
    return client.get(response["Location"]).content.decode()


def checkbox(html: str, capability: str) -> str:
    match = re.search(
        rf'<input type="checkbox" name="capabilities" value="{capability}"[^>]*>', html
    )
    assert match, capability
    return match.group(0)


def test_only_what_needs_nobody_is_ticked(client: Client, api: Api, user: Any) -> None:
    client.force_login(user)
    html = open_request(
        client, api, Keypair.generate(), ["check_balance", "close_account", "transfer"]
    )
    assert " checked" in checkbox(html, "check_balance")  # approval_strength "none"
    assert " checked" not in checkbox(html, "close_account")  # "session"
    assert " checked" not in checkbox(html, "transfer")  # "webauthn"
    for label in ("No approval needed", "Needs your sign-in", "Needs your security key"):
        assert label in html
    assert "(needs: session)" not in html


def test_no_approve_button_for_someone_who_may_not_decide(
    client: Client, api: Api, user: Any, django_user_model: Any
) -> None:
    """The agent acts for another account: its code reached this person, who may see the
    request but not approve it, so the page offers no Approve button and no choices."""
    owner = django_user_model.objects.create_user(username="owner", password="x")
    _, host_key = make_host(user=owner)
    client.force_login(user)
    html = open_request(client, api, host_key, ["close_account"])
    assert 'id="cannot-decide"' in html
    assert 'id="approve"' not in html and 'name="capabilities"' not in html
    assert 'id="deny"' not in html  # not an administrator either


def test_the_person_it_acts_for_gets_the_buttons(client: Client, api: Api, user: Any) -> None:
    _, host_key = make_host(user=user)
    client.force_login(user)
    html = open_request(client, api, host_key, ["close_account"])
    assert 'id="approve"' in html and 'id="deny"' in html and "cannot-decide" not in html


def test_hosts_are_told_apart(client: Client, api: Api, user: Any) -> None:
    host, host_key = make_host(user=user, name="Laptop")
    client.force_login(user)
    html = open_request(client, api, host_key, ["close_account"])
    assert host.thumbprint[:11] in html and "First seen" in html and "Last used" in html
    connected = client.get("/api/auth/connected").content.decode()
    assert host.thumbprint[:11] in connected


def test_activity_shows_names_and_plain_events(client: Client, api: Api, user: Any) -> None:
    _, host_key = make_host(user=user)
    reply = api.register(host_key, body={"name": "Mailer", "capabilities": ["check_balance"]})
    agent = Agent.objects.get(pk=reply.body["agent_id"])
    api.post("/agent/revoke", {"agent_id": agent.pk}, token=host_token(host_key))
    client.force_login(user)
    html = client.get("/api/auth/connected").content.decode()
    table = html[html.index("Recent activity") :]
    assert "Agent revoked" in table and "Mailer" in table
    assert "agent.revoked" not in table and agent.pk not in table
    assert "UTC" in table  # times say their zone


def test_pages_extend_the_sites_base_template(client: Client, user: Any, settings: Any) -> None:
    settings.AGENTAUTH_BASE_TEMPLATE = "site/base.html"
    client.force_login(user)
    html = client.get("/api/auth/device").content.decode()
    assert 'id="site-header"' in html and "Connect an agent · Example Site" in html
    assert "agentauth/pages.css" in html
    settings.AGENTAUTH_BASE_TEMPLATE = None
    assert 'id="site-header"' not in client.get("/api/auth/device").content.decode()


def test_pages_speak_french(client: Client, user: Any, settings: Any) -> None:
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[:2],
        "django.middleware.locale.LocaleMiddleware",
        *settings.MIDDLEWARE[2:],
    ]
    client.force_login(user)
    html = client.get("/api/auth/device", HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert '<html lang="fr">' in html
    assert "Connecter un agent" in html and "Saisissez le code" in html
    english = client.get("/api/auth/device", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="en">' in english and "Connect an agent" in english


def test_protocol_errors_stay_english(api: Api) -> None:
    with translation.override("fr"):
        reply = api.post("/agent/revoke", {"agent_id": "x"})
    assert reply.body["message"].startswith("Missing Authorization")


def test_approval_mail_is_translated(api: Api, user: Any) -> None:
    from agentauth.notifications import mail_body

    _, host_key = make_host(user=user)
    api.register(host_key, body={"name": "Helper", "capabilities": ["close_account"]})
    approval = ApprovalRequest.objects.get()
    with translation.override("fr"):
        body = mail_body(approval, "https://example.com/approve")
    assert "Un agent demande votre accord" in body and "Agent : Helper" in body
