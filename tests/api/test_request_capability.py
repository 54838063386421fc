"""POST /agent/request-capability (spec §5.4, §4.3, §2.3, §5.3, §8)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agentauth import agents, approvals
from agentauth.errors import ProtocolError
from agentauth.models import (
    Agent,
    AgentMode,
    AgentStatus,
    ApprovalRequest,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
)
from agentauth.testing import agent_token, make_agent, make_host
from tests.conftest import ISSUER, Api, assert_error, operator_decides

pytestmark = pytest.mark.django_db


@pytest.fixture
def linked(user: Any) -> Any:
    """An active delegated agent on a host linked to ``user``, with two default capabilities."""
    host, _ = make_host(user=user, default_capabilities=["check_balance", "read_only_note"])
    return make_agent(host, grants=["check_balance"])


def ask(api: Api, agent: Any, body: Any, **token_kwargs: Any) -> Any:
    a, key = agent
    return api.post("/agent/request-capability", body, token=agent_token(a, key, **token_kwargs))


def rows(capability: str) -> list[tuple[str, Any]]:
    grants = CapabilityGrant.objects.filter(capability=capability).order_by("created_at", "pk")
    return [(g.status, g.constraints) for g in grants]


# --- auto-approval is narrow ---------------------------------------------------------------------


def test_default_but_not_none_strength_needs_a_person(api: Api, user: Any) -> None:
    # spec §8.10 — only approval_strength "none" is granted without a person, defaults or not.
    host, _ = make_host(user=user, default_capabilities=["transfer", "read_only_note"])
    agent = make_agent(host)
    reply = ask(api, agent, {"capabilities": ["transfer", "read_only_note"]})
    assert reply.status == 200
    statuses = {g["capability"]: g["status"] for g in reply.body["agent_capability_grants"]}
    assert statuses == {"transfer": "pending", "read_only_note": "active"}
    assert "approval" in reply.body
    # The approval covers only what is pending.
    approval = ApprovalRequest.objects.get(status="pending")
    assert [g.capability for g in approval.grants.all()] == ["transfer"]


def test_unlinked_host_defaults_are_not_auto_approved(api: Api) -> None:
    # §2.8 — a delegated agent on an unlinked host has nobody behind its defaults.
    host, _ = make_host(default_capabilities=["read_only_note"])
    agent = make_agent(host)
    reply = ask(api, agent, {"capabilities": ["read_only_note"]})
    assert reply.body["agent_capability_grants"] == [
        {"capability": "read_only_note", "status": "pending"}
    ]


def test_auto_approved_grant_is_effective_at_once(api: Api, linked: Any) -> None:
    # spec: §5.4 — an active grant in the response is usable without further steps.
    reply = ask(api, linked, {"capabilities": ["read_only_note"]})
    [grant] = reply.body["agent_capability_grants"]
    assert grant["status"] == "active" and grant["description"]
    a, key = linked
    executed = api.post(
        "/capability/execute",
        {"capability": "read_only_note"},
        token=agent_token(a, key, audience=ISSUER + "/capability/execute"),
    )
    assert executed.status == 200 and executed.body == {"data": {"note": "hello from the test app"}}
    assert not ApprovalRequest.objects.exists()


# --- §5.4 cases -----------------------------------------------------------------------------------


def test_pending_duplicate_supersedes_the_old_code(api: Api, linked: Any) -> None:
    # §5.4 — same pending row, fresh approval; only the newest user code works.
    first = ask(api, linked, {"capabilities": ["transfer"], "reason": "pay rent"})
    second = ask(api, linked, {"capabilities": ["transfer"]})
    old_code, new_code = first.body["approval"]["user_code"], second.body["approval"]["user_code"]
    assert old_code != new_code
    assert approvals.find_by_user_code(old_code) is None
    live = approvals.find_by_user_code(new_code)
    assert live is not None and [g.capability for g in live.grants.all()] == ["transfer"]
    assert rows("transfer") == [("pending", None)]
    # The reason given first survives a re-request without one (§5.4).
    assert CapabilityGrant.objects.get(capability="transfer").reason == "pay rent"


def test_pending_duplicate_takes_the_newest_constraints(api: Api, linked: Any) -> None:
    ask(api, linked, {"capabilities": [{"name": "transfer", "constraints": {"amount": 5}}]})
    ask(api, linked, {"capabilities": [{"name": "transfer", "constraints": {"amount": 7}}]})
    assert rows("transfer") == [("pending", {"amount": 7})]


def test_denied_is_a_new_row_and_history_stays(api: Api, linked: Any, user: Any) -> None:
    # §5.4 — a denied capability may be asked for again (new approval).
    ask(api, linked, {"capabilities": ["transfer"]})
    operator_decides(linked[0], user, approve=[])
    reply = ask(api, linked, {"capabilities": ["transfer"]})
    assert reply.body["agent_capability_grants"] == [
        {"capability": "transfer", "status": "pending"}
    ]
    assert rows("transfer") == [("denied", None), ("pending", None)]
    assert approvals.find_by_user_code(reply.body["approval"]["user_code"]) is not None


def test_new_constraints_keep_the_old_grant_until_approved(
    api: Api, linked: Any, user: Any
) -> None:
    # §5.4 — the active grant keeps working while the new request waits; approval
    # swaps it for the new one, and the new constraints are then enforced.
    a, key = linked
    location = ISSUER + "/capability/execute"

    def balance(account: str) -> int:
        body = {"capability": "check_balance", "arguments": {"account_id": account}}
        reply = api.post("/capability/execute", body, token=agent_token(a, key, audience=location))
        return reply.status

    narrowed = {"name": "check_balance", "constraints": {"account_id": "acc_1"}}
    reply = ask(api, linked, {"capabilities": [narrowed]})
    assert reply.body["agent_capability_grants"] == [
        {"capability": "check_balance", "status": "pending"}
    ]
    assert balance("acc_2") == 200  # old, unconstrained grant still in force
    operator_decides(a, user)
    assert rows("check_balance") == [("revoked", None), ("active", {"account_id": "acc_1"})]
    assert balance("acc_1") == 200
    assert balance("acc_2") == 403


def test_same_constraints_as_the_active_grant_is_already_granted(api: Api, user: Any) -> None:
    # spec: §5.4 — equality is on the effective (server-intersected) constraints.
    host, _ = make_host(user=user, default_capabilities=["capped_transfer"])
    agent = make_agent(host)
    assert ask(api, agent, {"capabilities": ["capped_transfer"]}).status == 200
    again = ask(api, agent, {"capabilities": ["capped_transfer"]})
    assert_error(again, 409, "already_granted")
    explicit = {"name": "capped_transfer", "constraints": {"amount": {"max": 10000}}}
    assert_error(ask(api, agent, {"capabilities": [explicit]}), 409, "already_granted")


def test_lapsed_grant_can_be_asked_for_again(api: Api, linked: Any) -> None:
    # spec §3.3 — a grant past its expiry is not "already granted".
    CapabilityGrant.objects.filter(capability="check_balance").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    reply = ask(api, linked, {"capabilities": ["check_balance"]})
    assert reply.status == 200
    assert [g["capability"] for g in reply.body["agent_capability_grants"]] == ["check_balance"]


# --- constraints ---------------------------------------------------------------------------------


def test_server_constraints_apply_to_pending_requests_too(api: Api, linked: Any, user: Any) -> None:
    # spec §2.13, §5.3 — asked without a limit, the grant still carries the server's cap.
    reply = ask(api, linked, {"capabilities": ["capped_transfer"]})
    assert reply.body["agent_capability_grants"][0]["status"] == "pending"
    operator_decides(linked[0], user)
    assert rows("capped_transfer") == [("active", {"amount": {"max": 10000}})]


@pytest.mark.parametrize(
    "constraints",
    [
        {"amount": {"min": 20000}},  # contradicts the server's max 10000
        {"currency": "USD"},  # not an input of capped_transfer
        {"amount": {"max": "lots"}},  # wrong operator type
        {"amount": [1, 2]},  # not a scalar
    ],
)
def test_bad_constraints_are_refused(api: Api, linked: Any, constraints: Any) -> None:
    entry = {"name": "capped_transfer", "constraints": constraints}
    assert_error(ask(api, linked, {"capabilities": [entry]}), 400, "invalid_request")
    assert not CapabilityGrant.objects.filter(capability="capped_transfer").exists()


def test_error_bodies_list_the_offenders(api: Api, linked: Any) -> None:
    # spec: §5.4 — the arrays clients use to fix their request.
    reply = ask(api, linked, {"capabilities": ["nope", "transfer", "nada"]})
    assert_error(reply, 400, "invalid_capabilities")
    assert reply.body["invalid_capabilities"] == ["nope", "nada"]
    weird = {"amount": {"gte": 1, "regex": "x", "max": 3}}
    reply = ask(api, linked, {"capabilities": [{"name": "transfer", "constraints": weird}]})
    assert_error(reply, 400, "unknown_constraint_operator")
    assert reply.body["unknown_operators"] == ["gte", "regex"]
    assert not CapabilityGrant.objects.filter(capability="transfer").exists()


@pytest.mark.parametrize(
    "body",
    [
        {"capabilities": "transfer"},
        {"capabilities": [5]},
        {"capabilities": ["transfer", "transfer"]},
        {"capabilities": [{"constraints": {}}]},
        {"capabilities": [{"name": "transfer", "limit": 1}]},
        {"capabilities": ["transfer"], "reason": 5},
    ],
)
def test_malformed_requests(api: Api, linked: Any, body: Any) -> None:
    # spec: §5.4
    assert_error(ask(api, linked, body), 400, "invalid_request")


# --- who may ask ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, code",
    [
        (AgentStatus.REVOKED, "agent_revoked"),
        (AgentStatus.EXPIRED, "agent_expired"),
        (AgentStatus.REJECTED, "agent_rejected"),
    ],
)
def test_inactive_agents_cannot_ask(api: Api, linked: Any, status: str, code: str) -> None:
    # spec: §4.3
    type(linked[0]).objects.filter(pk=linked[0].pk).update(status=status)
    assert_error(ask(api, linked, {"capabilities": ["transfer"]}), 403, code)
    assert not CapabilityGrant.objects.filter(capability="transfer").exists()


def test_audience_must_be_the_issuer(api: Api, linked: Any) -> None:
    # spec: §4.3 (§4.3)
    reply = ask(
        api, linked, {"capabilities": ["transfer"]}, audience=ISSUER + "/capability/execute"
    )
    assert_error(reply, 401, "invalid_jwt")


def test_request_does_not_change_the_agent(api: Api, linked: Any) -> None:
    # spec: §5.4 — the agent stays active; its session slides (§2.4).
    ask(api, linked, {"capabilities": ["transfer"]})
    agent = type(linked[0]).objects.get(pk=linked[0].pk)
    assert agent.status == AgentStatus.ACTIVE and agent.last_used_at is not None


# --- what is kept --------------------------------------------------------------------------------


def test_reason_is_sanitised_and_stored(api: Api, linked: Any) -> None:
    # spec: §5.4, §8 — display text loses markup and control characters.
    ask(api, linked, {"capabilities": ["transfer"], "reason": "<b>pay</b>\u202e the\n rent"})
    grant = CapabilityGrant.objects.get(capability="transfer")
    assert grant.reason == "pay the rent"
    assert ApprovalRequest.objects.get().reason == "pay the rent"


def test_binding_message_reaches_the_approval(api: Api, linked: Any) -> None:
    # spec: §5.4
    reply = ask(api, linked, {"capabilities": ["transfer"], "binding_message": "Order 4711"})
    assert reply.body["approval"]["binding_message"] == "Order 4711"
    assert reply.body["approval"]["expires_in"] > 0 and reply.body["approval"]["interval"] >= 1


def test_ciba_goes_to_the_linked_user(
    api: Api, linked: Any, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §5.4 — same negotiation as registration: CIBA reaches the linked user.
    with django_capture_on_commit_callbacks(execute=False):
        reply = ask(api, linked, {"capabilities": ["transfer"], "preferred_method": "ciba"})
    approval = reply.body["approval"]
    assert approval["method"] == "ciba" and "user_code" not in approval
    assert ApprovalRequest.objects.get().user_id == user.pk


def test_request_is_audited(api: Api, linked: Any) -> None:
    ask(api, linked, {"capabilities": ["transfer", "read_only_note"]})
    event = AuditEvent.objects.get(kind="capability.requested")
    assert event.agent_id == linked[0].pk
    assert event.data == {
        "requested": ["transfer", "read_only_note"],
        "auto_approved": ["read_only_note"],
    }


def test_revoking_the_agent_withdraws_its_pending_requests(api: Api, linked: Any) -> None:
    # spec §2.6 — nothing stays approvable for a revoked agent.
    reply = ask(api, linked, {"capabilities": ["transfer"]})
    agents.revoke_agent(linked[0], actor_type="user")
    assert approvals.find_by_user_code(reply.body["approval"]["user_code"]) is None
    assert CapabilityGrant.objects.get(capability="transfer").status == GrantStatus.REVOKED


def test_autonomous_agent_asks_an_administrator(api: Api, user: Any) -> None:
    # spec §2.2.2 — nothing is auto-approved for an unlinked host without a policy.
    host, _ = make_host()
    agent = make_agent(host, mode=AgentMode.AUTONOMOUS)
    reply = ask(api, agent, {"capabilities": ["read_only_note"]})
    assert reply.body["agent_capability_grants"][0]["status"] == "pending"
    approval = approvals.live_request(agent[0])
    fresh_session = {"agentauth_authenticated_at": time.time()}
    with pytest.raises(ProtocolError) as refused:
        approvals.decide(
            approval,
            approver=approvals.Approver.in_session(user, fresh_session),
            shown=approvals.digest_of(approval),
        )
    assert refused.value.code == "unauthorized"


# --- request-capability: more --------------------------------------------------------------------


@pytest.fixture
def linked_agent(user: Any) -> Any:
    host, _ = make_host(user=user, default_capabilities=["check_balance", "read_only_note"])
    return make_agent(host, grants=["check_balance"])


def request(api: Api, agent: Any, body: Any) -> Any:
    a, key = agent
    return api.post("/agent/request-capability", body, token=agent_token(a, key))


def test_auto_approved_within_host_defaults(api: Api, linked_agent: Any) -> None:
    # spec: §5.4
    reply = request(api, linked_agent, {"capabilities": ["read_only_note"], "reason": "notes"})
    assert reply.status == 200
    assert reply.body["agent_id"] == linked_agent[0].pk and "approval" not in reply.body
    [grant] = reply.body["agent_capability_grants"]
    assert grant["capability"] == "read_only_note" and grant["status"] == "active"
    assert CapabilityGrant.objects.get(capability="read_only_note").reason == "notes"  # §5.4


def test_outside_defaults_is_pending_with_approval(api: Api, linked_agent: Any) -> None:
    # spec: §5.4
    reply = request(api, linked_agent, {"capabilities": ["transfer"]})
    assert reply.body["agent_capability_grants"] == [
        {"capability": "transfer", "status": "pending"}
    ]
    assert reply.body["approval"]["method"] == "device_authorization"
    assert Agent.objects.get().status == AgentStatus.ACTIVE  # §5.4


def test_all_already_granted(api: Api, linked_agent: Any) -> None:
    # spec: §5.4
    assert_error(
        request(api, linked_agent, {"capabilities": ["check_balance"]}), 409, "already_granted"
    )


def test_partial_overlap_processes_the_rest(api: Api, linked_agent: Any) -> None:
    # §5.4
    reply = request(api, linked_agent, {"capabilities": ["check_balance", "transfer"]})
    assert [g["capability"] for g in reply.body["agent_capability_grants"]] == ["transfer"]


def test_pending_duplicate_is_returned_again(api: Api, linked_agent: Any) -> None:
    # §5.4
    first = request(api, linked_agent, {"capabilities": ["transfer"]})
    second = request(api, linked_agent, {"capabilities": ["transfer"]})
    assert second.body["agent_capability_grants"] == first.body["agent_capability_grants"]
    assert CapabilityGrant.objects.filter(capability="transfer").count() == 1
    assert approvals.find_by_user_code(second.body["approval"]["user_code"]) is not None


def test_denied_can_be_requested_again(api: Api, linked_agent: Any, user: Any) -> None:
    request(api, linked_agent, {"capabilities": ["transfer"]})
    operator_decides(linked_agent[0], user, approve=[])
    reply = request(api, linked_agent, {"capabilities": ["transfer"]})
    assert reply.body["agent_capability_grants"][0]["status"] == "pending"


def test_new_constraints_replace_the_active_grant_on_approval(
    api: Api, linked_agent: Any, user: Any
) -> None:
    # §5.4: one active grant per capability, always.
    constrained = {"name": "check_balance", "constraints": {"account_id": "acc_9"}}
    reply = request(api, linked_agent, {"capabilities": [constrained]})
    assert reply.body["agent_capability_grants"][0]["status"] == "pending"
    operator_decides(linked_agent[0], user)
    active = CapabilityGrant.objects.filter(capability="check_balance", status="active")
    assert [g.constraints for g in active] == [{"account_id": "acc_9"}]


def test_server_imposed_constraints_intersect(api: Api, user: Any) -> None:
    # spec §2.13: combined = tightest, §5.3, §2.13
    host, _ = make_host(user=user, default_capabilities=["capped_transfer"])
    agent = make_agent(host)
    wide = {"name": "capped_transfer", "constraints": {"amount": {"max": 50000}}}
    reply = request(api, agent, {"capabilities": [wide]})
    assert reply.body["agent_capability_grants"][0]["constraints"] == {"amount": {"max": 10000}}
    agent2 = make_agent(host)
    narrow = {"name": "capped_transfer", "constraints": {"amount": {"max": 500}}}
    reply = request(api, agent2, {"capabilities": [narrow]})
    assert reply.body["agent_capability_grants"][0]["constraints"] == {"amount": {"max": 500}}


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"capabilities": ["nope"]}, 400, "invalid_capabilities"),
        (
            {"capabilities": [{"name": "transfer", "constraints": {"amount": {"lt": 1}}}]},
            400,
            "unknown_constraint_operator",
        ),
        ({"capabilities": []}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"capabilities": ["transfer"], "extra": 1}, 400, "invalid_request"),
    ],
)
def test_request_errors(api: Api, linked_agent: Any, body: Any, status: int, code: str) -> None:
    # spec: §5.4
    assert_error(request(api, linked_agent, body), status, code)


def test_pending_agent_cannot_request(api: Api, user: Any) -> None:
    # spec: §4.3
    host, _ = make_host(user=user)
    agent = make_agent(host, status=AgentStatus.PENDING)
    assert_error(request(api, agent, {"capabilities": ["transfer"]}), 403, "agent_pending")
