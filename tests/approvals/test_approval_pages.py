"""The pages where a person decides (spec §7.1, §8.10, §8.11, §10.8, §8)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice

from agentauth.models import Agent, ApprovalRequest, Host
from agentauth.testing import Keypair, host_token, make_agent, make_host
from tests.conftest import Api, post_decision

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


def pending(api: Api, **body: Any) -> Any:
    payload = {"name": "Helper", "capabilities": ["check_balance", "read_only_note"], **body}
    return api.register(Keypair.generate(), body=payload)


def open_page(client: Client, code: str) -> str:
    response = client.post("/api/auth/device", {"code": code})
    assert response.status_code == 302, response.content
    return str(response["Location"])


def make_stale(client: Client) -> None:
    session = client.session
    session["agentauth_authenticated_at"] -= 3600
    session.save()


def test_pages_need_a_signed_in_person(client: Client, api: Api) -> None:
    # spec: §8.11 — never the agent's or host's credentials.
    reply = pending(api)
    assert client.get("/api/auth/device").status_code == 302
    approval = ApprovalRequest.objects.get()
    token = host_token(Keypair.generate())
    response = client.post(
        f"/api/auth/approve/{approval.pk}",
        {"action": "approve"},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 302 and "/login" in response["Location"]
    assert Agent.objects.get(pk=reply.body["agent_id"]).status == "pending"


def test_the_code_is_what_opens_a_device_request(client: Client, api: Api, user: Any) -> None:
    pending(api)
    approval = ApprovalRequest.objects.get()
    client.force_login(user)
    assert client.get(f"/api/auth/approve/{approval.pk}").status_code == 404


def test_wrong_codes_lock_out_even_the_right_code(
    client: Client, api: Api, user: Any, settings: Any
) -> None:
    # spec: §5 (RFC 8628 §5.1) — brute force is bounded; the answer never says why.
    settings.AGENTAUTH_USER_CODE_MAX_ATTEMPTS = 3
    code = pending(api).body["approval"]["user_code"]
    client.force_login(user)
    for guess in ("BBBB-BBBB", "CCCC-CCCC", "DDDD-DDDD"):
        response = client.post("/api/auth/device", {"code": guess})
        assert response.status_code == 200 and b"not valid" in response.content
    locked = client.post("/api/auth/device", {"code": code})
    assert locked.status_code == 200 and b"not valid" in locked.content


def test_code_is_case_and_dash_insensitive(client: Client, api: Api, user: Any) -> None:
    code = pending(api).body["approval"]["user_code"]
    client.force_login(user)
    assert open_page(client, code.lower().replace("-", " "))


def test_expired_request_is_gone(client: Client, api: Api, user: Any) -> None:
    code = pending(api).body["approval"]["user_code"]
    client.force_login(user)
    page = open_page(client, code)
    ApprovalRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(page).status_code == 404


def test_page_shows_the_request_as_plain_text(client: Client, api: Api, user: Any) -> None:
    # spec: §7, §8
    reply = pending(
        api,
        name='Tom & "Jerry"',
        reason="Needs <a href=x>links</a> & more",
        binding_message="Check 42",
        host_name="Laptop",
    )
    client.force_login(user)
    html = client.get(open_page(client, reply.body["approval"]["user_code"])).content.decode()
    assert "Tom &amp; &quot;Jerry&quot;" in html
    assert "Needs links &amp; more" in html and "<a href=x>" not in html
    assert "Check 42" in html and "Laptop" in html
    assert "check_balance" in html and "Check the balance of a bank account" in html
    assert "first time this application connects" in html


def test_approving_needs_a_fresh_sign_in(client: Client, api: Api, user: Any) -> None:
    # spec: §8.11 — a long-lived session alone is not enough.
    reply = pending(api)
    client.force_login(user)
    page = open_page(client, reply.body["approval"]["user_code"])
    make_stale(client)
    response = post_decision(client, page, {"action": "approve", "capabilities": ["check_balance"]})
    assert response.status_code == 302 and "/reauth" in response["Location"]
    assert Agent.objects.get().status == "pending"
    wrong = client.post("/api/auth/reauth", {"password": "nope", "next": page})
    assert wrong.status_code == 200 and b"did not match" in wrong.content
    ok = client.post("/api/auth/reauth", {"password": "alice-password", "next": page})
    assert ok.status_code == 302 and ok["Location"] == page
    response = post_decision(client, page, {"action": "approve", "capabilities": ["check_balance"]})
    assert response.status_code == 200
    assert Agent.objects.get().status == "active"


def test_reauth_needs_the_otp_device_too(client: Client, api: Api, user: Any) -> None:
    # A verified django-otp device counts as the second factor of a fresh sign-in.
    device = StaticDevice.objects.create(user=user, name="backup", confirmed=True)
    device.token_set.create(token="123456")
    client.force_login(user)
    make_stale(client)
    page = client.get("/api/auth/reauth")
    assert b"otp_token" in page.content
    no_otp = client.post("/api/auth/reauth", {"password": "alice-password"})
    assert no_otp.status_code == 200
    yes = client.post("/api/auth/reauth", {"password": "alice-password", "otp_token": "123456"})
    assert yes.status_code == 302


def test_reauth_refuses_open_redirects(client: Client, user: Any) -> None:
    client.force_login(user)
    response = client.post(
        "/api/auth/reauth", {"password": "alice-password", "next": "https://evil.example/"}
    )
    assert response.status_code == 302 and "evil" not in response["Location"]


def test_approve_some_deny_the_rest(client: Client, api: Api, user: Any) -> None:
    # spec: §5.3, §7, §7.1 (per-capability deny)
    reply = pending(api)
    client.force_login(user)
    page = open_page(client, reply.body["approval"]["user_code"])
    response = post_decision(client, page, {"action": "approve", "capabilities": ["check_balance"]})
    assert response.status_code == 200
    agent = Agent.objects.get()
    grants = {g.capability: g.status for g in agent.grants.all()}
    assert grants == {"check_balance": "active", "read_only_note": "denied"}
    assert Host.objects.get().user == user  # §2.9: the approver's account is linked


def test_deny_the_connection(client: Client, api: Api, user: Any) -> None:
    # spec: §7.1
    reply = pending(api)
    client.force_login(user)
    make_stale(client)  # denying never needs a fresh sign-in
    page = open_page(client, reply.body["approval"]["user_code"])
    response = post_decision(client, page, {"action": "deny", "reason": "Not mine"})
    assert response.status_code == 200
    assert Agent.objects.get().status == "rejected"
    assert Host.objects.get().status == "rejected"


def test_a_decided_request_cannot_be_decided_again(client: Client, api: Api, user: Any) -> None:
    reply = pending(api)
    client.force_login(user)
    page = open_page(client, reply.body["approval"]["user_code"])
    post_decision(client, page, {"action": "approve", "capabilities": ["check_balance"]})
    assert client.post(page, {"action": "deny"}).status_code == 404


def test_connected_apps(client: Client, user: Any, django_user_model: Any) -> None:
    # spec: §10.8
    host, _ = make_host(user=user, name="Work laptop")
    agent, _ = make_agent(host, grants=["check_balance"], name="Mailer")
    other_user = django_user_model.objects.create_user(username="bob", password="x")
    other_host, _ = make_host(user=other_user)
    other_agent, _ = make_agent(other_host)
    client.force_login(user)
    html = client.get("/api/auth/connected").content.decode()
    assert "Work laptop" in html and "Mailer" in html and "check_balance" in html
    # Someone else's agent or host cannot be touched from here.
    assert (
        client.post(
            "/api/auth/connected", {"action": "revoke_agent", "id": other_agent.pk}
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/auth/connected", {"action": "revoke_host", "id": other_host.pk}
        ).status_code
        == 403
    )
    # Each switch asks first; only the confirmation does it.
    asked = client.post("/api/auth/connected", {"action": "revoke_agent", "id": agent.pk})
    assert asked.status_code == 200 and f"Revoke {agent.name}?" in asked.content.decode()
    agent.refresh_from_db()
    assert agent.status == "active"
    confirm = {"action": "revoke_agent", "id": agent.pk, "confirm": "yes"}
    assert client.post("/api/auth/connected", confirm).status_code == 302
    agent.refresh_from_db()
    assert agent.status == "revoked"
    asked = client.post("/api/auth/connected", {"action": "unlink_host", "id": host.pk})
    assert 'name="confirm" value="yes"' in asked.content.decode()
    host.refresh_from_db()
    assert host.user_id == user.pk
    client.post("/api/auth/connected", {"action": "unlink_host", "id": host.pk, "confirm": "yes"})
    host.refresh_from_db()
    assert host.user_id is None


def test_connected_apps_revoke_host(client: Client, user: Any) -> None:
    host, _ = make_host(user=user)
    agent, _ = make_agent(host)
    client.force_login(user)
    asked = client.post("/api/auth/connected", {"action": "revoke_host", "id": host.pk})
    assert "1 agent(s) stop working" in asked.content.decode()
    host.refresh_from_db()
    assert host.status == "active"
    client.post("/api/auth/connected", {"action": "revoke_host", "id": host.pk, "confirm": "yes"})
    host.refresh_from_db()
    agent.refresh_from_db()
    assert host.status == "revoked" and agent.status == "revoked"


def test_connected_apps_need_csrf(user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert (
        client.post("/api/auth/connected", {"action": "revoke_agent", "id": "x"}).status_code == 403
    )


def test_only_administrators_decide_for_autonomous_agents(
    client: Client, api: Api, user: Any
) -> None:
    # §2.8, spec §2.2.2 — a signed-in person who is not staff cannot approve one.
    reply = api.register(
        Keypair.generate(),
        body={"name": "Robot", "mode": "autonomous", "capabilities": ["check_balance"]},
    )
    client.force_login(user)
    page = open_page(client, reply.body["approval"]["user_code"])
    response = post_decision(client, page, {"action": "approve", "capabilities": ["check_balance"]})
    assert response.status_code == 403
    assert Agent.objects.get().status == "pending"
    assert Host.objects.get().status == "pending"
