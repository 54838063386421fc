"""POST /capability/execute and the async status_url (spec §2.15, §5.11, §5.12, §5.13)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agentauth import signals
from agentauth.capabilities import registry
from agentauth.models import AgentStatus, AuditEvent, CapabilityGrant, Execution
from agentauth.testing import agent_token, make_agent, make_host
from tests.conftest import ISSUER, Api, assert_error

pytestmark = pytest.mark.django_db

EXECUTE = ISSUER + "/capability/execute"


@pytest.fixture
def agent(user: Any) -> Any:
    host, _ = make_host(user=user)
    return make_agent(
        host,
        grants={
            "check_balance": None,
            "transfer": {"amount": {"max": 1000}, "currency": {"in": ["USD"]}},
            "slow_report": None,
            "failing_job": None,
            "count_up": None,
            "broken_stream": None,
            "explode": None,
            "over_limit": None,
        },
    )


def execute(api: Api, agent: Any, capability: str, arguments: Any = None, **kw: Any) -> Any:
    a, key = agent
    token = agent_token(a, key, audience=kw.pop("audience", EXECUTE), **kw)
    body: dict[str, Any] = {"capability": capability}
    if arguments is not None:
        body["arguments"] = arguments
    return api.post("/capability/execute", body, token=token)


def test_sync_execution(api: Api, agent: Any) -> None:
    # spec: §2.15
    reply = execute(api, agent, "check_balance", {"account_id": "acc_1"})
    assert reply.status == 200
    assert reply.body == {"data": {"account_id": "acc_1", "balance": 1234.5, "currency": "USD"}}


def test_issuer_audience_is_accepted_at_the_default_location(api: Api, agent: Any) -> None:
    # spec §6.10, as the official TypeScript client signs, §4.3
    reply = execute(api, agent, "check_balance", {"account_id": "a"}, audience=ISSUER)
    assert reply.status == 200


def test_issuer_audience_can_be_refused(api: Api, agent: Any, settings: Any) -> None:
    settings.AGENTAUTH_EXECUTE_ACCEPTS_ISSUER_AUD = False
    reply = execute(api, agent, "check_balance", {"account_id": "a"}, audience=ISSUER)
    assert_error(reply, 401, "invalid_jwt")


def test_other_audience(api: Api, agent: Any) -> None:
    # spec: §4.3, §8.18 cross-server confusion
    reply = execute(
        api, agent, "check_balance", {"account_id": "a"}, audience="https://b.example/x"
    )
    assert_error(reply, 401, "invalid_jwt")


def test_not_granted(api: Api, agent: Any) -> None:
    # spec: §2.15
    assert_error(execute(api, agent, "read_only_note"), 403, "capability_not_granted")


def test_capabilities_claim_restricts(api: Api, agent: Any) -> None:
    # spec: §2.15, §4.3
    reply = execute(api, agent, "check_balance", {"account_id": "a"}, capabilities=["transfer"])
    assert_error(reply, 403, "capability_not_granted")


def test_unknown_capability(api: Api, agent: Any) -> None:
    # spec: §2.15, §5.2.1
    assert_error(execute(api, agent, "no_such_thing"), 404, "capability_not_found")


def test_non_public_capability_is_not_disclosed(api: Api, agent: Any) -> None:
    # §5.2.1: close_account exists but is not public and was never granted.
    assert_error(
        execute(api, agent, "close_account", {"account_id": "a"}), 404, "capability_not_found"
    )


def test_removed_capability(api: Api, agent: Any) -> None:
    # spec: §2.12, §5.11
    cap = registry.get("check_balance")
    assert cap is not None
    registry.unregister("check_balance")
    try:
        reply = execute(api, agent, "check_balance", {"account_id": "a"})
    finally:
        registry.register(cap)
    assert_error(reply, 403, "capability_not_granted")
    assert "removed" in reply.body["message"]


@pytest.mark.parametrize(
    "arguments",
    [{"account_id": 5}, {}, {"account_id": None}],
)
def test_schema_violations(api: Api, agent: Any, arguments: Any) -> None:
    # spec: §2.12, §2.15
    reply = execute(api, agent, "check_balance", arguments)
    assert_error(reply, 400, "invalid_request")
    assert "schema_path" in reply.body


@pytest.mark.parametrize(
    "body", [{"capability": 5}, {"arguments": {}}, {"capability": "x", "y": 1}]
)
def test_malformed_execute_bodies(api: Api, agent: Any, body: Any) -> None:
    # spec: §2.15
    a, key = agent
    reply = api.post("/capability/execute", body, token=agent_token(a, key, audience=EXECUTE))
    assert_error(reply, 400, "invalid_request")


def test_arguments_must_be_an_object(api: Api, agent: Any) -> None:
    assert_error(execute(api, agent, "check_balance", ["a"]), 400, "invalid_request")


def test_constraint_violations_in_the_spec_shape(api: Api, agent: Any) -> None:
    # spec: §2.13, §5.13
    reply = execute(api, agent, "transfer", {"amount": 5000, "currency": "GBP", "to": "x"})
    assert_error(reply, 403, "constraint_violated")
    assert reply.body["message"] == "Execution arguments violate grant constraints"
    assert reply.body["violations"] == [
        {"field": "amount", "constraint": {"max": 1000}, "actual": 5000},
        {"field": "currency", "constraint": {"in": ["USD"]}, "actual": "GBP"},
    ]


def test_missing_constrained_field_violates(api: Api, agent: Any) -> None:
    # §2.13: fail closed.
    reply = execute(api, agent, "transfer", {"amount": 5, "to": "x"})
    assert_error(reply, 403, "constraint_violated")
    assert reply.body["violations"][0]["field"] == "currency"


def test_within_constraints(api: Api, agent: Any) -> None:
    reply = execute(api, agent, "transfer", {"amount": 1000, "currency": "USD", "to": "x"})
    assert reply.status == 200 and reply.body["data"]["amount"] == 1000


def test_unknown_operator_in_a_stored_grant(api: Api, agent: Any) -> None:
    # spec: §2.13, §2.15 — never ignored.
    CapabilityGrant.objects.filter(capability="transfer").update(
        constraints={"amount": {"max": 5, "regex": ".*"}}
    )
    reply = execute(api, agent, "transfer", {"amount": 1, "currency": "USD", "to": "x"})
    assert_error(reply, 400, "unknown_constraint_operator")
    assert reply.body["unknown_operators"] == ["regex"]


def test_handler_failure_is_a_spec_error(api: Api, agent: Any) -> None:
    # Handler exceptions become a spec error, never a 500 page, and are audited.
    reply = execute(api, agent, "explode")
    assert_error(reply, 500, "internal_error")
    assert "internal details" not in json.dumps(reply.body)
    event = AuditEvent.objects.get(kind="capability.refused", capability="explode")
    assert event.error_code == "internal_error"


def test_handler_protocol_error_passes_through(api: Api, agent: Any) -> None:
    # §8.13
    assert_error(execute(api, agent, "over_limit"), 403, "limit_exceeded")


@pytest.mark.parametrize(
    "status, code",
    [
        (AgentStatus.REVOKED, "agent_revoked"),
        (AgentStatus.EXPIRED, "agent_expired"),
        (AgentStatus.PENDING, "agent_pending"),
    ],
)
def test_inactive_agents(api: Api, agent: Any, status: str, code: str) -> None:
    # spec: §2.15
    type(agent[0]).objects.filter(pk=agent[0].pk).update(status=status)
    assert_error(execute(api, agent, "check_balance", {"account_id": "a"}), 403, code)


def test_replayed_token(api: Api, agent: Any) -> None:
    a, key = agent
    token = agent_token(a, key, audience=EXECUTE)
    body = {"capability": "check_balance", "arguments": {"account_id": "a"}}
    assert api.post("/capability/execute", body, token=token).status == 200
    assert_error(api.post("/capability/execute", body, token=token), 401, "invalid_jwt")


def test_every_call_is_audited_and_signalled(api: Api, agent: Any) -> None:
    # spec: §11
    seen: list[tuple[str, str]] = []

    def on_ok(sender: Any, capability: str, **kw: Any) -> None:
        seen.append(("ok", capability))

    def on_refused(sender: Any, capability: str, error: str, **kw: Any) -> None:
        seen.append((error, capability))

    signals.capability_executed.connect(on_ok)
    signals.capability_refused.connect(on_refused)
    try:
        execute(api, agent, "check_balance", {"account_id": "a"})
        execute(api, agent, "read_only_note")
    finally:
        signals.capability_executed.disconnect(on_ok)
        signals.capability_refused.disconnect(on_refused)
    assert seen == [("ok", "check_balance"), ("capability_not_granted", "read_only_note")]
    ok = AuditEvent.objects.get(kind="capability.executed")
    assert ok.agent_id == agent[0].pk and ok.host_id == agent[0].host_id
    assert ok.user_id == str(agent[0].user_id) and ok.capability == "check_balance"
    assert ok.data["jti"]


def test_execution_slides_the_session(api: Api, agent: Any) -> None:
    # spec §2.3, §2.4
    execute(api, agent, "check_balance", {"account_id": "a"})
    agent[0].refresh_from_db()
    assert agent[0].last_used_at is not None


# --- async ----------------------------------------------------------------------------------


def test_async_execution_and_polling(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §2.15, §8.12, §5.11
    with django_capture_on_commit_callbacks(execute=True):
        reply = execute(api, agent, "slow_report", {"n": 21})
    assert reply.status == 202
    assert set(reply.body) == {"status", "status_url"} and reply.body["status"] == "pending"
    assert reply.headers["Retry-After"] == "1"
    url = reply.body["status_url"]
    assert url.startswith("http://testserver/api/auth/capability/status/job_")
    a, key = agent
    poll = api.get(url.removeprefix("http://testserver/api/auth"), token=agent_token(a, key))
    assert poll.status == 200 and poll.body == {"status": "completed", "result": {"total": 42}}


def test_async_failure(api: Api, agent: Any, django_capture_on_commit_callbacks: Any) -> None:
    # spec: §5.13
    with django_capture_on_commit_callbacks(execute=True):
        reply = execute(api, agent, "failing_job")
    a, key = agent
    path = reply.body["status_url"].removeprefix("http://testserver/api/auth")
    poll = api.get(path, token=agent_token(a, key))
    assert poll.body["status"] == "failed" and set(poll.body) == {"status", "error"}
    assert poll.body["error"]["error"] == "invalid_request"


def test_async_pending_poll_and_other_agents(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec: §2.15, §5.11 — only the initiating agent may poll.
    with django_capture_on_commit_callbacks(execute=False):
        reply = execute(api, agent, "slow_report", {"n": 1})
    path = reply.body["status_url"].removeprefix("http://testserver/api/auth")
    a, key = agent
    pending = api.get(path, token=agent_token(a, key))
    assert pending.body == {"status": "pending", "status_url": reply.body["status_url"]}
    other, other_key = make_agent(a.host, grants=["slow_report"])
    assert_error(api.get(path, token=agent_token(other, other_key)), 404, "not_found")
    assert_error(api.get(path), 401, "invalid_jwt")


def test_async_job_rechecks_the_agent(
    api: Api, agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec §8.17 — revoked between acceptance and run: the job fails.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        reply = execute(api, agent, "slow_report", {"n": 1})
    type(agent[0]).objects.filter(pk=agent[0].pk).update(status=AgentStatus.REVOKED)
    for callback in callbacks:
        callback()
    job = Execution.objects.get()
    assert job.status == "failed" and job.error["error"] == "agent_revoked"
    assert reply.status == 202


# --- stream ---------------------------------------------------------------------------------


def events(response: Any) -> list[tuple[str, Any]]:
    raw = b"".join(response.streaming_content).decode()
    out = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines.get("event", "data"), json.loads(lines["data"])))
    return out


def test_stream(client: Any, agent: Any) -> None:
    # spec: §5.13
    a, key = agent
    response = client.post(
        "/api/auth/capability/execute",
        data={"capability": "count_up", "arguments": {"n": 3}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(a, key, audience=EXECUTE)}",
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    assert events(response) == [
        ("data", {"i": 0}),
        ("data", {"i": 1}),
        ("data", {"i": 2}),
        ("done", {}),
    ]


def test_stream_error_then_done(client: Any, agent: Any) -> None:
    # spec: §5.13 — an error event, then done; never a silent close.
    a, key = agent
    response = client.post(
        "/api/auth/capability/execute",
        data={"capability": "broken_stream"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent_token(a, key, audience=EXECUTE)}",
    )
    got = events(response)
    assert got[0] == ("data", {"i": 0})
    assert got[1][0] == "error" and got[1][1]["error"] == "internal_error"
    assert got[-1] == ("done", {})


def test_server_imposed_constraints_bind_older_grants(api: Api, user: Any) -> None:
    # spec §2.13: a grant made before (or without) the server's cap is still held to it.
    host, _ = make_host(user=user)
    agent = make_agent(host, grants=["capped_transfer"])
    reply = execute(api, agent, "capped_transfer", {"amount": 50000})
    assert_error(reply, 403, "constraint_violated")
    assert reply.body["violations"] == [
        {"field": "amount", "constraint": {"max": 10000}, "actual": 50000}
    ]
    assert execute(api, agent, "capped_transfer", {"amount": 500}).status == 200


def test_non_json_result_is_one_refusal(api: Api, agent: Any) -> None:
    # spec §5.11, §11: one call, one audit row and one signal. A result that cannot be sent used
    # to leave ``executed`` and then ``refused``; now it is a single internal_error refusal and
    # what the handler wrote is rolled back with it.
    CapabilityGrant.objects.create(agent=agent[0], capability="non_json_sync", status="active")
    seen: list[str] = []

    def on_ok(sender: Any, **kw: Any) -> None:
        seen.append("executed")

    def on_refused(sender: Any, error: str, **kw: Any) -> None:
        seen.append(error)

    signals.capability_executed.connect(on_ok)
    signals.capability_refused.connect(on_refused)
    try:
        assert_error(execute(api, agent, "non_json_sync"), 500, "internal_error")
    finally:
        signals.capability_executed.disconnect(on_ok)
        signals.capability_refused.disconnect(on_refused)
    assert seen == ["internal_error"]
    rows = AuditEvent.objects.filter(capability="non_json_sync")
    assert [(r.kind, r.error_code) for r in rows] == [("capability.refused", "internal_error")]
    assert not AuditEvent.objects.filter(kind="test.side_effect").exists()


# --- execute (sync): more ---------------------------------------------------------------------


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
    # spec: §2.15 — the claim narrows, it does not forbid what it names.
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
    # spec: §2.15, §3.3
    CapabilityGrant.objects.filter(capability="check_balance").update(**change)
    reply = run(api, executor, "check_balance", {"account_id": "a"})
    assert_error(reply, 403, "capability_not_granted")


def test_evaluation_order(api: Api, executor: Any) -> None:
    # §2.15: unknown operator (400) before schema (400) before constraints (403).
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
    # spec: §2.15, §5.12 — ticket.escalate is executed at /support/escalate.
    host, _ = make_host(user=user)
    agent = make_agent(host, grants=["ticket.escalate"])
    reply = run(api, agent, "ticket.escalate", {"ticket_id": 1})
    assert_error(reply, 400, "invalid_request")
    assert reply.body["location"] == "http://testserver/support/escalate"


def test_refusals_carry_their_code_in_audit_and_signal(api: Api, executor: Any) -> None:
    # spec: §11
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
    # The warm-execution budget, in the one place it is pinned for every database: one
    # transaction under autocommit (as in production, no test transaction around the request;
    # SQLite's backend logs BEGIN/COMMIT as queries): one BEGIN, the jti record, the
    # agent+host+grant read (one statement with the jti on PostgreSQL), the audit row, one
    # COMMIT. Round trips on the wire (PostgreSQL): tests/api/test_execute_hot_path.py.
    run(api, executor, "check_balance", {"account_id": "a"})  # warm: the session has slid
    with CaptureQueriesContext(connection) as captured:
        reply = run(api, executor, "check_balance", {"account_id": "a"})
    assert reply.status == 200
    statements = [q["sql"] for q in captured.captured_queries]
    control = [sql for sql in statements if sql in ("BEGIN", "COMMIT")]
    data = [sql for sql in statements if sql not in ("BEGIN", "COMMIT")]
    if connection.vendor == "postgresql":
        assert [sql.split()[0] for sql in data] == ["WITH", "INSERT"], data
    else:
        assert [sql.split()[0] for sql in data] == ["INSERT", "SELECT", "INSERT"], data
    assert len(control) <= 2, statements
