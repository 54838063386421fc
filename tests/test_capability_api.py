"""Capability list and describe, request-capability, introspection (spec §5.2, §5.2.1, §5.4,
§5.12; checklist C7-C17, RC1-RC9, I1-I6, Q2, Q3, Q17, Q29, Q42-Q45, Q63)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agentauth import approvals, signals
from agentauth.models import Agent, AgentStatus, AuditEvent, CapabilityGrant, HostStatus
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from tests.conftest import INTROSPECTION_SECRET, ISSUER, Api, assert_error, operator_decides

pytestmark = pytest.mark.django_db
PUBLIC = {
    "broken_stream",
    "capped_transfer",
    "check_balance",
    "count_up",
    "explode",
    "failing_job",
    "over_limit",
    "read_only_note",
    "slow_report",
    "transfer",
}


def names(reply: Any) -> set[str]:
    return {c["name"] for c in reply.body["capabilities"]}


# --- list ------------------------------------------------------------------------------------


def test_anonymous_list(api: Api) -> None:
    # spec: C7, C8, C10, C11
    reply = api.get("/capability/list")
    assert reply.status == 200
    assert names(reply) >= PUBLIC and "close_account" not in names(reply)
    # §5.2 summary fields, plus §2.12 location where the capability has one (the SDK reads it
    # only here).
    for c in reply.body["capabilities"]:
        expected = {"name", "description"} | ({"location"} if "location" in c else set())
        assert set(c) == expected, c
    located = {c["name"]: c["location"] for c in reply.body["capabilities"] if "location" in c}
    assert located == {"ticket.escalate": "http://testserver/support/escalate"}
    assert reply.body["has_more"] is False and reply.body["next_cursor"] is None
    assert reply.headers["Cache-Control"] == "public, max-age=300"


def test_query(api: Api) -> None:
    # spec: C9
    assert names(api.get("/capability/list", query="bank balance")) == {"check_balance"}
    assert names(api.get("/capability/list", query="nothing matches this")) == set()


def test_pagination_walks_everything_once(api: Api) -> None:
    # spec: C9, C10; checklist Q63
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        reply = api.get("/capability/list", **params)
        assert reply.body["has_more"] == (reply.body["next_cursor"] is not None)
        seen += [c["name"] for c in reply.body["capabilities"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == names(api.get("/capability/list"))


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "x"}, {"limit": "-1"}, {"cursor": "%%%"}, {"page": "2"}]
)
def test_bad_list_parameters(api: Api, params: dict[str, str]) -> None:
    assert_error(api.get("/capability/list", **params), 400, "invalid_request")


def test_limit_is_clamped(api: Api) -> None:
    assert api.get("/capability/list", limit="100000").status == 200


def test_agent_list_has_grant_status(api: Api, user: Any) -> None:
    # spec: C8, C13; checklist Q42
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance"])
    CapabilityGrant.objects.create(agent=agent, capability="transfer", status="pending")
    CapabilityGrant.objects.create(agent=agent, capability="close_account", status="denied")
    reply = api.get("/capability/list", token=agent_token(agent, key))
    status = {c["name"]: c["grant_status"] for c in reply.body["capabilities"]}
    assert status["check_balance"] == "granted"
    assert status["transfer"] == "not_granted"  # pending is not granted
    # A non-public capability shows once the agent holds any grant row for it (Q17).
    assert status["close_account"] == "not_granted"
    assert all(c["grant_status"] in ("granted", "not_granted") for c in reply.body["capabilities"])
    assert reply.headers["Cache-Control"] == "private, max-age=300"
    assert "Authorization" in reply.headers["Vary"]


def test_host_list_includes_its_defaults(api: Api, user: Any) -> None:
    # checklist Q44
    _, key = make_host(user=user, default_capabilities=["close_account"])
    reply = api.get("/capability/list", token=host_token(key))
    assert "close_account" in names(reply)
    assert all("grant_status" not in c for c in reply.body["capabilities"])


def test_unknown_host_lists_like_anonymous(api: Api) -> None:
    # checklist Q45
    reply = api.get("/capability/list", token=host_token(Keypair.generate()))
    assert reply.status == 200 and "close_account" not in names(reply)


def test_bad_token_is_not_downgraded(api: Api) -> None:
    # checklist C14
    assert_error(api.get("/capability/list", token="a.b.c"), 401, "invalid_jwt")


# --- describe --------------------------------------------------------------------------------


def test_describe(api: Api) -> None:
    # spec: C15, C16
    reply = api.get("/capability/describe", name="check_balance")
    assert reply.status == 200
    body = reply.body
    assert body["name"] == "check_balance" and body["input"]["required"] == ["account_id"]
    assert body["output"]["properties"]["balance"] == {"type": "number"}
    assert body["approval_strength"] == "none" and "grant_status" not in body


def test_describe_with_agent(api: Api, user: Any) -> None:
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance"])
    reply = api.get("/capability/describe", name="transfer", token=agent_token(agent, key))
    assert reply.body["grant_status"] == "not_granted"


@pytest.mark.parametrize("name", ["nope", "close_account"])
def test_describe_unknown_or_hidden(api: Api, name: str) -> None:
    # spec: C17; checklist Q17
    assert_error(api.get("/capability/describe", name=name), 404, "capability_not_found")


def test_describe_needs_a_name(api: Api) -> None:
    assert_error(api.get("/capability/describe"), 400, "invalid_request")


# --- request-capability ----------------------------------------------------------------------


@pytest.fixture
def linked_agent(user: Any) -> Any:
    host, _ = make_host(user=user, default_capabilities=["check_balance", "read_only_note"])
    return make_agent(host, grants=["check_balance"])


def request(api: Api, agent: Any, body: Any) -> Any:
    a, key = agent
    return api.post("/agent/request-capability", body, token=agent_token(a, key))


def test_auto_approved_within_host_defaults(api: Api, linked_agent: Any) -> None:
    # spec: RC5, RC6
    reply = request(api, linked_agent, {"capabilities": ["read_only_note"], "reason": "notes"})
    assert reply.status == 200
    assert reply.body["agent_id"] == linked_agent[0].pk and "approval" not in reply.body
    [grant] = reply.body["agent_capability_grants"]
    assert grant["capability"] == "read_only_note" and grant["status"] == "active"
    assert CapabilityGrant.objects.get(capability="read_only_note").reason == "notes"  # RC7


def test_outside_defaults_is_pending_with_approval(api: Api, linked_agent: Any) -> None:
    # spec: RC5, RC8, RC9
    reply = request(api, linked_agent, {"capabilities": ["transfer"]})
    assert reply.body["agent_capability_grants"] == [
        {"capability": "transfer", "status": "pending"}
    ]
    assert reply.body["approval"]["method"] == "device_authorization"
    assert Agent.objects.get().status == AgentStatus.ACTIVE  # RC6


def test_all_already_granted(api: Api, linked_agent: Any) -> None:
    # spec: RC4
    assert_error(
        request(api, linked_agent, {"capabilities": ["check_balance"]}), 409, "already_granted"
    )


def test_partial_overlap_processes_the_rest(api: Api, linked_agent: Any) -> None:
    # checklist Q29
    reply = request(api, linked_agent, {"capabilities": ["check_balance", "transfer"]})
    assert [g["capability"] for g in reply.body["agent_capability_grants"]] == ["transfer"]


def test_pending_duplicate_is_returned_again(api: Api, linked_agent: Any) -> None:
    # checklist Q29
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
    # checklist Q29: one active grant per capability, always.
    constrained = {"name": "check_balance", "constraints": {"account_id": "acc_9"}}
    reply = request(api, linked_agent, {"capabilities": [constrained]})
    assert reply.body["agent_capability_grants"][0]["status"] == "pending"
    operator_decides(linked_agent[0], user)
    active = CapabilityGrant.objects.filter(capability="check_balance", status="active")
    assert [g.constraints for g in active] == [{"account_id": "acc_9"}]


def test_server_imposed_constraints_intersect(api: Api, user: Any) -> None:
    # spec §2.13: combined = tightest; checklist CN8, CN12
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
    # spec: RC2, RC3
    assert_error(request(api, linked_agent, body), status, code)


def test_pending_agent_cannot_request(api: Api, user: Any) -> None:
    # spec: RC1
    host, _ = make_host(user=user)
    agent = make_agent(host, status=AgentStatus.PENDING)
    assert_error(request(api, agent, {"capabilities": ["transfer"]}), 403, "agent_pending")


# --- introspect ------------------------------------------------------------------------------


def introspect(api: Api, token: Any, **kw: Any) -> Any:
    return api.post("/agent/introspect", {"token": token}, token=INTROSPECTION_SECRET, **kw)


def test_introspect_active(api: Api, linked_agent: Any, user: Any) -> None:
    # spec: I3, I4, GR5
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
    # checklist Q3
    agent, key = linked_agent
    token = agent_token(agent, key)
    assert introspect(api, token).body["active"] is True
    assert introspect(api, token).body["active"] is True
    status = api.get("/capability/list", token=token).status
    assert status == 200


def test_location_audience_is_introspectable(api: Api, linked_agent: Any) -> None:
    # checklist Q2 — tokens made for a capability's location.
    agent, key = linked_agent
    token = agent_token(agent, key, audience="http://testserver/support/escalate")
    assert introspect(api, token).body["active"] is True


def test_invalid_tokens_are_simply_inactive(api: Api, linked_agent: Any) -> None:
    # spec: I3
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
    # spec: I5 — server-to-server authentication, compared in constant time.
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
    # spec: I5, S49
    cache.clear()
    settings.AGENTAUTH_RATE_LIMITS = {"introspect": "2/minute"}
    introspect(api, "x")
    introspect(api, "x")
    assert_error(introspect(api, "x"), 429, "rate_limited")
    cache.clear()


# --- list: more -------------------------------------------------------------------------------


def test_limit_one_walks_every_page(api: Api) -> None:
    # spec: C9, C10; checklist Q63 — has_more and next_cursor always agree.
    everything = [c["name"] for c in api.get("/capability/list").body["capabilities"]]
    seen: list[str] = []
    cursor = None
    for _ in range(len(everything) + 1):
        reply = api.get("/capability/list", limit="1", **({"cursor": cursor} if cursor else {}))
        assert reply.status == 200
        assert len(reply.body["capabilities"]) == 1
        assert reply.body["has_more"] == (reply.body["next_cursor"] is not None)
        seen += [c["name"] for c in reply.body["capabilities"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert seen == everything  # same order, nothing skipped or repeated


def test_cursor_past_the_end_is_an_empty_last_page(api: Api) -> None:
    everything = [c["name"] for c in api.get("/capability/list").body["capabilities"]]
    first = api.get("/capability/list", limit=str(len(everything) - 1))
    last = api.get("/capability/list", cursor=first.body["next_cursor"])
    assert [c["name"] for c in last.body["capabilities"]] == everything[-1:]
    assert last.body["has_more"] is False and last.body["next_cursor"] is None


@pytest.mark.parametrize("limit", ["²", "1.5", " 1", "", "0000", "0x10", "1e2"])
def test_limit_must_be_ascii_digits(api: Api, limit: str) -> None:
    # checklist Q63 — "²" passes str.isdigit() but not int(): it was a 500.
    assert_error(api.get("/capability/list", limit=limit), 400, "invalid_request")


def test_huge_limit_is_clamped_not_an_error(api: Api) -> None:
    # checklist Q63 — more than 4300 digits made int() raise: it was a 500.
    reply = api.get("/capability/list", limit="9" * 5000)
    assert reply.status == 200 and reply.body["has_more"] is False
    assert api.get("/capability/list", limit="001").body["has_more"] is True


def test_anonymous_list_varies_on_authorization(api: Api) -> None:
    # checklist C12
    assert "Authorization" in api.get("/capability/list").headers["Vary"]


def test_only_effective_grants_are_granted(api: Api, user: Any) -> None:
    # spec: C13 — lapsed, revoked and expired grant rows are not_granted.
    host, _ = make_host(user=user)
    agent, key = make_agent(host, grants=["check_balance", "transfer", "read_only_note"])
    past = timezone.now() - timedelta(seconds=1)
    CapabilityGrant.objects.filter(capability="transfer").update(expires_at=past)
    CapabilityGrant.objects.filter(capability="read_only_note").update(status="revoked")
    CapabilityGrant.objects.create(agent=agent, capability="count_up", status="expired")
    reply = api.get("/capability/list", token=agent_token(agent, key))
    status = {c["name"]: c["grant_status"] for c in reply.body["capabilities"]}
    assert status["check_balance"] == "granted"
    assert status["transfer"] == status["read_only_note"] == status["count_up"] == "not_granted"
    assert all(
        set(c) - {"location"} == {"name", "description", "grant_status"}
        for c in reply.body["capabilities"]
    )


def test_non_public_needs_a_grant_row_to_be_seen(api: Api, user: Any) -> None:
    # checklist Q17 — an agent never granted close_account does not learn it exists.
    host, _ = make_host(user=user)
    stranger, stranger_key = make_agent(host, grants=["check_balance"])
    holder, holder_key = make_agent(host, grants=["close_account"])
    assert "close_account" not in names(
        api.get("/capability/list", token=agent_token(stranger, stranger_key))
    )
    hidden = api.get(
        "/capability/describe", name="close_account", token=agent_token(stranger, stranger_key)
    )
    assert_error(hidden, 404, "capability_not_found")
    listed = api.get("/capability/list", token=agent_token(holder, holder_key))
    assert {"name": "close_account", "description": "Close a bank account"} | {
        "grant_status": "granted"
    } in listed.body["capabilities"]
    shown = api.get(
        "/capability/describe", name="close_account", token=agent_token(holder, holder_key)
    )
    assert shown.status == 200 and shown.body["grant_status"] == "granted"
    assert shown.body["input"]["required"] == ["account_id"]


def test_pending_host_lists_like_anonymous(api: Api, user: Any) -> None:
    # checklist Q45 — its defaults are not disclosed before approval.
    _, key = make_host(status=HostStatus.PENDING, default_capabilities=["close_account"])
    reply = api.get("/capability/list", token=host_token(key))
    assert reply.status == 200 and "close_account" not in names(reply)
    assert reply.headers["Cache-Control"] == "public, max-age=300"


def test_revoked_host_is_refused_not_downgraded(api: Api, user: Any) -> None:
    # checklist C14
    _, key = make_host(user=user, status=HostStatus.REVOKED)
    assert_error(api.get("/capability/list", token=host_token(key)), 403, "host_revoked")


def test_host_describe_of_a_default_has_no_grant_status(api: Api, user: Any) -> None:
    # spec: C15; checklist Q44
    _, key = make_host(user=user, default_capabilities=["close_account"])
    reply = api.get("/capability/describe", name="close_account", token=host_token(key))
    assert reply.status == 200 and "grant_status" not in reply.body
    assert reply.headers["Cache-Control"] == "private, max-age=300"


@pytest.mark.parametrize(
    "token_kwargs",
    [
        {"audience": ISSUER + "/capability/execute"},  # list wants aud = issuer
        {"extra_claims": {"exp": 1}},  # expired
    ],
)
def test_bad_agent_token_on_list(api: Api, user: Any, token_kwargs: dict[str, Any]) -> None:
    # spec: C14
    host, _ = make_host(user=user)
    agent, key = make_agent(host)
    reply = api.get("/capability/list", token=agent_token(agent, key, **token_kwargs))
    assert_error(reply, 401, "invalid_jwt")


def test_agent_list_spends_the_jti_and_slides_the_session(api: Api, user: Any) -> None:
    # checklist Q3, Q14
    host, _ = make_host(user=user)
    agent, key = make_agent(host)
    token = agent_token(agent, key)
    assert api.get("/capability/list", token=token).status == 200
    agent.refresh_from_db()
    assert agent.last_used_at is not None
    assert_error(api.get("/capability/list", token=token), 401, "invalid_jwt")


def test_describe_rejects_unknown_parameters(api: Api) -> None:
    reply = api.get("/capability/describe", name="check_balance", full="1")
    assert_error(reply, 400, "invalid_request")


def test_describe_shows_a_location(api: Api) -> None:
    # spec: C16; checklist Q43 — ticket.escalate is served by the example project.
    reply = api.get("/capability/describe", name="ticket.escalate")
    assert reply.body["location"] == "http://testserver/support/escalate"


# --- execute (sync): more ---------------------------------------------------------------------

EXECUTE = ISSUER + "/capability/execute"


@pytest.fixture
def executor(user: Any) -> Any:
    host, _ = make_host(user=user)
    return make_agent(
        host,
        grants={
            "check_balance": None,
            "transfer": {"amount": {"max": 1000}},
            "missing_record": None,
            "write_then_fail": None,
            "explode": None,
            "capped_transfer": {"amount": {"max": 10000}},
        },
    )


def run(api: Api, agent: Any, capability: str, arguments: Any = None, **kw: Any) -> Any:
    a, key = agent
    token = agent_token(a, key, audience=kw.pop("audience", EXECUTE), **kw)
    body: dict[str, Any] = {"capability": capability}
    if arguments is not None:
        body["arguments"] = arguments
    return api.post("/capability/execute", body, token=token)


def test_lookup_error_is_404(api: Api, executor: Any) -> None:
    reply = run(api, executor, "missing_record")
    assert_error(reply, 404, "resource_not_found")
    assert reply.body["message"] == "No record with that id"
    event = AuditEvent.objects.get(kind="capability.refused")
    assert event.capability == "missing_record" and event.error_code == "resource_not_found"


def test_handler_writes_are_rolled_back_when_it_fails(api: Api, executor: Any) -> None:
    # spec §8.17 — the handler runs in the transaction that checked the grant.
    reply = run(api, executor, "write_then_fail")
    assert_error(reply, 500, "internal_error")
    assert not AuditEvent.objects.filter(kind="test.side_effect").exists()
    assert AuditEvent.objects.filter(kind="capability.refused", capability="write_then_fail")


def test_internal_error_is_json_not_html(client: Any, executor: Any) -> None:
    a, key = executor
    response = client.post(
        "/api/auth/capability/execute",
        data={"capability": "explode"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(a, key, audience=EXECUTE)}",
    )
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "internal_error", "message": "The capability failed"}


def test_capabilities_claim_naming_it_allows(api: Api, executor: Any) -> None:
    # spec: E4 — the claim narrows, it does not forbid what it names.
    reply = run(
        api,
        executor,
        "check_balance",
        {"account_id": "a"},
        capabilities=["transfer", "check_balance"],
    )
    assert reply.status == 200 and set(reply.body) == {"data"}


@pytest.mark.parametrize(
    "change",
    [
        {"status": "pending"},
        {"status": "denied"},
        {"status": "revoked"},
        {"expires_at": timezone.now() - timedelta(seconds=1)},
    ],
)
def test_only_an_effective_grant_executes(api: Api, executor: Any, change: Any) -> None:
    # spec: E4, GR7
    CapabilityGrant.objects.filter(capability="check_balance").update(**change)
    reply = run(api, executor, "check_balance", {"account_id": "a"})
    assert_error(reply, 403, "capability_not_granted")


def test_evaluation_order(api: Api, executor: Any) -> None:
    # checklist E18: unknown operator (400) before schema (400) before constraints (403).
    bad_schema_and_over = {"amount": "lots", "to": "x"}
    assert_error(run(api, executor, "transfer", bad_schema_and_over), 400, "invalid_request")
    CapabilityGrant.objects.filter(capability="transfer").update(
        constraints={"amount": {"max": 1000, "between": [1, 2]}}
    )
    reply = run(api, executor, "transfer", bad_schema_and_over)
    assert_error(reply, 400, "unknown_constraint_operator")
    # The JWT's capabilities claim is checked before the arguments.
    reply = run(api, executor, "transfer", "not an object", capabilities=["check_balance"])
    assert_error(reply, 403, "capability_not_granted")


def test_capability_with_its_own_location_is_not_run_here(api: Api, user: Any) -> None:
    # spec: E1, E2 — ticket.escalate is executed at /support/escalate.
    host, _ = make_host(user=user)
    agent = make_agent(host, grants=["ticket.escalate"])
    reply = run(api, agent, "ticket.escalate", {"ticket_id": 1})
    assert_error(reply, 400, "invalid_request")
    assert reply.body["location"] == "http://testserver/support/escalate"


def test_refusals_carry_their_code_in_audit_and_signal(api: Api, executor: Any) -> None:
    # spec: E19, O2
    refused: list[tuple[str, str]] = []
    executed: list[dict[str, Any]] = []

    def on_refused(sender: Any, capability: str, error: str, **kw: Any) -> None:
        refused.append((capability, error))

    def on_executed(sender: Any, **kw: Any) -> None:
        executed.append(kw)

    signals.capability_refused.connect(on_refused)
    signals.capability_executed.connect(on_executed)
    try:
        run(api, executor, "transfer", {"amount": 5000, "to": "x"})
        run(api, executor, "nope")
        run(api, executor, "capped_transfer", {"amount": 10})
    finally:
        signals.capability_refused.disconnect(on_refused)
        signals.capability_executed.disconnect(on_executed)
    assert refused == [("transfer", "constraint_violated"), ("nope", "capability_not_found")]
    assert [(e["capability"], e["mode"]) for e in executed] == [("capped_transfer", "sync")]
    assert executed[0]["agent"].pk == executor[0].pk and executed[0]["jti"]
    codes = AuditEvent.objects.filter(kind="capability.refused").values_list(
        "capability", "error_code", "outcome"
    )
    assert sorted(codes) == [
        ("nope", "capability_not_found", "error"),
        ("transfer", "constraint_violated", "error"),
    ]


@pytest.mark.django_db(transaction=True)
def test_warm_execution_under_autocommit(api: Api, executor: Any) -> None:
    # Issue acceptance: at most 4 queries per warm execution with the database replay guard.
    # Under autocommit (as in production, no test transaction around the request) the four data
    # statements are bracketed by the BEGIN/COMMIT of the replay insert and of the locked grant
    # check, which SQLite's backend logs as queries; django_assert_max_num_queries(4) therefore
    # sees 8 statements. Counted here: the data statements, and what the rest are.
    run(api, executor, "check_balance", {"account_id": "a"})  # warm: the session has slid
    with CaptureQueriesContext(connection) as captured:
        reply = run(api, executor, "check_balance", {"account_id": "a"})
    assert reply.status == 200
    statements = [q["sql"] for q in captured.captured_queries]
    control = [sql for sql in statements if sql in ("BEGIN", "COMMIT")]
    data = [sql for sql in statements if sql not in ("BEGIN", "COMMIT")]
    assert len(data) <= 4, data
    assert [sql.split()[0] for sql in data] == ["SELECT", "INSERT", "SELECT", "INSERT"]
    assert len(control) <= 4, statements
