"""POST /agent/introspect (spec §5.12, §4.5, §4.6, §2.4)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from agentauth import agents
from agentauth.models import Agent, AgentMode, AgentStatus, CapabilityGrant, HostStatus
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from tests.conftest import INTROSPECTION_SECRET, ISSUER, Api, assert_error

pytestmark = pytest.mark.django_db

EXECUTE = ISSUER + "/capability/execute"


@pytest.fixture
def agent(user: Any) -> Any:
    host, _ = make_host(user=user)
    return make_agent(host, grants=["check_balance", "read_only_note"])


def introspect(api: Api, token: Any, **kw: Any) -> Any:
    return api.post("/agent/introspect", {"token": token}, token=INTROSPECTION_SECRET, **kw)


# --- jti: read-only ------------------------------------------------------------------------------


def test_introspected_token_still_executes(api: Api, agent: Any) -> None:
    # §4.6 — introspection does not record the jti, so the token is still unspent.
    a, key = agent
    token = agent_token(a, key)  # aud = issuer, which the default location accepts (§4.3)
    assert introspect(api, token).body["active"] is True
    body = {"capability": "check_balance", "arguments": {"account_id": "acc_1"}}
    executed = api.post("/capability/execute", body, token=token)
    assert executed.status == 200 and executed.body["data"]["account_id"] == "acc_1"
    # ...and execute did spend it.
    assert_error(api.post("/capability/execute", body, token=token), 401, "invalid_jwt")


def test_spent_token_still_introspects(api: Api, agent: Any) -> None:
    # §4.6 — read-only: resource servers run their own replay checks.
    a, key = agent
    token = agent_token(a, key, audience=EXECUTE)
    body = {"capability": "check_balance", "arguments": {"account_id": "acc_1"}}
    assert api.post("/capability/execute", body, token=token).status == 200
    assert introspect(api, token).body["active"] is True


def test_introspection_does_not_slide_the_session(api: Api, agent: Any) -> None:
    # §2.4 — only the agent's own requests extend its session.
    a, key = agent
    assert introspect(api, agent_token(a, key)).body["active"] is True
    a.refresh_from_db()
    assert a.last_used_at is None


# --- inactive means exactly {"active": false} ----------------------------------------------------


def forged_tokens(agent: Agent, key: Keypair) -> list[str]:
    now = int(time.time())
    return [
        "a.b.c",
        agent_token(agent, key, extra_claims={"iat": now - 120, "exp": now - 60}),  # expired
        agent_token(agent, key, extra_claims={"nbf": now + 600}),  # not yet valid
        agent_token(agent, key, extra_claims={"iat": now, "exp": now + 3600}),  # too long
        agent_token(agent, key, extra_claims={"jti": None}),
        agent_token(agent, key, extra_claims={"sub": "agt_nobody"}),
        agent_token(agent, key, extra_claims={"capabilities": "check_balance"}),
        agent_token(agent, key, extra_claims={"iss": Keypair.generate().thumbprint}),
        agent_token(agent, key, audience=["https://a.example", ISSUER]),
        agent_token(agent, Keypair.generate()),  # bad signature
    ]


def test_every_invalid_token_is_just_inactive(api: Api, agent: Any) -> None:
    # spec: §5.12 — no reason, no identifiers.
    a, key = agent
    for token in forged_tokens(a, key):
        reply = introspect(api, token)
        assert reply.status == 200 and reply.body == {"active": False}, token


@pytest.mark.parametrize(
    "change",
    [
        {"agent": {"status": AgentStatus.PENDING}},
        {"agent": {"status": AgentStatus.EXPIRED}},
        {"agent": {"status": AgentStatus.REJECTED}},
        {"agent": {"status": AgentStatus.CLAIMED}},
        {"agent": {"expires_at": timezone.now() - timedelta(seconds=1)}},  # session lapsed
        {"agent": {"absolute_expires_at": timezone.now() - timedelta(seconds=1)}},
        {"host": {"status": HostStatus.REVOKED}},
        {"host": {"status": HostStatus.PENDING}},
    ],
)
def test_inactive_agents_and_hosts(api: Api, agent: Any, change: dict[str, Any]) -> None:
    # spec: §5.12 — active only if the agent (and its host) are active.
    a, key = agent
    if "agent" in change:
        Agent.objects.filter(pk=a.pk).update(**change["agent"])
    else:
        type(a.host).objects.filter(pk=a.host_id).update(**change["host"])
    assert introspect(api, agent_token(a, key)).body == {"active": False}


def test_revoked_by_the_lifecycle(api: Api, agent: Any) -> None:
    a, key = agent
    token = agent_token(a, key)
    agents.revoke_agent(a, actor_type="host")
    assert introspect(api, token).body == {"active": False}


# --- the active body -----------------------------------------------------------------------------


def test_only_effective_grants_are_listed(api: Api, agent: Any) -> None:
    # §5.12 — pending, denied, revoked and lapsed grants are not shown.
    a, key = agent
    CapabilityGrant.objects.create(agent=a, capability="transfer", status="pending")
    CapabilityGrant.objects.create(agent=a, capability="close_account", status="denied")
    CapabilityGrant.objects.create(agent=a, capability="count_up", status="revoked")
    CapabilityGrant.objects.filter(capability="read_only_note").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    body = introspect(api, agent_token(a, key)).body
    assert body["agent_capability_grants"] == [{"capability": "check_balance", "status": "active"}]


def test_claim_narrows_but_never_adds(api: Api, agent: Any) -> None:
    # spec: §5.12 — the JWT's capabilities claim filters the grants; it grants nothing.
    a, key = agent
    token = agent_token(a, key, capabilities=["read_only_note", "transfer"])
    body = introspect(api, token).body
    assert body["agent_capability_grants"] == [{"capability": "read_only_note", "status": "active"}]
    # Present but empty (spec §4.3: "if present, ... not in this list") admits nothing.
    empty = agent_token(a, key, extra_claims={"capabilities": []})
    assert introspect(api, empty).body["agent_capability_grants"] == []


def test_autonomous_agent_has_no_user(api: Api) -> None:
    # spec: §5.12 — user_id only when the host is linked.
    host, _ = make_host()
    a, key = make_agent(host, mode=AgentMode.AUTONOMOUS, grants=["check_balance"])
    body = introspect(api, agent_token(a, key)).body
    assert body["active"] is True and body["mode"] == "autonomous" and "user_id" not in body
    assert body["agent_id"] == a.pk and body["host_id"] == host.pk


def test_expires_at_is_the_session_expiry(api: Api, agent: Any) -> None:
    # spec: §5.12 — ISO 8601, the agent's current session end.
    a, key = agent
    body = introspect(api, agent_token(a, key)).body
    a.refresh_from_db()
    assert a.expires_at is not None
    assert body["expires_at"] == a.expires_at.isoformat().replace("+00:00", "Z")


def test_capability_location_audience_is_accepted(api: Api, agent: Any) -> None:
    # §5.12 — a resource server introspects tokens made for its location; a location
    # that is no capability's is not accepted.
    a, key = agent
    good = agent_token(a, key, audience="http://testserver/support/escalate")
    bad = agent_token(a, key, audience="http://testserver/support/other")
    assert introspect(api, good).body["active"] is True
    assert introspect(api, bad).body == {"active": False}


# --- the request ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [{"token": ""}, {"token": 5}, {"token": ["x"]}, {"token": "x", "hint": "agent"}]
)
def test_malformed_requests(api: Api, body: Any) -> None:
    # spec: §5.12
    reply = api.post("/agent/introspect", body, token=INTROSPECTION_SECRET)
    assert_error(reply, 400, "invalid_request")


def test_form_encoding_is_refused(client: Any) -> None:
    # spec: §5.12 — JSON body, unlike RFC 7662.
    response = client.post(
        "/api/auth/agent/introspect",
        data="token=abc",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Bearer {INTROSPECTION_SECRET}",
    )
    assert response.status_code == 415 and response.json()["error"] == "invalid_request"


def test_secret_is_checked_before_the_token(agent: Any, client: Any, settings: Any) -> None:
    # spec: §5.12 — without the secret nothing about the token is revealed, not even "inactive".
    settings.AGENTAUTH_INTROSPECTION_TOKENS = ["first", "second"]
    a, key = agent

    def call(secret: str | None, token: str) -> Any:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
        return client.post(
            "/api/auth/agent/introspect",
            data={"token": token},
            content_type="application/json",
            **headers,
        )

    refused = call(None, "garbage")
    assert refused.status_code == 401 and refused.json()["error"] == "authentication_required"
    assert refused["WWW-Authenticate"].startswith("AgentAuth discovery=")
    assert call("second", agent_token(a, key)).json()["active"] is True  # any listed secret
    assert call("first", "garbage").json() == {"active": False}
    assert call("firs", "garbage").status_code == 401


def test_rate_limit_is_per_client_and_says_when(client: Any, settings: Any) -> None:
    # spec: §5.12
    cache.clear()
    settings.AGENTAUTH_RATE_LIMITS = {"introspect": "1/minute"}

    def call(ip: str) -> Any:
        return client.post(
            "/api/auth/agent/introspect",
            data={"token": "x"},
            content_type="application/json",
            REMOTE_ADDR=ip,
            HTTP_AUTHORIZATION=f"Bearer {INTROSPECTION_SECRET}",
        )

    try:
        assert call("10.0.0.1").status_code == 200
        limited = call("10.0.0.1")
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert 1 <= int(limited["Retry-After"]) <= 60
        assert call("10.0.0.2").status_code == 200  # another client has its own budget
    finally:
        cache.clear()


# --- who may call, and what an anonymous caller learns -------------------------------------------


def test_without_secrets_the_endpoint_is_closed_outside_debug(
    api: Api, agent: Any, settings: Any
) -> None:
    # spec §5.12: introspection is for resource servers; unconfigured means closed, not open.
    settings.AGENTAUTH_INTROSPECTION_TOKENS = []
    a, key = agent
    reply = api.post("/agent/introspect", {"token": agent_token(a, key)})
    assert_error(reply, 401, "authentication_required")


def test_debug_without_secrets_never_discloses_the_user(
    api: Api, agent: Any, settings: Any
) -> None:
    settings.AGENTAUTH_INTROSPECTION_TOKENS = []
    settings.DEBUG = True
    a, key = agent
    body = api.post("/agent/introspect", {"token": agent_token(a, key)}).body
    assert body["active"] is True and body["agent_id"] == a.pk
    assert not {"user_id", "user", "email", "username"} & set(body)


def test_a_resource_server_with_the_secret_sees_the_user(api: Api, agent: Any) -> None:
    a, key = agent
    assert introspect(api, agent_token(a, key)).body["user_id"] == str(a.user_id)


def test_system_check_requires_secrets_outside_debug(settings: Any) -> None:
    from agentauth.checks import check_introspection

    settings.AGENTAUTH_INTROSPECTION_TOKENS = []
    assert [e.id for e in check_introspection()] == ["agentauth.E040"]
    settings.DEBUG = True
    assert check_introspection() == []
    settings.DEBUG = False
    settings.AGENTAUTH_INTROSPECTION_TOKENS = ["s"]
    assert check_introspection() == []


# --- introspect: more ----------------------------------------------------------------------------


@pytest.fixture
def linked_agent(user: Any) -> Any:
    host, _ = make_host(user=user, default_capabilities=["check_balance", "read_only_note"])
    return make_agent(host, grants=["check_balance"])


def test_introspect_active(api: Api, linked_agent: Any, user: Any) -> None:
    # spec: §5.12, §5.3
    agent, key = linked_agent
    reply = introspect(api, agent_token(agent, key))
    assert reply.status == 200
    assert reply.body == {
        "active": True,
        "agent_id": agent.pk,
        "host_id": agent.host_id,
        "agent_capability_grants": [{"capability": "check_balance", "status": "active"}],
        "mode": "delegated",
        "user_id": str(user.pk),
        "expires_at": reply.body["expires_at"],
    }


def test_introspect_narrows_to_the_claim(api: Api, user: Any) -> None:
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance", "read_only_note"])
    reply = introspect(api, agent_token(agent, key, capabilities=["read_only_note"]))
    assert reply.body["agent_capability_grants"] == [
        {"capability": "read_only_note", "status": "active"}
    ]


def test_introspection_does_not_spend_the_token(api: Api, linked_agent: Any) -> None:
    # §4.6
    agent, key = linked_agent
    token = agent_token(agent, key)
    assert introspect(api, token).body["active"] is True
    assert introspect(api, token).body["active"] is True
    status = api.get("/capability/list", token=token).status
    assert status == 200


def test_location_audience_is_introspectable(api: Api, linked_agent: Any) -> None:
    # §5.12 — tokens made for a capability's location.
    agent, key = linked_agent
    token = agent_token(agent, key, audience="http://testserver/support/escalate")
    assert introspect(api, token).body["active"] is True


def test_invalid_tokens_are_simply_inactive(api: Api, linked_agent: Any) -> None:
    # spec: §5.12
    agent, key = linked_agent
    tokens = [
        "garbage",
        agent_token(agent, Keypair.generate()),
        agent_token(agent, key, audience="https://elsewhere.example"),
        host_token(key),
    ]
    for token in tokens:
        assert introspect(api, token).body == {"active": False}
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.REVOKED)
    assert introspect(api, agent_token(agent, key)).body == {"active": False}


def test_introspect_needs_a_token(api: Api) -> None:
    reply = api.post("/agent/introspect", {}, token=INTROSPECTION_SECRET)
    assert_error(reply, 400, "invalid_request")


def test_introspection_secret(linked_agent: Any, client: Any, settings: Any) -> None:
    # spec: §5.12 — server-to-server authentication, compared in constant time.
    settings.AGENTAUTH_INTROSPECTION_TOKENS = ["s3cret"]
    agent, key = linked_agent

    def call(authorization: str | None) -> Any:
        headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
        return client.post(
            "/api/auth/agent/introspect",
            data={"token": agent_token(agent, key)},
            content_type="application/json",
            **headers,
        )

    for refused in (None, "Bearer wrong", "Bearer s3cre", "s3cret"):
        response = call(refused)
        assert response.status_code == 401
        assert response.json()["error"] == "authentication_required"
    assert call("Bearer s3cret").json()["active"] is True


def test_introspection_is_rate_limited(api: Api, settings: Any) -> None:
    # spec: §5.12
    cache.clear()
    settings.AGENTAUTH_RATE_LIMITS = {"introspect": "2/minute"}
    introspect(api, "x")
    introspect(api, "x")
    assert_error(introspect(api, "x"), 429, "rate_limited")
    cache.clear()
