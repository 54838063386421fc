"""Management commands: ``agentauth_approve`` and ``agentauth_create_host`` (§2.8).

Both are thin shells over ``approvals.decide`` and ``hosts.create_host``; these tests pin their
command-line contract (arguments, JSON output, ``CommandError`` on every operator mistake) and
that what they create behaves on the protocol endpoints like anything else.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from agentauth.models import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
)
from agentauth.testing import Keypair, host_token, make_agent, make_host
from tests.conftest import Api

pytestmark = pytest.mark.django_db


def run(command: str, *args: str) -> dict[str, Any]:
    out = StringIO()
    call_command(command, *args, stdout=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def register_pending(api: Api, host_key: Keypair, capabilities: list[Any]) -> str:
    reply = api.register(host_key, body={"name": "Shell agent", "capabilities": capabilities})
    assert reply.status == 200 and reply.body["status"] == "pending", reply.body
    agent_id: str = reply.body["agent_id"]
    return agent_id


def grant_of(agent_id: str, capability: str) -> CapabilityGrant:
    return CapabilityGrant.objects.get(agent_id=agent_id, capability=capability)


# --- agentauth_approve -----------------------------------------------------------------------


def test_approve_everything_pending(api: Api, host_key: Keypair, user: Any) -> None:
    # spec: §7.1, §2.7, §2.3 — the approver becomes the linked user of a new host.
    agent_id = register_pending(api, host_key, ["check_balance", "transfer"])
    summary = run("agentauth_approve", agent_id, "--user", "alice")
    assert summary == {
        "agent_id": agent_id,
        "status": "active",
        "approved": ["check_balance", "transfer"],
        "denied": [],
    }
    agent = Agent.objects.select_related("host").get(pk=agent_id)
    assert agent.status == AgentStatus.ACTIVE and agent.user_id == user.pk
    assert agent.activated_at is not None and agent.expires_at is not None
    assert agent.host.status == HostStatus.ACTIVE and agent.host.user_id == user.pk
    for name in ("check_balance", "transfer"):
        g = grant_of(agent_id, name)
        assert g.status == GrantStatus.ACTIVE and g.granted_by_id == user.pk
    request = ApprovalRequest.objects.get(agent_id=agent_id)
    assert request.status == ApprovalStatus.APPROVED and request.user_id == user.pk
    event = AuditEvent.objects.get(kind="approval.decided", agent_id=agent_id)
    # The operator path is recorded as such (spec §8.11 does not reach a shell).
    assert event.actor_type == "operator" and event.user_id == str(user.pk)
    assert event.data["approved"] == ["check_balance", "transfer"]
    # The protocol sees it too.
    status = api.get("/agent/status", token=host_token(host_key), agent_id=agent_id).body
    assert status["status"] == "active" and status["user_id"] == str(user.pk)


def test_approve_a_subset_denies_the_rest(api: Api, host_key: Keypair, user: Any) -> None:
    # spec: §5.3, §3.3, §7.1 — per-capability deny, agent active.
    agent_id = register_pending(api, host_key, ["check_balance", "transfer", "read_only_note"])
    summary = run(
        "agentauth_approve",
        agent_id,
        "--user",
        "alice",
        "--capability",
        "check_balance",
        "--capability",
        "read_only_note",
        "--reason",
        "No transfers",
    )
    assert summary["status"] == "active"
    assert summary["approved"] == ["check_balance", "read_only_note"]
    assert summary["denied"] == ["transfer"]
    denied = grant_of(agent_id, "transfer")
    assert denied.status == GrantStatus.DENIED
    assert denied.denied_by_id == user.pk and denied.granted_by_id is None
    assert denied.reason == "No transfers"
    assert grant_of(agent_id, "check_balance").status == GrantStatus.ACTIVE
    body = api.get("/agent/status", token=host_token(host_key), agent_id=agent_id).body
    assert {"capability": "transfer", "status": "denied", "reason": "No transfers"} in body[
        "agent_capability_grants"
    ]


def test_approve_with_constraints_sets_the_effective_constraints(
    api: Api, host_key: Keypair, user: Any
) -> None:
    # spec: §5.3, §2.13 — the approver's constraints replace the requested ones.
    agent_id = register_pending(
        api,
        host_key,
        [
            {"name": "transfer", "constraints": {"amount": {"max": 1000}}},
            {"name": "check_balance", "constraints": {"account_id": "acc_1"}},
        ],
    )
    constraints = {"transfer": {"amount": {"max": 100}, "currency": {"in": ["USD"]}}}
    run("agentauth_approve", agent_id, "--user", "alice", "--constraints", json.dumps(constraints))
    assert grant_of(agent_id, "transfer").constraints == constraints["transfer"]
    # A capability the option does not name keeps what the agent asked for.
    assert grant_of(agent_id, "check_balance").constraints == {"account_id": "acc_1"}
    body = api.get("/agent/status", token=host_token(host_key), agent_id=agent_id).body
    wire = {g["capability"]: g for g in body["agent_capability_grants"]}
    assert wire["transfer"]["constraints"] == constraints["transfer"]


def test_deny_rejects_the_agent_and_a_new_host(api: Api, host_key: Keypair, user: Any) -> None:
    # spec: §7.1, §2.3
    agent_id = register_pending(api, host_key, ["check_balance"])
    summary = run("agentauth_approve", agent_id, "--user", "alice", "--deny")
    assert summary == {
        "agent_id": agent_id,
        "status": "rejected",
        "approved": [],
        "denied": ["check_balance"],
    }
    agent = Agent.objects.select_related("host").get(pk=agent_id)
    assert agent.status == AgentStatus.REJECTED
    assert agent.host.status == HostStatus.REJECTED and agent.host.user_id is None
    assert grant_of(agent_id, "check_balance").status == GrantStatus.DENIED
    assert ApprovalRequest.objects.get(agent_id=agent_id).status == ApprovalStatus.DENIED
    event = AuditEvent.objects.get(kind="approval.decided", agent_id=agent_id)
    assert event.data["rejected"] is True


def test_unknown_user(api: Api, host_key: Keypair, user: Any) -> None:
    agent_id = register_pending(api, host_key, ["check_balance"])
    with pytest.raises(CommandError, match="No user 'mallory'"):
        call_command("agentauth_approve", agent_id, "--user", "mallory", stdout=StringIO())
    assert Agent.objects.get(pk=agent_id).status == AgentStatus.PENDING


def test_unknown_agent(user: Any) -> None:
    with pytest.raises(CommandError, match="No agent 'agt_missing'"):
        call_command("agentauth_approve", "agt_missing", "--user", "alice", stdout=StringIO())


def test_user_is_required(api: Api, host_key: Keypair) -> None:
    agent_id = register_pending(api, host_key, ["check_balance"])
    with pytest.raises(CommandError, match="--user"):
        call_command("agentauth_approve", agent_id, stdout=StringIO())


def test_capability_that_is_not_pending(api: Api, host_key: Keypair, user: Any) -> None:
    agent_id = register_pending(api, host_key, ["check_balance"])
    with pytest.raises(CommandError, match="Not pending for this agent: transfer"):
        call_command(
            "agentauth_approve",
            agent_id,
            "--user",
            "alice",
            "--capability",
            "transfer",
            stdout=StringIO(),
        )
    # Nothing was decided.
    assert Agent.objects.get(pk=agent_id).status == AgentStatus.PENDING
    assert grant_of(agent_id, "check_balance").status == GrantStatus.PENDING
    assert not AuditEvent.objects.filter(kind="approval.decided").exists()


def test_active_agent_with_nothing_pending(user: Any) -> None:
    host, _ = make_host(user=user)
    agent, _ = make_agent(host, grants=["check_balance"])
    with pytest.raises(CommandError, match="no pending capability requests"):
        call_command("agentauth_approve", agent.pk, "--user", "alice", stdout=StringIO())


@pytest.mark.parametrize("status", [AgentStatus.REVOKED, AgentStatus.REJECTED, AgentStatus.EXPIRED])
def test_agent_in_a_state_with_nothing_to_approve(user: Any, status: str) -> None:
    # spec: §2.3 — terminal (and expired) agents cannot be approved back to life.
    host, _ = make_host(user=user)
    agent, _ = make_agent(host, status=status)
    with pytest.raises(CommandError, match="nothing to approve"):
        call_command("agentauth_approve", agent.pk, "--user", "alice", stdout=StringIO())
    assert Agent.objects.get(pk=agent.pk).status == status


def test_operator_decides_only_in_the_name_of_the_person_it_acts_for(
    api: Api, user: Any, staff_user: Any
) -> None:
    # spec §2.2.1 — a delegated agent of a host linked to alice is decided in alice's name, not
    # a staff member's; the host stays alice's.
    host, key = make_host(user=user)
    reply = api.register(key, body={"name": "x", "capabilities": ["transfer"]})
    agent_id = reply.body["agent_id"]
    assert reply.body["status"] == "active"
    with pytest.raises(CommandError, match="acts for another user"):
        call_command("agentauth_approve", agent_id, "--user", "sam", stdout=StringIO())
    assert grant_of(agent_id, "transfer").status == GrantStatus.PENDING
    summary = run("agentauth_approve", agent_id, "--user", "alice")
    assert summary["approved"] == ["transfer"]
    assert Host.objects.get(pk=host.pk).user_id == user.pk
    assert grant_of(agent_id, "transfer").granted_by_id == user.pk


def test_bad_constraints_json(api: Api, host_key: Keypair, user: Any) -> None:
    agent_id = register_pending(api, host_key, ["transfer"])
    with pytest.raises(CommandError, match="--constraints is not JSON"):
        call_command(
            "agentauth_approve",
            agent_id,
            "--user",
            "alice",
            "--constraints",
            "{transfer: 1",
            stdout=StringIO(),
        )
    assert Agent.objects.get(pk=agent_id).status == AgentStatus.PENDING


def test_constraints_must_be_an_object(api: Api, host_key: Keypair, user: Any) -> None:
    agent_id = register_pending(api, host_key, ["transfer"])
    with pytest.raises(CommandError):
        call_command(
            "agentauth_approve",
            agent_id,
            "--user",
            "alice",
            "--constraints",
            '["transfer"]',
            stdout=StringIO(),
        )


def test_constraints_with_unknown_operators_are_refused(
    api: Api, host_key: Keypair, user: Any
) -> None:
    # spec: §2.13 — approver constraints are validated like an agent's.
    agent_id = register_pending(api, host_key, ["transfer"])
    with pytest.raises(CommandError, match="regex"):
        call_command(
            "agentauth_approve",
            agent_id,
            "--user",
            "alice",
            "--constraints",
            '{"transfer": {"amount": {"regex": ".*"}}}',
            stdout=StringIO(),
        )
    assert grant_of(agent_id, "transfer").status == GrantStatus.PENDING
    assert Agent.objects.get(pk=agent_id).status == AgentStatus.PENDING


@pytest.mark.parametrize(
    "approver, effective",
    [
        # A looser bound than requested cannot widen the grant (§2.13, §5.3).
        ({"amount": {"max": 5000}}, {"amount": {"max": 1000}}),
        # An empty object is not "unconstrained": the request still applies.
        ({}, {"amount": {"max": 1000}}),
        ({"amount": {"min": 1}}, {"amount": {"max": 1000, "min": 1}}),
    ],
)
def test_approver_constraints_never_widen_the_request(
    api: Api, host_key: Keypair, user: Any, approver: Any, effective: Any
) -> None:
    # spec: §2.13, §5.3
    agent_id = register_pending(
        api, host_key, [{"name": "transfer", "constraints": {"amount": {"max": 1000}}}]
    )
    constraints = json.dumps({"transfer": approver})
    run("agentauth_approve", agent_id, "--user", "alice", "--constraints", constraints)
    assert grant_of(agent_id, "transfer").constraints == effective


def test_contradictory_constraints_are_refused(api: Api, host_key: Keypair, user: Any) -> None:
    # spec: §2.13 — an intersection that admits no value is not silently granted.
    agent_id = register_pending(
        api, host_key, [{"name": "transfer", "constraints": {"amount": {"max": 10}}}]
    )
    with pytest.raises(CommandError):
        call_command(
            "agentauth_approve",
            agent_id,
            "--user",
            "alice",
            "--constraints",
            '{"transfer": {"amount": {"min": 100}}}',
            stdout=StringIO(),
        )
    assert grant_of(agent_id, "transfer").status == GrantStatus.PENDING


# --- agentauth_create_host -------------------------------------------------------------------


def test_create_host_from_jwk() -> None:
    # spec: §2.7, §5.3 (pre-registration), §4.2
    key = Keypair.generate()
    result = run("agentauth_create_host", "--jwk", json.dumps(key.public_jwk), "--name", "Box")
    assert set(result) == {"host_id", "thumbprint", "status"}
    assert result["thumbprint"] == key.thumbprint
    assert result["status"] == "active" and result["host_id"].startswith("hst_")
    host = Host.objects.get(pk=result["host_id"])
    assert host.name == "Box" and host.status == HostStatus.ACTIVE
    assert host.activated_at is not None and host.user_id is None
    assert host.public_key == key.public_jwk and host.default_capabilities == []
    event = AuditEvent.objects.get(kind="host.created", host_id=host.pk)
    assert event.actor_type == "staff" and event.data == {"preregistered": True}


def test_create_host_from_jwk_file(tmp_path: Path) -> None:
    key = Keypair.generate()
    path = tmp_path / "host.jwk"
    path.write_text(json.dumps(key.public_jwk))
    result = run("agentauth_create_host", "--jwk-file", str(path))
    assert result["thumbprint"] == key.thumbprint
    assert Host.objects.get(pk=result["host_id"]).thumbprint == key.thumbprint


def test_create_host_canonicalises_the_key() -> None:
    # spec: §4.2 — optional JWK members do not change the identity.
    key = Keypair.generate()
    jwk = {**key.public_jwk, "alg": "EdDSA", "use": "sig", "kid": "laptop"}
    result = run("agentauth_create_host", "--jwk", json.dumps(jwk))
    assert result["thumbprint"] == key.thumbprint
    assert Host.objects.get(pk=result["host_id"]).public_key == key.public_jwk


def test_create_host_linked_to_a_user(user: Any) -> None:
    # spec: §2.7 — server-side linking.
    key = Keypair.generate()
    result = run("agentauth_create_host", "--jwk", json.dumps(key.public_jwk), "--user", "alice")
    host = Host.objects.get(pk=result["host_id"])
    assert host.user_id == user.pk and host.status == HostStatus.ACTIVE
    event = AuditEvent.objects.get(kind="host.linked", host_id=host.pk)
    assert event.user_id == str(user.pk) and event.data["claimed"] == []


def test_create_host_stores_default_capabilities() -> None:
    # spec: §2.7, §2.8
    key = Keypair.generate()
    result = run(
        "agentauth_create_host",
        "--jwk",
        json.dumps(key.public_jwk),
        "--default-capability",
        "check_balance",
        "--default-capability",
        "read_only_note",
        "--default-capability",
        "check_balance",
    )
    host = Host.objects.get(pk=result["host_id"])
    assert host.default_capabilities == ["check_balance", "read_only_note"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--default-capability", "no_such_capability"], "capability names don't exist"),
        (["--user", "mallory"], "No user 'mallory'"),
    ],
)
def test_create_host_refuses_bad_options(args: list[str], message: str) -> None:
    key = Keypair.generate()
    with pytest.raises(CommandError, match=message):
        call_command(
            "agentauth_create_host", "--jwk", json.dumps(key.public_jwk), *args, stdout=StringIO()
        )
    assert not Host.objects.exists()


@pytest.mark.parametrize(
    "jwk, message",
    [
        ('{"kty": "RSA", "n": "AQAB", "e": "AQAB"}', "not allowed"),
        ('{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}', "not allowed"),
        ('{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}', "32 bytes"),
        ("not json", "The JWK is not JSON"),
        ('["OKP"]', "must be a JWK object"),
    ],
)
def test_create_host_refuses_bad_keys(jwk: str, message: str) -> None:
    # spec: §5.3, §4.1, §5.13
    with pytest.raises(CommandError, match=message):
        call_command("agentauth_create_host", "--jwk", jwk, stdout=StringIO())
    assert not Host.objects.exists()


def test_create_host_refuses_private_key_material() -> None:
    # spec: §4.1 — a private JWK pasted by mistake is never stored.
    key = Keypair.generate()
    with pytest.raises(CommandError, match="private key material"):
        call_command(
            "agentauth_create_host", "--jwk", json.dumps(key.to_private_jwk()), stdout=StringIO()
        )
    assert not Host.objects.exists()


def test_create_host_refuses_a_duplicate_key() -> None:
    key = Keypair.generate()
    first = run("agentauth_create_host", "--jwk", json.dumps(key.public_jwk))
    with pytest.raises(CommandError, match="already exists"):
        call_command(
            "agentauth_create_host", "--jwk", json.dumps(key.public_jwk), stdout=StringIO()
        )
    assert list(Host.objects.values_list("pk", flat=True)) == [first["host_id"]]


def test_create_host_needs_exactly_one_key_source(tmp_path: Path) -> None:
    key = Keypair.generate()
    path = tmp_path / "host.jwk"
    path.write_text(json.dumps(key.public_jwk))
    with pytest.raises(CommandError):
        call_command("agentauth_create_host", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command(
            "agentauth_create_host",
            "--jwk",
            json.dumps(key.public_jwk),
            "--jwk-file",
            str(path),
            stdout=StringIO(),
        )
    assert not Host.objects.exists()


def test_create_host_missing_jwk_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError):
        call_command(
            "agentauth_create_host", "--jwk-file", str(tmp_path / "absent.jwk"), stdout=StringIO()
        )


def test_created_host_auto_approves_its_default_capabilities(api: Api, user: Any) -> None:
    # spec: §1.5, §8.10, §5.3, §2.7 — a pre-registered, linked host: its delegated agents get the
    # host's defaults whose approval_strength is "none" at once; anything stronger waits.
    key = Keypair.generate()
    result = run(
        "agentauth_create_host",
        "--jwk",
        json.dumps(key.public_jwk),
        "--user",
        "alice",
        "--default-capability",
        "check_balance",
        "--default-capability",
        "transfer",
    )
    reply = api.register(key, body={"name": "Balance bot", "capabilities": ["check_balance"]})
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["host_id"] == result["host_id"]
    assert body["status"] == "active" and "approval" not in body
    grant = body["agent_capability_grants"][0]
    assert grant["capability"] == "check_balance" and grant["status"] == "active"
    assert grant_of(body["agent_id"], "check_balance").granted_by_id == user.pk
    status = api.get("/agent/status", token=host_token(key), agent_id=body["agent_id"]).body
    assert status["user_id"] == str(user.pk)
    assert status["agent_capability_grants"][0]["granted_by"] == str(user.pk)

    # transfer is a default too, but needs WebAuthn: it is never auto-approved (§8.10).
    reply = api.register(key, body={"name": "Payer", "capabilities": ["transfer"]})
    assert reply.body["status"] == "active"
    assert reply.body["agent_capability_grants"] == [
        {"capability": "transfer", "status": "pending"}
    ]
    assert reply.body["approval"]["method"] == "device_authorization"


def test_created_host_without_a_user_does_not_auto_approve(api: Api) -> None:
    # spec: §2.8, §1.5 — defaults apply only once a person owns the host.
    key = Keypair.generate()
    run(
        "agentauth_create_host",
        "--jwk",
        json.dumps(key.public_jwk),
        "--default-capability",
        "check_balance",
    )
    reply = api.register(key, body={"name": "Orphan", "capabilities": ["check_balance"]})
    assert reply.body["status"] == "pending"
    assert reply.body["agent_capability_grants"] == [
        {"capability": "check_balance", "status": "pending"}
    ]
    assert "approval" in reply.body
