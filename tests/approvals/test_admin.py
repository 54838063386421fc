"""The Django admin: staff approve, deny and revoke through the same domain functions as the API
(§2.8; spec §2.6 admin revocation, §2.2.2 administrator approval).

Actions are driven the way a browser drives them: a POST of the changelist form with ``action``
and ``_selected_action``. What they change is checked in the database and the audit trail.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from agentauth.models import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    AuditEvent,
    CapabilityGrant,
    Host,
    HostStatus,
)
from agentauth.testing import Keypair, make_agent, make_host
from tests.conftest import Api, post_decision

pytestmark = pytest.mark.django_db

MODELS = ["agent", "host", "capabilitygrant", "approvalrequest", "auditevent"]


def changelist(model: str) -> str:
    return reverse(f"admin:agentauth_{model}_changelist")


def pending_agent(api: Api, capabilities: list[str] | None = None) -> Agent:
    """An autonomous agent from a new (pending) host, waiting for an administrator (§2.8)."""
    reply = api.register(
        Keypair.generate(),
        body={
            "name": "Admin test agent",
            "mode": "autonomous",
            "capabilities": capabilities or ["check_balance"],
        },
    )
    assert reply.status == 200 and reply.body["status"] == "pending", reply.body
    return Agent.objects.select_related("host").get(pk=reply.body["agent_id"])


def run_action(client: Client, model: str, action: str, pks: list[Any], **extra: Any) -> Any:
    data = {"action": action, "_selected_action": [str(pk) for pk in pks], **extra}
    return client.post(changelist(model), data)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def statuses(agent_id: str) -> dict[str, str]:
    return dict(
        CapabilityGrant.objects.filter(agent_id=agent_id).values_list("capability", "status")
    )


# --- pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_changelists_render(admin_client: Client, api: Api, model: str) -> None:
    pending_agent(api, ["check_balance", "transfer"])
    host, _ = make_host()
    make_agent(host, grants=["check_balance"])
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


def test_change_pages_render(admin_client: Client, api: Api) -> None:
    agent = pending_agent(api, ["check_balance", "transfer"])
    for model, pk in [
        ("agent", agent.pk),
        ("host", agent.host_id),
        ("approvalrequest", ApprovalRequest.objects.get(agent=agent).pk),
        ("capabilitygrant", CapabilityGrant.objects.get(agent=agent, capability="transfer").pk),
        ("auditevent", AuditEvent.objects.get(kind="agent.registered", agent_id=agent.pk).pk),
    ]:
        response = admin_client.get(reverse(f"admin:agentauth_{model}_change", args=[quote(pk)]))
        assert response.status_code == 200, model
    # The agent page lists its grants inline.
    page = admin_client.get(reverse("admin:agentauth_agent_change", args=[quote(agent.pk)]))
    assert b"transfer" in page.content and b"check_balance" in page.content
    # The user code hash never appears on the approval request page.
    request = ApprovalRequest.objects.get(agent=agent)
    page = admin_client.get(
        reverse("admin:agentauth_approvalrequest_change", args=[quote(request.pk)])
    )
    assert str(request.user_code_hash).encode() not in page.content


def test_search_and_filters(admin_client: Client, api: Api) -> None:
    agent = pending_agent(api)
    response = admin_client.get(changelist("agent"), {"q": agent.pk, "status": "pending"})
    assert response.status_code == 200
    assert [a.pk for a in response.context["cl"].result_list] == [agent.pk]
    response = admin_client.get(changelist("agent"), {"status": "active"})
    assert response.context["cl"].result_count == 0


# --- Agent actions ----------------------------------------------------------------------------


def test_approve_sends_the_administrator_to_the_approval_page(
    admin_client: Client, admin_user: Any, api: Api
) -> None:
    # spec §2.2.2, §8.11 — the admin's approval is the approval page's: shown, fresh, decided
    # through approvals.decide.
    agent = pending_agent(api, ["check_balance", "read_only_note"])
    response = run_action(admin_client, "agent", "approve", [agent.pk])
    live = ApprovalRequest.objects.get(agent=agent)
    page = reverse("agentauth:approve", args=[live.pk])
    assert response.status_code == 302 and response["Location"] == page
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PENDING
    done = post_decision(
        admin_client,
        page,
        {"action": "approve", "capabilities": ["check_balance", "read_only_note"]},
    )
    assert done.status_code == 200
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    assert statuses(agent.pk) == {"check_balance": "active", "read_only_note": "active"}
    assert set(
        CapabilityGrant.objects.filter(agent=agent).values_list("granted_by", flat=True)
    ) == {admin_user.pk}
    assert ApprovalRequest.objects.get(agent=agent).status == ApprovalStatus.APPROVED
    event = AuditEvent.objects.get(kind="approval.decided", agent_id=agent.pk)
    assert event.actor_type == "staff" and event.actor_id == str(admin_user.pk)
    assert event.data["approved"] == ["check_balance", "read_only_note"]
    assert Host.objects.get(pk=agent.host_id).status == HostStatus.ACTIVE


def test_approve_lists_pages_and_reports_agents_with_nothing_to_approve(
    admin_client: Client, api: Api
) -> None:
    pending = pending_agent(api)
    host, _ = make_host()
    revoked, _ = make_agent(host, status=AgentStatus.REVOKED)
    response = admin_client.post(
        changelist("agent"),
        {"action": "approve", "_selected_action": [pending.pk, revoked.pk]},
        follow=True,
    )
    notes = messages_of(response)
    assert any(revoked.pk in n and "nothing to approve" in n for n in notes), notes
    live = ApprovalRequest.objects.get(agent=pending)
    assert any(reverse("agentauth:approve", args=[live.pk]) in n for n in notes), notes
    assert Agent.objects.get(pk=pending.pk).status == AgentStatus.PENDING
    assert Agent.objects.get(pk=revoked.pk).status == AgentStatus.REVOKED


def test_deny(admin_client: Client, admin_user: Any, api: Api) -> None:
    # spec: §7.1 — denying a new host's first connection rejects the host.
    agent = pending_agent(api, ["check_balance", "transfer"])
    response = run_action(admin_client, "agent", "deny", [agent.pk])
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.status == AgentStatus.REJECTED
    assert statuses(agent.pk) == {"check_balance": "denied", "transfer": "denied"}
    grant = CapabilityGrant.objects.get(agent=agent, capability="transfer")
    assert grant.denied_by_id == admin_user.pk and grant.reason == "Denied by an administrator"
    assert Host.objects.get(pk=agent.host_id).status == HostStatus.REJECTED
    assert ApprovalRequest.objects.get(agent=agent).status == ApprovalStatus.DENIED
    event = AuditEvent.objects.get(kind="approval.decided", agent_id=agent.pk)
    assert event.actor_type == "staff" and event.data["rejected"] is True


def test_revoke(admin_client: Client, admin_user: Any, user: Any) -> None:
    # spec: §2.6, §5.7 — an admin may revoke any agent.
    host, _ = make_host(user=user)
    agent, _ = make_agent(host, grants=["check_balance"])
    other, _ = make_agent(host, grants=["check_balance"])
    response = run_action(admin_client, "agent", "revoke", [agent.pk])
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.status == AgentStatus.REVOKED and agent.revoked_at is not None
    assert Agent.objects.get(pk=other.pk).status == AgentStatus.ACTIVE
    event = AuditEvent.objects.get(kind="agent.revoked", agent_id=agent.pk)
    assert event.actor_type == "staff" and event.actor_id == str(admin_user.pk)
    # Revoking again changes nothing and says so.
    response = admin_client.post(
        changelist("agent"), {"action": "revoke", "_selected_action": [agent.pk]}, follow=True
    )
    assert "Revoked 0 agent(s)." in messages_of(response)
    assert AuditEvent.objects.filter(kind="agent.revoked", agent_id=agent.pk).count() == 1


def test_actions_need_the_approve_permission(staff_user: Any, api: Api) -> None:
    # A staff member who may only view agents cannot decide anything (spec §2.2.2).
    staff_user.user_permissions.add(Permission.objects.get(codename="view_agent"))
    agent = pending_agent(api)
    client = Client()
    client.force_login(staff_user)
    assert client.get(changelist("agent")).status_code == 200
    for action in ("approve", "deny", "revoke"):
        run_action(client, "agent", action, [agent.pk])
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PENDING
    assert not AuditEvent.objects.filter(kind="approval.decided").exists()


# --- Host -------------------------------------------------------------------------------------


def test_host_revoke_cascades(admin_client: Client, admin_user: Any, api: Api, user: Any) -> None:
    # spec: §8.5, §2.6, §5.7 — an admin revokes a host; every agent under it goes too.
    host, key = make_host(user=user)
    active, _ = make_agent(host, grants=["check_balance"])
    reply = api.register(key, body={"name": "Half approved", "capabilities": ["transfer"]})
    waiting = reply.body["agent_id"]
    other_host, _ = make_host()
    bystander, _ = make_agent(other_host)
    response = admin_client.post(
        changelist("host"), {"action": "revoke", "_selected_action": [host.pk]}, follow=True
    )
    assert "Revoked 1 host(s) and 2 agent(s)." in messages_of(response)
    host.refresh_from_db()
    assert host.status == HostStatus.REVOKED and host.revoked_at is not None
    for pk in (active.pk, waiting):
        agent = Agent.objects.get(pk=pk)
        assert agent.status == AgentStatus.REVOKED
        assert agent.revocation_reason == "host_revoked"
    assert Agent.objects.get(pk=bystander.pk).status == AgentStatus.ACTIVE
    assert Host.objects.get(pk=other_host.pk).status == HostStatus.ACTIVE
    assert not ApprovalRequest.objects.filter(agent_id=waiting, status="pending").exists()
    event = AuditEvent.objects.get(kind="host.revoked", host_id=host.pk)
    assert event.actor_type == "staff" and event.actor_id == str(admin_user.pk)
    assert event.data["agents_revoked"] == 2


def test_host_add_page_is_forbidden(admin_client: Client) -> None:
    # Hosts come from agentauth_create_host (key validation, thumbprint) or registration.
    assert admin_client.get(reverse("admin:agentauth_host_add")).status_code == 403
    assert admin_client.get(reverse("admin:agentauth_agent_add")).status_code == 403


def test_host_user_is_read_only(admin_client: Client, user: Any, staff_user: Any) -> None:
    # spec: §2.7 — linking goes through hosts.link_host, never a form field.
    host, _ = make_host(user=user, name="Laptop")
    url = reverse("admin:agentauth_host_change", args=[quote(host.pk)])
    response = admin_client.post(
        url,
        {"name": "Renamed", "default_capabilities": '["check_balance"]', "user": staff_user.pk},
    )
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.name == "Renamed" and host.default_capabilities == ["check_balance"]
    assert host.user_id == user.pk


# --- AuditEvent is append-only ----------------------------------------------------------------


def test_audit_events_cannot_be_added_changed_or_deleted(admin_client: Client, api: Api) -> None:
    # spec: §11 — an audit trail staff can edit is not an audit trail.
    agent = pending_agent(api)
    event = AuditEvent.objects.get(kind="agent.registered", agent_id=agent.pk)
    before = AuditEvent.objects.values().get(pk=event.pk)

    assert admin_client.get(reverse("admin:agentauth_auditevent_add")).status_code == 403
    change_url = reverse("admin:agentauth_auditevent_change", args=[quote(event.pk)])
    # Viewable, but read-only: no save button, and a POST is refused.
    page = admin_client.get(change_url)
    assert page.status_code == 200 and b'name="_save"' not in page.content
    response = admin_client.post(
        change_url, {"kind": "tampered", "actor_type": "staff", "outcome": "ok", "data": "{}"}
    )
    assert response.status_code == 403
    delete_url = reverse("admin:agentauth_auditevent_delete", args=[quote(event.pk)])
    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    # The bulk delete action is not offered either.
    run_action(admin_client, "auditevent", "delete_selected", [event.pk], post="yes")
    assert AuditEvent.objects.values().get(pk=event.pk) == before


# --- access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/", "/admin/agentauth/agent/"])
def test_non_staff_users_are_sent_to_the_login_page(client: Client, user: Any, path: str) -> None:
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_anonymous_users_cannot_run_actions(client: Client, api: Api) -> None:
    agent = pending_agent(api)
    response = run_action(client, "agent", "approve", [agent.pk])
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PENDING


def test_staff_cannot_approve_a_delegated_agent_of_an_unlinked_host(
    admin_client: Client, api: Api
) -> None:
    # spec: §2.2.1, §2.9 — approving would link the host to the staff member, not to the user the
    # agent acts for; the admin does not open the page and says who must approve.
    reply = api.register(
        Keypair.generate(), body={"name": "Delegated", "capabilities": ["check_balance"]}
    )
    agent = Agent.objects.get(pk=reply.body["agent_id"])
    response = admin_client.post(
        changelist("agent"),
        {"action": "approve", "_selected_action": [agent.pk]},
        follow=True,
    )
    assert any("acts for a person" in m for m in messages_of(response))
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING
    assert Host.objects.get(pk=agent.host_id).user_id is None


def test_host_admin_validates_default_capabilities(admin_client: Client) -> None:
    host, _ = make_host()
    url = reverse("admin:agentauth_host_change", args=[quote(host.pk)])
    for bad in ('["no_such_cap"]', '"check_balance"', "[5]"):
        response = admin_client.post(url, {"name": "h", "default_capabilities": bad})
        assert response.status_code == 200  # the form re-renders with an error
        host.refresh_from_db()
        assert host.default_capabilities == []
    response = admin_client.post(url, {"name": "h", "default_capabilities": '["check_balance"]'})
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.default_capabilities == ["check_balance"]


def test_link_host_action_claims_autonomous_agents(admin_client: Client, user: Any) -> None:
    # Hosts in the admin: link / unlink / revoke; spec §2.9, §2.10
    host, _ = make_host()
    robot, _ = make_agent(host, mode="autonomous", grants=["check_balance"])
    form = run_action(admin_client, "host", "link", [host.pk])
    assert form.status_code == 200 and b"username" in form.content
    response = admin_client.post(
        changelist("host"),
        {"action": "link", "_selected_action": [host.pk], "apply": "1", "username": "alice"},
        follow=True,
    )
    assert any("1 autonomous agent(s) claimed" in m for m in messages_of(response))
    host.refresh_from_db()
    robot.refresh_from_db()
    assert host.user == user and robot.status == AgentStatus.CLAIMED
    assert AuditEvent.objects.filter(kind="host.linked", host_id=host.pk).exists()


def test_link_refuses_a_host_linked_to_someone_else(
    admin_client: Client, user: Any, django_user_model: Any
) -> None:
    django_user_model.objects.create_user(username="bob", password="x")
    host, _ = make_host(user=user)
    response = admin_client.post(
        changelist("host"),
        {"action": "link", "_selected_action": [host.pk], "apply": "1", "username": "bob"},
        follow=True,
    )
    assert any("another user" in m for m in messages_of(response))
    host.refresh_from_db()
    assert host.user == user


def test_revoke_a_single_grant(admin_client: Client, user: Any) -> None:
    host, _ = make_host(user=user)
    agent, _ = make_agent(host, grants=["check_balance", "read_only_note"])
    grant = CapabilityGrant.objects.get(agent=agent, capability="check_balance")
    run_action(admin_client, "capabilitygrant", "revoke", [grant.pk])
    assert statuses(agent.pk) == {"check_balance": "revoked", "read_only_note": "active"}
    assert AuditEvent.objects.filter(kind="grant.revoked", capability="check_balance").exists()


def test_audit_log_filters_by_agent_host_user_capability(admin_client: Client, user: Any) -> None:
    host, _ = make_host(user=user)
    agent, _ = make_agent(host)
    other, _ = make_agent(host)
    AuditEvent.objects.create(kind="x", actor_type="agent", agent_id=agent.pk, capability="c1")
    AuditEvent.objects.create(kind="x", actor_type="agent", agent_id=other.pk, capability="c2")
    url = changelist("auditevent")
    for query, expected in [
        (f"?agent_id={agent.pk}", 1),
        ("?capability=c2", 1),
        (f"?host_id={host.pk}", 0),
        ("?outcome=ok", 2),
    ]:
        response = admin_client.get(url + query)
        assert response.status_code == 200, query
        assert response.context["cl"].result_count == expected, query
    page = admin_client.get(reverse("admin:agentauth_agent_change", args=[quote(agent.pk)]))
    assert f"?agent_id={agent.pk}".encode() in page.content


# --- WebAuthn credentials ----------------------------------------------------------------------


def test_webauthn_credentials_are_listed_read_only_and_revocable(
    admin_client: Client, user: Any
) -> None:
    from agentauth import webauthn
    from agentauth.errors import ProtocolError
    from agentauth.models import AuditEvent, WebAuthnCredential

    key = WebAuthnCredential.objects.create(
        user=user, name="Blue key", confirmed=True, credential_id="cred-1", public_key="pk"
    )
    listing = admin_client.get(changelist("webauthncredential"))
    assert listing.status_code == 200 and b"Blue key" in listing.content
    change = reverse("admin:agentauth_webauthncredential_change", args=[key.pk])
    admin_client.post(change, {"name": "Renamed", "confirmed": ""})
    key.refresh_from_db()
    assert key.name == "Blue key" and key.confirmed  # no editing
    assert admin_client.get(reverse("admin:agentauth_webauthncredential_add")).status_code == 403

    data = {"action": "revoke_credentials", ACTION_CHECKBOX_NAME: [key.pk]}
    admin_client.post(changelist("webauthncredential"), data)
    key.refresh_from_db()
    assert not key.confirmed
    assert AuditEvent.objects.filter(kind="webauthn.revoked", user_id=str(user.pk)).count() == 1
    with pytest.raises(ProtocolError):  # a revoked key no longer offers a step-up
        webauthn.begin_stepup(admin_client.session, user, "apr_x")
    admin_client.post(changelist("webauthncredential"), data)  # a repeat records nothing
    assert AuditEvent.objects.filter(kind="webauthn.revoked").count() == 1
