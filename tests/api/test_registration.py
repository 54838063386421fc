"""POST /agent/register (spec §5.3) and the approval decisions that complete it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agentauth import approvals
from agentauth.models import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    AuditEvent,
    CapabilityGrant,
    Host,
    HostStatus,
)
from agentauth.testing import Keypair, make_agent, make_host
from tests.conftest import Api, assert_error, operator_decides

pytestmark = pytest.mark.django_db

USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


def test_dynamic_delegated_registration_is_pending_with_device_approval(
    api: Api, host_key: Keypair
) -> None:
    # spec: §7, §2.8
    reply = api.register(
        host_key,
        body={"name": "Ticket bot", "host_name": "CI runner", "capabilities": ["check_balance"]},
    )
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["status"] == "pending"
    assert body["mode"] == "delegated"
    assert body["name"] == "Ticket bot"
    assert body["agent_id"].startswith("agt_") and body["host_id"].startswith("hst_")
    assert body["agent_capability_grants"] == [{"capability": "check_balance", "status": "pending"}]
    approval = body["approval"]
    assert approval["method"] == "device_authorization"
    assert USER_CODE.match(approval["user_code"])
    assert approval["verification_uri"] == "http://testserver/api/auth/device"
    assert approval["verification_uri_complete"].endswith("?code=" + approval["user_code"])
    assert 0 < approval["expires_in"] <= 300 and approval["interval"] == 5
    host = Host.objects.get(pk=body["host_id"])
    # spec: §2.8, §8.10 — a dynamically registered host is untrusted until a person approves.
    assert host.status == HostStatus.PENDING and host.user_id is None
    assert host.thumbprint == host_key.thumbprint and host.name == "CI runner"
    # The user code is stored only as a hash.
    req = ApprovalRequest.objects.get(agent_id=body["agent_id"])
    assert approval["user_code"] not in str(req.user_code_hash)
    assert approvals.find_by_user_code(approval["user_code"]) == req


def test_registration_without_capabilities_has_no_grants(api: Api, host_key: Keypair) -> None:
    # spec: §5.4
    reply = api.register(host_key)
    assert reply.status == 200
    assert reply.body["agent_capability_grants"] == []
    assert reply.body["status"] == "pending" and "approval" in reply.body


def test_dynamic_registration_iss_must_be_key_thumbprint(api: Api, host_key: Keypair) -> None:
    # spec: §2.8, §4.2
    reply = api.register(host_key, extra_claims={"iss": Keypair.generate().thumbprint})
    assert_error(reply, 401, "invalid_jwt")
    assert not Host.objects.exists()


def test_dynamic_registration_can_be_disabled(api: Api, host_key: Keypair, settings: Any) -> None:
    settings.AGENTAUTH_ALLOW_DYNAMIC_HOST_REGISTRATION = False
    assert_error(api.register(host_key), 403, "dynamic_host_registration_disabled")
    assert not Host.objects.exists()


def test_agent_key_is_required(api: Api, host_key: Keypair) -> None:
    # spec: §5.3
    from agentauth.testing import host_token

    reply = api.post("/agent/register", {"name": "x"}, token=host_token(host_key))
    assert_error(reply, 400, "invalid_request")


@pytest.mark.parametrize(
    "jwk, code",
    [
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "unsupported_algorithm"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "unsupported_algorithm"),
        ({"kty": "OKP", "crv": "X25519", "x": "A" * 43}, "unsupported_algorithm"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "short"}, "invalid_request"),
        ({"kty": "OKP", "crv": "Ed25519"}, "invalid_request"),
        ("not-a-jwk", "invalid_request"),
    ],
)
def test_agent_key_must_be_ed25519(api: Api, host_key: Keypair, jwk: Any, code: str) -> None:
    # spec: §5.3, §4.1, §5.13
    from agentauth.testing import host_token

    token = host_token(host_key, extra_claims={"agent_public_key": jwk})
    assert_error(api.post("/agent/register", {"name": "x"}, token=token), 400, code)


def test_agent_private_key_material_is_refused(api: Api, host_key: Keypair) -> None:
    # spec: §4.1
    from agentauth.testing import host_token

    agent = Keypair.generate()
    token = host_token(host_key, extra_claims={"agent_public_key": agent.to_private_jwk()})
    assert_error(api.post("/agent/register", {"name": "x"}, token=token), 400, "invalid_request")
    assert not Agent.objects.exists()


def test_agent_key_must_differ_from_host_key(api: Api, host_key: Keypair) -> None:
    assert_error(api.register(host_key, agent=host_key), 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": 7},
        {"name": ""},
        {"name": "<b></b>"},
        {"name": "x" * 129},
        {"name": "ok", "reason": ["list"]},
        {"name": "ok", "capabilities": "check_balance"},
        {"name": "ok", "capabilities": [7]},
        {"name": "ok", "capabilities": [{"constraints": {}}]},
        {"name": "ok", "capabilities": ["check_balance", "check_balance"]},
        {"name": "ok", "force_approval": "yes"},
        {"name": "ok", "surprise": 1},
    ],
)
def test_malformed_bodies_are_invalid_request(api: Api, host_key: Keypair, body: Any) -> None:
    # spec: §5.3, §5.13
    assert_error(api.register(host_key, body=body), 400, "invalid_request")
    assert not Agent.objects.exists()


def test_unknown_fields_are_named(api: Api, host_key: Keypair) -> None:
    reply = api.register(host_key, body={"name": "ok", "agent_name": "typo"})
    assert_error(reply, 400, "invalid_request")
    assert reply.body["unknown_fields"] == ["agent_name"]


def test_display_text_is_sanitised(api: Api, host_key: Keypair) -> None:
    # spec: §8 — markup and control characters never reach storage or screens.
    reply = api.register(
        host_key,
        body={"name": "<script>alert(1)</script>Helper\u202e\x07 bot", "host_name": "<i>Mac</i>"},
    )
    assert reply.status == 200
    assert reply.body["name"] == "alert(1)Helper bot"
    assert Host.objects.get().name == "Mac"


def test_unknown_capabilities_are_listed(api: Api, host_key: Keypair) -> None:
    # spec: §5.13
    reply = api.register(
        host_key,
        body={"name": "x", "capabilities": ["check_balance", "nonexistent_cap", "also_not_real"]},
    )
    assert_error(reply, 400, "invalid_capabilities")
    assert reply.body["invalid_capabilities"] == ["nonexistent_cap", "also_not_real"]


def test_unknown_constraint_operators_are_listed(api: Api, host_key: Keypair) -> None:
    # spec: §2.13
    reply = api.register(
        host_key,
        body={
            "name": "x",
            "capabilities": [
                {"name": "transfer", "constraints": {"amount": {"max": 10, "regex": "a", "lt": 3}}}
            ],
        },
    )
    assert_error(reply, 400, "unknown_constraint_operator")
    assert reply.body["unknown_operators"] == ["lt", "regex"]


@pytest.mark.parametrize(
    "constraints",
    [
        {"not_an_input": 5},
        {"amount": {"max": "1000"}},
        {"amount": {"max": True}},
        {"amount": {"min": 10, "max": 1}},
        {"amount": {"in": "USD"}},
        {"amount": {}},
        {"amount": [1, 2]},
    ],
)
def test_bad_constraint_values_fail_closed(api: Api, host_key: Keypair, constraints: Any) -> None:
    # spec: §2.13
    body = {"name": "x", "capabilities": [{"name": "transfer", "constraints": constraints}]}
    assert_error(api.register(host_key, body=body), 400, "invalid_request")


@pytest.mark.parametrize("mode", ["robot", 5, None])
def test_unknown_mode_is_unsupported(api: Api, host_key: Keypair, mode: Any) -> None:
    # spec: §2.2.2
    body: dict[str, Any] = {"name": "x", "mode": mode}
    assert_error(api.register(host_key, body=body), 400, "unsupported_mode")


def test_mode_not_offered_is_unsupported(api: Api, host_key: Keypair, settings: Any) -> None:
    # spec: §2.2.2
    settings.AGENTAUTH_MODES = ["delegated"]
    body = {"name": "x", "mode": "autonomous"}
    assert_error(api.register(host_key, body=body), 400, "unsupported_mode")


def test_pending_retry_is_idempotent_with_a_fresh_code(api: Api, host_key: Keypair) -> None:
    # spec: §5.3, §7.1
    agent_key = Keypair.generate()
    first = api.register(host_key, agent_key, body={"name": "x", "capabilities": ["check_balance"]})
    second = api.register(
        host_key, agent_key, body={"name": "x", "capabilities": ["check_balance"]}
    )
    assert second.status == 200
    assert second.body["agent_id"] == first.body["agent_id"]
    assert Agent.objects.count() == 1
    old, new = first.body["approval"]["user_code"], second.body["approval"]["user_code"]
    assert approvals.find_by_user_code(new) is not None
    # Only the newest code is live.
    assert old == new or approvals.find_by_user_code(old) is None


@pytest.mark.parametrize(
    "status",
    [
        AgentStatus.ACTIVE,
        AgentStatus.REVOKED,
        AgentStatus.REJECTED,
        AgentStatus.CLAIMED,
        AgentStatus.EXPIRED,
    ],
)
def test_non_pending_agent_with_same_key_conflicts(api: Api, status: str) -> None:
    # spec: §5.3, §2.3
    host, host_key = make_host()
    _, agent_key = make_agent(host, status=status)
    assert_error(api.register(host_key, agent_key), 409, "agent_exists")


def test_same_agent_key_under_two_hosts_is_two_agents(api: Api) -> None:
    # Spec §5.3: registration keys are host-scoped.
    agent_key = Keypair.generate()
    a = api.register(Keypair.generate(), agent_key)
    b = api.register(Keypair.generate(), agent_key)
    assert a.status == b.status == 200
    assert a.body["agent_id"] != b.body["agent_id"]


def test_revoked_host_cannot_register(api: Api) -> None:
    # spec: §2.11, §5.10
    _, key = make_host(status=HostStatus.REVOKED)
    assert_error(api.register(key), 403, "host_revoked")
    assert not Agent.objects.exists()


def test_rejected_host_cannot_register(api: Api) -> None:
    # spec: §2.11, §5.13
    _, key = make_host(status=HostStatus.REJECTED)
    assert_error(api.register(key), 403, "host_rejected")


def test_pending_host_agents_stay_pending(api: Api, user: Any) -> None:
    # spec: §2.11
    _, key = make_host(status=HostStatus.PENDING, default_capabilities=["check_balance"])
    reply = api.register(key, body={"name": "x", "capabilities": ["check_balance"]})
    assert reply.body["status"] == "pending"
    assert reply.body["agent_capability_grants"][0]["status"] == "pending"


def test_linked_host_auto_approves_low_risk_defaults_only(api: Api, user: Any) -> None:
    # spec: §1.5, §8.10, §5.3
    _, key = make_host(user=user, default_capabilities=["check_balance", "close_account"])
    reply = api.register(
        key,
        body={"name": "x", "capabilities": ["check_balance", "close_account", "transfer"]},
    )
    assert reply.status == 200
    body = reply.body
    assert body["status"] == "active"
    grants = {g["capability"]: g for g in body["agent_capability_grants"]}
    assert grants["check_balance"]["status"] == "active"
    assert grants["check_balance"]["description"] == "Check the balance of a bank account"
    assert grants["check_balance"]["input"]["required"] == ["account_id"]
    # A default whose approval strength is not "none" still needs a person (§8.10).
    assert grants["close_account"] == {"capability": "close_account", "status": "pending"}
    assert grants["transfer"] == {"capability": "transfer", "status": "pending"}
    assert body["approval"]["method"] == "device_authorization"
    agent = Agent.objects.get(pk=body["agent_id"])
    assert agent.user == user and agent.activated_at is not None and agent.expires_at is not None
    assert CapabilityGrant.objects.get(agent=agent, capability="check_balance").granted_by == user


def test_linked_host_with_everything_auto_approved_has_no_approval(api: Api, user: Any) -> None:
    _, key = make_host(user=user, default_capabilities=["check_balance"])
    reply = api.register(key, body={"name": "x", "capabilities": ["check_balance"]})
    assert reply.body["status"] == "active" and "approval" not in reply.body


def test_force_approval_disables_auto_approval(api: Api, user: Any) -> None:
    _, key = make_host(user=user, default_capabilities=["check_balance"])
    reply = api.register(
        key, body={"name": "x", "capabilities": ["check_balance"], "force_approval": True}
    )
    assert reply.body["agent_capability_grants"] == [
        {"capability": "check_balance", "status": "pending"}
    ]


def test_active_grants_carry_effective_constraints(api: Api, user: Any) -> None:
    # spec: §2.13, §5.3
    _, key = make_host(user=user, default_capabilities=["check_balance"])
    reply = api.register(
        key,
        body={
            "name": "x",
            "capabilities": [{"name": "check_balance", "constraints": {"account_id": "acc_1"}}],
        },
    )
    grant = reply.body["agent_capability_grants"][0]
    assert grant["status"] == "active" and grant["constraints"] == {"account_id": "acc_1"}


def test_autonomous_waits_for_an_administrator_by_default(api: Api, host_key: Keypair) -> None:
    # spec: §2.2.2, §2.8
    reply = api.register(
        host_key, body={"name": "x", "mode": "autonomous", "capabilities": ["check_balance"]}
    )
    assert reply.body["status"] == "pending" and reply.body["mode"] == "autonomous"
    assert Host.objects.get().status == HostStatus.PENDING


def test_autonomous_policy_activates_unlinked(api: Api, host_key: Keypair, settings: Any) -> None:
    # spec: §2.2.2, §2.8
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance", "transfer"]
    reply = api.register(
        host_key,
        body={"name": "x", "mode": "autonomous", "capabilities": ["check_balance", "transfer"]},
    )
    body = reply.body
    assert body["status"] == "active"
    grants = {g["capability"]: g["status"] for g in body["agent_capability_grants"]}
    # "transfer" needs webauthn: a policy list never auto-approves it.
    assert grants == {"check_balance": "active", "transfer": "pending"}
    host = Host.objects.get()
    assert host.status == HostStatus.ACTIVE and host.user_id is None
    assert Agent.objects.get().user_id is None


def test_autonomous_under_linked_host_is_refused(api: Api, user: Any) -> None:
    # Spec §2.2.2.
    _, key = make_host(user=user)
    assert_error(
        api.register(key, body={"name": "x", "mode": "autonomous"}), 400, "unsupported_mode"
    )


def test_approving_delegated_links_host_and_claims_autonomous(
    api: Api, host_key: Keypair, user: Any, settings: Any
) -> None:
    # spec: §2.9, §2.7, §2.10
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]
    auto = api.register(
        host_key, body={"name": "auto", "mode": "autonomous", "capabilities": ["check_balance"]}
    )
    assert auto.body["status"] == "active"
    deleg = api.register(host_key, body={"name": "deleg", "capabilities": ["check_balance"]})
    assert deleg.body["status"] == "pending"
    operator_decides(Agent.objects.get(pk=deleg.body["agent_id"]), user)
    host = Host.objects.get()
    assert host.user == user
    delegated = Agent.objects.get(pk=deleg.body["agent_id"])
    assert delegated.status == AgentStatus.ACTIVE and delegated.user == user
    claimed = Agent.objects.get(pk=auto.body["agent_id"])
    assert claimed.status == AgentStatus.CLAIMED
    assert not claimed.grants.filter(status="active").exists()
    assert AuditEvent.objects.filter(kind="host.linked", host_id=host.pk).exists()


def test_partial_approval(api: Api, host_key: Keypair, user: Any) -> None:
    # spec: §5.3, §7
    reply = api.register(
        host_key, body={"name": "x", "capabilities": ["check_balance", "transfer"]}
    )
    agent = Agent.objects.get(pk=reply.body["agent_id"])
    operator_decides(agent, user, approve=["check_balance"], reason="Not today")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    grants = {g.capability: g for g in agent.grants.all()}
    assert grants["check_balance"].status == "active" and grants["check_balance"].granted_by == user
    assert grants["transfer"].status == "denied" and grants["transfer"].denied_by == user
    assert grants["transfer"].reason == "Not today"
    assert Host.objects.get().status == HostStatus.ACTIVE
    assert not ApprovalRequest.objects.filter(status="pending").exists()


def test_denying_the_connection_rejects_agent_and_new_host(
    api: Api, host_key: Keypair, user: Any
) -> None:
    # spec: §7.1, §2.7
    first = api.register(host_key, body={"name": "x", "capabilities": ["check_balance"]})
    second = api.register(host_key, body={"name": "y"})
    operator_decides(Agent.objects.get(pk=first.body["agent_id"]), user, reject=True)
    assert Agent.objects.get(pk=first.body["agent_id"]).status == AgentStatus.REJECTED
    assert Agent.objects.get(pk=second.body["agent_id"]).status == AgentStatus.REJECTED
    assert Host.objects.get().status == HostStatus.REJECTED
    assert_error(api.register(host_key), 403, "host_rejected")


def test_denied_first_time_host_still_sees_its_agents_rejected(
    api: Api, host_key: Keypair, user: Any
) -> None:
    # spec §7.1 step 4: the client polls status "until the agent's status changes from pending
    # to active (approved), rejected (denied)"; a denial it cannot read would leave it polling.
    from agentauth.testing import host_token

    first = api.register(host_key, body={"name": "x", "capabilities": ["check_balance"]})
    agent_id = first.body["agent_id"]
    operator_decides(Agent.objects.get(pk=agent_id), user, reject=True)
    assert Host.objects.get().status == HostStatus.REJECTED
    reply = api.get("/agent/status", token=host_token(host_key), agent_id=agent_id)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "rejected"
    [grant] = reply.body["agent_capability_grants"]
    assert grant["capability"] == "check_balance" and grant["status"] == "denied"
    # Reading is all a rejected host may do (spec §2.11: rejected is terminal).
    assert_error(api.register(host_key), 403, "host_rejected")
    assert_error(
        api.post("/agent/reactivate", {"agent_id": agent_id}, token=host_token(host_key)),
        403,
        "host_rejected",
    )
    assert_error(
        api.post("/agent/revoke", {"agent_id": agent_id}, token=host_token(host_key)),
        403,
        "host_rejected",
    )


def test_only_the_linked_user_approves_a_linked_hosts_agent(
    user: Any, django_user_model: Any
) -> None:
    host, _ = make_host(user=user)
    agent, _ = make_agent(host, status=AgentStatus.PENDING)
    approvals.open_request(agent, [])
    mallory = django_user_model.objects.create_user(username="mallory", password="x")
    with pytest.raises(Exception) as info:
        operator_decides(agent, mallory)
    assert getattr(info.value, "code", None) == "unauthorized"
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING


def test_registration_is_audited(api: Api, host_key: Keypair) -> None:
    # spec: §11
    reply = api.register(host_key, body={"name": "x"})
    kinds = set(AuditEvent.objects.values_list("kind", flat=True))
    assert {"host.created", "agent.registered"} <= kinds
    event = AuditEvent.objects.get(kind="agent.registered")
    assert event.agent_id == reply.body["agent_id"] and event.actor_type == "host"


@pytest.mark.parametrize(
    "extra, code",
    [
        ({"n": "AQAB"}, "invalid_request"),  # a member no Ed25519 public key has
        ({"alg": "RS256"}, "unsupported_algorithm"),
    ],
)
def test_agent_jwk_members_are_checked(api: Api, host_key: Keypair, extra: Any, code: str) -> None:
    # spec: §4.1, §5.3 — a key never carries data the server would silently drop.
    from agentauth.testing import host_token

    jwk = {**Keypair.generate().public_jwk, **extra}
    token = host_token(host_key, extra_claims={"agent_public_key": jwk})
    assert_error(api.post("/agent/register", {"name": "x"}, token=token), 400, code)


def test_agent_key_inline_and_by_url_at_once_is_refused(api: Api, host_key: Keypair) -> None:
    # spec §4.2: one agent key, inline or by URL; both at once is refused before any fetch.
    from agentauth.testing import host_token

    token = host_token(
        host_key,
        agent_public_key=Keypair.generate(),
        extra_claims={"agent_jwks_url": "https://keys.example/jwks.json", "agent_kid": "k1"},
    )
    assert_error(api.post("/agent/register", {"name": "x"}, token=token), 400, "invalid_request")
    assert not Agent.objects.exists()


@pytest.mark.django_db(transaction=True)  # no test transaction: its savepoints would count
def test_registration_under_a_known_host_query_budget(
    api: Api, host_key: Keypair, settings: Any, django_assert_num_queries: Any
) -> None:
    # The registration hot path (agentauth.fastregister; benchmarks/load.py's register phase):
    # a known, recently seen host registers an autonomous agent its policy grants at once.
    # Pinned exactly, so an extra query or savepoint shows up here: SQLite's BEGIN, the jti
    # record, the host, agent, grant, audit row, COMMIT (PostgreSQL folds the jti record into
    # the host's read).
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]
    body = {"name": "x", "mode": "autonomous", "capabilities": ["check_balance"]}
    for _ in range(2):  # the host is created, then its last use is recorded
        assert api.register(host_key, body=body).body["status"] == "active"
    from django.db import connection

    with django_assert_num_queries(6 if connection.vendor == "postgresql" else 7):
        reply = api.register(host_key, body=body)
    assert reply.body["status"] == "active", reply.body
