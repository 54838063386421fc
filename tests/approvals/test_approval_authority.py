"""One approval authority: every decision, from the approval page, the admin or the command
line, goes through ``approvals.decide`` and its rules (spec §2.2, §7, §8.10, §8.11).

Each test drives a surface the way its user does (a browser posting forms, an operator running
the command) and checks what changed in the database and the audit trail.
"""

from __future__ import annotations

import getpass
import json
import time
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from agentauth import approvals
from agentauth.errors import ProtocolError
from agentauth.models import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
)
from agentauth.testing import Keypair, make_agent, make_host
from agentauth.testing.authenticator import SoftAuthenticator
from tests.conftest import Api, post_decision

pytestmark = pytest.mark.django_db

ORIGIN = "http://testserver"
ADMIN_AGENTS = "/admin/agentauth/agent/"
APPROVE_TRANSFER = {"action": "approve", "capabilities": ["transfer"]}


@pytest.fixture(autouse=True)
def _clear_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


def make_stale(client: Client) -> None:
    session = client.session
    session["agentauth_authenticated_at"] -= 3600
    session.save()


def autonomous_pending(api: Api, capabilities: list[str]) -> Agent:
    reply = api.register(
        Keypair.generate(),
        body={"name": "Nightly job", "mode": "autonomous", "capabilities": capabilities},
    )
    assert reply.body["status"] == "pending", reply.body
    return Agent.objects.get(pk=reply.body["agent_id"])


def admin_approve(client: Client, agent: Agent) -> Any:
    """The admin's approve action on one agent, as the changelist form posts it."""
    return client.post(ADMIN_AGENTS, {"action": "approve", "_selected_action": [agent.pk]})


def notes(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def live_page(agent: Agent) -> str:
    return reverse("agentauth:approve", args=[approvals.live_request(agent).pk])


def enter_code(client: Client, code: str) -> str:
    response = client.post("/api/auth/device", {"code": code})
    assert response.status_code == 302, response.content
    return str(response["Location"])


# --- fresh authentication in the admin (spec §8.11) --------------------------------------------


def test_admin_approval_on_a_stale_session_is_sent_to_reauthentication(
    admin_client: Client, api: Api
) -> None:
    # spec §8.11: "Approval pages MUST require fresh user authentication — a long-lived session
    # cookie alone is not sufficient." The admin is an approval surface too.
    agent = autonomous_pending(api, ["check_balance"])
    make_stale(admin_client)
    action = admin_approve(admin_client, agent)
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PENDING
    assert action.status_code == 302 and action["Location"] == live_page(agent)
    page = action["Location"]
    refused = post_decision(
        admin_client, page, {"action": "approve", "capabilities": ["check_balance"]}
    )
    assert refused.status_code == 302 and refused["Location"].startswith("/api/auth/reauth")
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PENDING
    assert not AuditEvent.objects.filter(kind="approval.decided").exists()

    # Happy path: confirm it is you, come back to the same page, approve.
    back = admin_client.post("/api/auth/reauth", {"password": "password", "next": page})
    assert back.status_code == 302 and back["Location"] == page
    done = post_decision(
        admin_client, page, {"action": "approve", "capabilities": ["check_balance"]}
    )
    assert done.status_code == 200
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ACTIVE
    event = AuditEvent.objects.get(kind="approval.decided", agent_id=agent.pk)
    assert event.actor_type == "staff" and event.data["approved"] == ["check_balance"]


# --- who may decide (spec §2.2.1, §2.2.2, §2.9) -------------------------------------------------


@pytest.fixture
def staff_approver(staff_user: Any) -> Any:
    """Staff holding every agentauth permission on agents, but not a superuser."""
    staff_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_agent", "change_agent", "approve_agent"])
    )
    return staff_user


def test_staff_cannot_approve_a_delegated_agent_of_another_person(
    api: Api, user: Any, staff_approver: Any
) -> None:
    # spec §2.2.1: a delegated agent acts for one user, and "the user ... decides what to
    # allow". Staff may decide for autonomous agents only (§2.2.2), whatever their permissions.
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance"])
    reply = api.request_capability(agent, key, ["read_only_note"])
    code = reply.body["approval"]["user_code"]
    staff = Client()
    staff.force_login(staff_approver)

    # From the admin: no way to the approval page, and nothing decided.
    action = staff.post(
        ADMIN_AGENTS, {"action": "approve", "_selected_action": [agent.pk]}, follow=True
    )
    assert any("acts for a person" in n for n in notes(action)), notes(action)
    # Not even with the code in hand: the page shows the request, the decision is refused.
    page = enter_code(staff, code)
    refused = post_decision(staff, page, {"action": "approve", "capabilities": ["read_only_note"]})
    assert refused.status_code == 403 and b"Only the person this agent acts for" in refused.content
    assert CapabilityGrant.objects.get(capability="read_only_note").status == GrantStatus.PENDING
    assert not AuditEvent.objects.filter(kind="approval.decided").exists()

    # The person it acts for, with the same code, may.
    alice = Client()
    alice.force_login(user)
    mine = enter_code(alice, code)
    assert (
        post_decision(
            alice, mine, {"action": "approve", "capabilities": ["read_only_note"]}
        ).status_code
        == 200
    )
    grant = CapabilityGrant.objects.get(capability="read_only_note")
    assert grant.status == GrantStatus.ACTIVE and grant.granted_by_id == user.pk
    assert AuditEvent.objects.get(kind="approval.decided").actor_type == "user"


def test_an_administrator_may_deny_but_not_approve_for_another_person(
    api: Api, user: Any, staff_approver: Any
) -> None:
    # spec §2.2.1: approving a delegated agent is its person's decision; refusing it is not
    # a grant of anything, and administrators may stop what they see (approvals._person_may_decide).
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance"])
    reply = api.request_capability(agent, key, ["read_only_note"])
    staff = Client()
    staff.force_login(staff_approver)
    page = enter_code(staff, reply.body["approval"]["user_code"])
    refused = post_decision(staff, page, {"action": "approve", "capabilities": ["read_only_note"]})
    assert refused.status_code == 403
    denied = post_decision(staff, page, {"action": "deny"})
    assert denied.status_code == 200, denied.content
    assert CapabilityGrant.objects.get(capability="read_only_note").status == GrantStatus.DENIED
    decided = AuditEvent.objects.get(kind="approval.decided")
    assert decided.actor_type != "user" and decided.actor_id == str(staff_approver.pk)


def test_the_shown_digest_covers_the_agent_state(user: Any) -> None:
    # A decision carries back what was shown; the agent's own state is part of it, so a page
    # shown for a pending agent cannot approve the same request once the agent has changed.
    host, _ = make_host(user=user)
    agent, _ = make_agent(host, status=AgentStatus.PENDING)
    approval = approvals.open_request(agent, []).request
    assert approvals.shown_digest(approval, AgentStatus.PENDING, []) != approvals.shown_digest(
        approval, AgentStatus.ACTIVE, []
    )


def test_an_administrator_is_whoever_holds_approve_agent(
    api: Api, staff_user: Any, staff_approver: Any, django_user_model: Any
) -> None:
    # spec §2.2.2 "administrator approval": defined as the agentauth.approve_agent permission
    # (superusers hold every permission). Changing agents is not enough.
    agent = autonomous_pending(api, ["check_balance"])
    editor = django_user_model.objects.create_user("eve", password="x", is_staff=True)
    editor.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_agent", "change_agent"])
    )
    client = Client()
    client.force_login(editor)
    page = reverse("agentauth:approve", args=[approvals.live_request(agent).pk])
    assert client.get(page).status_code == 404
    client.post(ADMIN_AGENTS, {"action": "approve", "_selected_action": [agent.pk]})
    client.post(ADMIN_AGENTS, {"action": "deny", "_selected_action": [agent.pk]})
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PENDING

    approver = Client()
    approver.force_login(staff_approver)
    action = admin_approve(approver, agent)
    assert action.status_code == 302 and action["Location"] == page
    assert (
        post_decision(
            approver, page, {"action": "approve", "capabilities": ["check_balance"]}
        ).status_code
        == 200
    )
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ACTIVE


# --- bound to what was shown (spec §8.10) -------------------------------------------------------


def test_a_request_that_changed_after_it_was_shown_is_refused(
    client: Client, api: Api, user: Any
) -> None:
    # spec §8.10: approval is the trust boundary, so it must apply to exactly what the person
    # saw. Here the agent asks for more between the page being shown and "Approve" being hit.
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance"])
    first = api.request_capability(agent, key, ["read_only_note"])
    client.force_login(user)
    page = enter_code(client, first.body["approval"]["user_code"])
    shown = client.get(page).context["shown"]
    api.request_capability(agent, key, ["transfer"])
    response = client.post(
        page, {"shown": shown, "action": "approve", "capabilities": ["read_only_note"]}, follow=True
    )
    assert CapabilityGrant.objects.filter(status=GrantStatus.PENDING).count() == 2
    assert not AuditEvent.objects.filter(kind="approval.decided").exists()
    # The page shows the request again, as it is now, and says why.
    assert response.status_code == 200
    assert any("changed" in n for n in notes(response)), notes(response)
    html = response.content.decode()
    assert "transfer" in html and "read_only_note" in html
    assert response.context["approval"].pk == approvals.live_request(agent).pk


def test_changed_constraints_after_display_are_refused(client: Client, api: Api, user: Any) -> None:
    # spec §8.10, §2.13: the constraints shown are part of what is approved.
    reply = api.register(
        Keypair.generate(),
        body={
            "name": "Helper",
            "capabilities": [{"name": "check_balance", "constraints": {"account_id": "acc_1"}}],
        },
    )
    client.force_login(user)
    page = enter_code(client, reply.body["approval"]["user_code"])
    shown = client.get(page).context["shown"]
    CapabilityGrant.objects.filter(capability="check_balance").update(
        constraints={"account_id": {"in": ["acc_1", "acc_2"]}}
    )
    response = client.post(
        page, {"shown": shown, "action": "approve", "capabilities": ["check_balance"]}
    )
    assert response.status_code == 409
    assert response.context["error_code"] == "request_changed"
    assert "acc_2" in response.content.decode()
    assert Agent.objects.get().status == AgentStatus.PENDING
    # Approving what is now shown works.
    assert (
        post_decision(
            client, page, {"action": "approve", "capabilities": ["check_balance"]}
        ).status_code
        == 200
    )
    assert Agent.objects.get().status == AgentStatus.ACTIVE


def test_decide_compares_the_digest_and_needs_one_from_a_person(api: Api, user: Any) -> None:
    # spec §8.10: without a digest, or with another request's, a person's approval is refused.
    agent = autonomous_pending(api, ["check_balance"])
    other = autonomous_pending(api, ["check_balance"])
    approval = approvals.live_request(agent)
    user.is_superuser = True
    user.save()
    session = {"agentauth_authenticated_at": time.time()}
    approver = approvals.Approver.in_session(user, session)
    for shown in (None, "", approvals.digest_of(approvals.live_request(other))):
        with pytest.raises(ProtocolError) as refused:
            approvals.decide(approval, approver=approver, shown=shown)
        assert refused.value.code == "request_changed"
    approvals.decide(approval, approver=approver, shown=approvals.digest_of(approval))
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ACTIVE


# --- the operator path ---------------------------------------------------------------------------


def test_the_command_decides_on_the_operator_path_and_says_so(
    api: Api, user: Any, staff_user: Any
) -> None:
    # The command line has no browser session: it is an explicit operator path, recorded as
    # such, deciding in the name of the person a delegated agent acts for (spec §2.2.1, §2.9).
    reply = api.register(Keypair.generate(), body={"name": "x", "capabilities": ["transfer"]})
    agent_id = reply.body["agent_id"]
    out = StringIO()
    call_command("agentauth_approve", agent_id, "--user", "alice", stdout=out)
    assert json.loads(out.getvalue())["approved"] == ["transfer"]
    agent = Agent.objects.select_related("host").get(pk=agent_id)
    assert agent.status == AgentStatus.ACTIVE and agent.host.user_id == user.pk
    event = AuditEvent.objects.get(kind="approval.decided", agent_id=agent_id)
    assert event.actor_type == "operator"
    assert event.actor_id == f"agentauth_approve:{getpass.getuser()}"
    assert event.user_id == str(user.pk)
    linked = AuditEvent.objects.get(kind="host.linked", host_id=agent.host_id)
    assert linked.actor_type == "operator"

    # In anyone else's name, a delegated agent of alice's host is refused.
    host = Host.objects.get(pk=agent.host_id)
    other, other_key = make_agent(host, grants=["check_balance"])
    api.request_capability(other, other_key, ["read_only_note"])
    with pytest.raises(CommandError, match="acts for another user"):
        call_command("agentauth_approve", other.pk, "--user", "sam", stdout=StringIO())
    assert CapabilityGrant.objects.get(agent=other, capability="read_only_note").status == (
        GrantStatus.PENDING
    )


def test_only_the_command_builds_an_operator() -> None:
    with pytest.raises(ValueError):
        approvals.Approver.operator(object(), name="")


# --- approval strength in the admin (spec §8.11) -------------------------------------------------


def test_admin_cannot_approve_a_webauthn_capability_without_stepping_up(
    admin_client: Client, api: Api, admin_user: Any
) -> None:
    # spec §8.11: capabilities that act need proof of physical presence; the admin's decision is
    # the approval page's, so the same step-up applies to staff.
    agent = autonomous_pending(api, ["transfer"])
    action = admin_approve(admin_client, agent)
    page = action["Location"]
    refused = post_decision(admin_client, page, APPROVE_TRANSFER)
    assert refused.status_code == 403 and refused.context["error_code"] == "webauthn_required"
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PENDING

    soft = SoftAuthenticator()
    begin = admin_client.post("/api/auth/webauthn/begin", "{}", content_type="application/json")
    created = soft.create(begin.json(), ORIGIN)
    admin_client.post(
        "/api/auth/webauthn/complete",
        json.dumps({"credential": created, "name": "Admin key"}),
        content_type="application/json",
    )
    options = admin_client.post(f"{page}/webauthn/begin", "{}", content_type="application/json")
    assertion = soft.get(options.json(), ORIGIN)
    verified = admin_client.post(
        f"{page}/webauthn/complete", json.dumps(assertion), content_type="application/json"
    )
    assert verified.status_code == 200, verified.content
    assert post_decision(admin_client, page, APPROVE_TRANSFER).status_code == 200
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ACTIVE
    assert ApprovalRequest.objects.get(agent=agent).user_id == admin_user.pk
