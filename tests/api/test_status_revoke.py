"""GET /agent/status, POST /agent/revoke, POST /host/revoke (spec §5.5, §5.7, §5.10)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from agentauth.models import Agent, AgentStatus, AuditEvent, Host, HostStatus
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from agentauth.tokens import verify_agent_jwt
from tests.conftest import ISSUER, Api, assert_error, operator_decides

pytestmark = pytest.mark.django_db


def test_status_of_a_pending_registration_from_a_pending_host(api: Api, host_key: Keypair) -> None:
    # spec: §5.3, §4.5.1 step 8
    reg = api.register(host_key, body={"name": "x", "capabilities": ["check_balance"]})
    reply = api.get("/agent/status", token=host_token(host_key), agent_id=reg.body["agent_id"])
    assert reply.status == 200
    body = reply.body
    assert body["status"] == "pending" and body["host_id"] == reg.body["host_id"]
    assert body["agent_capability_grants"] == [{"capability": "check_balance", "status": "pending"}]
    assert body["created_at"].endswith("Z")
    assert "user_id" not in body and "activated_at" not in body


def test_status_after_approval_has_full_grants(api: Api, host_key: Keypair, user: Any) -> None:
    # spec: §5.5, §3.3, §5.3
    reg = api.register(host_key, body={"name": "x", "capabilities": ["check_balance"]})
    operator_decides(Agent.objects.get(pk=reg.body["agent_id"]), user)
    body = api.get("/agent/status", token=host_token(host_key), agent_id=reg.body["agent_id"]).body
    assert body["status"] == "active"
    assert body["user_id"] == str(user.pk)
    grant = body["agent_capability_grants"][0]
    assert grant["status"] == "active" and grant["granted_by"] == str(user.pk)
    assert grant["description"] and grant["input"]["type"] == "object"
    for field in ("activated_at", "expires_at", "created_at"):
        assert body[field].endswith("Z")


@pytest.mark.parametrize("params", [{}, {"agent_id": ""}, {"agent_id": "x", "extra": "1"}])
def test_status_needs_exactly_agent_id(api: Api, params: dict[str, str]) -> None:
    # spec: §5.5
    _, key = make_host()
    assert_error(api.get("/agent/status", token=host_token(key), **params), 400, "invalid_request")


def test_status_unknown_agent(api: Api) -> None:
    # spec: §5.5
    _, key = make_host()
    assert_error(
        api.get("/agent/status", token=host_token(key), agent_id="agt_nope"), 404, "agent_not_found"
    )


def test_status_of_another_hosts_agent(api: Api) -> None:
    # spec: §5.5
    host_a, _ = make_host()
    agent, _ = make_agent(host_a)
    _, key_b = make_host()
    assert_error(
        api.get("/agent/status", token=host_token(key_b), agent_id=agent.pk), 403, "unauthorized"
    )


def test_status_applies_clocks_without_extending_them(api: Api, settings: Any) -> None:
    # spec: §5.5, §2.4
    settings.AGENTAUTH_SESSION_TTL = 60
    host, key = make_host()
    agent, _ = make_agent(host)
    with time_machine.travel(timezone.now() + timedelta(seconds=30)):
        assert (
            api.get("/agent/status", token=host_token(key), agent_id=agent.pk).body["status"]
            == "active"
        )
    agent.refresh_from_db()
    assert agent.last_used_at is None
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        assert (
            api.get("/agent/status", token=host_token(key), agent_id=agent.pk).body["status"]
            == "expired"
        )


def test_revoke_agent(api: Api) -> None:
    # spec: §5.13, §5.7, §2.6
    host, key = make_host()
    agent, agent_key = make_agent(host, grants=["check_balance"])
    reply = api.post("/agent/revoke", {"agent_id": agent.pk}, token=host_token(key))
    assert reply.status == 200 and reply.body == {"agent_id": agent.pk, "status": "revoked"}
    agent.refresh_from_db()
    assert agent.status == AgentStatus.REVOKED and agent.revoked_at is not None
    # The agent's own JWTs now fail with agent_revoked (spec §5.7, §5.10).
    with pytest.raises(Exception) as info:
        verify_agent_jwt(agent_token(agent, agent_key), audiences={ISSUER})
    assert getattr(info.value, "code", None) == "agent_revoked"
    assert AuditEvent.objects.filter(
        kind="agent.revoked", agent_id=agent.pk, actor_type="host"
    ).exists()


def test_revoke_is_idempotent(api: Api) -> None:
    # §5.7
    host, key = make_host()
    agent, _ = make_agent(host)
    api.post("/agent/revoke", {"agent_id": agent.pk}, token=host_token(key))
    reply = api.post("/agent/revoke", {"agent_id": agent.pk}, token=host_token(key))
    assert reply.status == 200 and reply.body["status"] == "revoked"
    assert AuditEvent.objects.filter(kind="agent.revoked").count() == 1


def test_revoke_another_hosts_agent(api: Api) -> None:
    # spec: §5.13 ("host revoking an agent it didn't create")
    host_a, _ = make_host()
    agent, _ = make_agent(host_a)
    _, key_b = make_host()
    assert_error(
        api.post("/agent/revoke", {"agent_id": agent.pk}, token=host_token(key_b)),
        403,
        "unauthorized",
    )
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


@pytest.mark.parametrize(
    "body", [{}, {"agent_id": 5}, {"agent_id": "x", "why": "no"}, ["agent_id"]]
)
def test_revoke_body_validation(api: Api, body: Any) -> None:
    _, key = make_host()
    assert_error(api.post("/agent/revoke", body, token=host_token(key)), 400, "invalid_request")


def test_revoke_unknown_agent(api: Api) -> None:
    # spec: §5.7
    _, key = make_host()
    assert_error(
        api.post("/agent/revoke", {"agent_id": "agt_x"}, token=host_token(key)),
        404,
        "agent_not_found",
    )


def test_host_revoke_cascades(api: Api) -> None:
    # spec: §5.10, §8.5, §2.6
    host, key = make_host()
    a1, k1 = make_agent(host)
    _a2, _ = make_agent(host, status=AgentStatus.PENDING)
    make_agent(host, status=AgentStatus.REVOKED)  # already terminal: not counted (§5.7)
    other_host, _ = make_host()
    bystander, _ = make_agent(other_host)
    reply = api.post("/host/revoke", token=host_token(key))
    assert reply.status == 200
    assert reply.body == {"host_id": host.pk, "status": "revoked", "agents_revoked": 2}
    assert set(Agent.objects.filter(host=host).values_list("status", flat=True)) == {"revoked"}
    bystander.refresh_from_db()
    assert bystander.status == AgentStatus.ACTIVE
    # spec: §5.10 — the host's and its agents' JWTs are refused from now on.
    assert_error(api.post("/host/revoke", token=host_token(key)), 403, "host_revoked")
    with pytest.raises(Exception) as info:
        verify_agent_jwt(agent_token(a1, k1), audiences={ISSUER})
    assert getattr(info.value, "code", None) == "agent_revoked"
    event = AuditEvent.objects.get(kind="host.revoked")
    assert event.data["agents_revoked"] == 2


def test_host_revoke_refuses_a_body(api: Api) -> None:
    _, key = make_host()
    assert_error(
        api.post("/host/revoke", {"host_id": "hst_other"}, token=host_token(key)),
        400,
        "invalid_request",
    )
    assert Host.objects.get().status == HostStatus.ACTIVE


def test_pending_host_can_revoke_itself(api: Api, host_key: Keypair) -> None:
    # §4.5.1 step 8, §5.7
    api.register(host_key)
    reply = api.post("/host/revoke", token=host_token(host_key))
    assert reply.status == 200 and reply.body["agents_revoked"] == 1


def test_polling_faster_than_the_interval_is_slowed_down(
    api: Api, host_key: Keypair, settings: Any
) -> None:
    # §7.1, §12.1; RFC 8628 §3.5 slow_down. Real time, not time travel: the pacing key
    # expires in the cache itself (Redis keeps its own clock).
    import time

    from django.core.cache import cache

    cache.clear()
    # An interval of 4 s leaves 3 s between the two polls before the second stops being "fast",
    # so a loaded CI machine cannot turn the 429 into a 200.
    settings.AGENTAUTH_APPROVAL_INTERVAL = 4
    reg = api.register(host_key, body={"name": "x"})
    agent_id = reg.body["agent_id"]
    assert api.get("/agent/status", token=host_token(host_key), agent_id=agent_id).status == 200
    fast = api.get("/agent/status", token=host_token(host_key), agent_id=agent_id)
    assert_error(fast, 429, "slow_down")
    assert fast.headers["Retry-After"] == "4"
    time.sleep(3.1)  # interval minus the one second of slack
    polled = api.get("/agent/status", token=host_token(host_key), agent_id=agent_id)
    assert polled.status == 200


def test_no_pacing_once_nothing_is_pending(api: Api) -> None:
    host, key = make_host()
    agent, _ = make_agent(host)
    for _ in range(3):
        assert api.get("/agent/status", token=host_token(key), agent_id=agent.pk).status == 200


def test_a_grant_past_its_expiry_is_not_shown_active(api: Api) -> None:
    host, key = make_host()
    agent, _ = make_agent(host, grants=["check_balance"])
    from agentauth.models import CapabilityGrant

    CapabilityGrant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    body = api.get("/agent/status", token=host_token(key), agent_id=agent.pk).body
    assert body["agent_capability_grants"] == []
