"""The execute hot path (``agentauth.fastpath``): same answers and guarantees, fewer round trips.

Behaviour tests run on every database; round-trip budgets need PostgreSQL
(``AGENTAUTH_TEST_DATABASE_URL``), the cache replay guard's also Redis
(``AGENTAUTH_TEST_REDIS_URL``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from agentauth import jws
from agentauth.capabilities import registry
from agentauth.models import AgentMode, AuditEvent, ReplayRecord
from agentauth.testing import agent_token, make_agent, make_host
from tests.conftest import Api, assert_error, run_together

pytestmark = pytest.mark.django_db

EXECUTE = "http://testserver/api/auth/capability/execute"
needs_postgres = pytest.mark.skipif(
    not os.environ.get("AGENTAUTH_TEST_DATABASE_URL"), reason="needs PostgreSQL"
)


@pytest.fixture
def agent(user: Any) -> Any:
    host, _ = make_host(user=user)
    return make_agent(host, grants=["check_balance"])


def call(api: Api, agent: Any, token: str | None = None) -> Any:
    a, key = agent
    token = token or agent_token(a, key, audience=EXECUTE)
    body = {"capability": "check_balance", "arguments": {"account_id": "acc"}}
    return api.post("/capability/execute", body, token=token)


def test_success_spends_the_jti_and_audits_in_one_commit(api: Api, agent: Any) -> None:
    token = agent_token(agent[0], agent[1], audience=EXECUTE)
    assert call(api, agent, token).status == 200
    assert ReplayRecord.objects.count() == 1
    row = AuditEvent.objects.get(kind="capability.executed")
    # The same row execution.record writes on the general path.
    assert (row.actor_type, row.actor_id, row.agent_id, row.host_id, row.user_id) == (
        "agent",
        agent[0].pk,
        agent[0].pk,
        agent[0].host_id,
        str(agent[0].user_id),
    )
    assert (row.capability, row.outcome, row.error_code) == ("check_balance", "ok", "")
    assert row.data == {"jti": jws.parse(token).claims["jti"], "mode": "sync"}
    assert row.created_at is not None
    assert_error(call(api, agent, token), 401, "invalid_jwt")  # replay, spec §4.6


def test_refusal_keeps_the_jti_spent_and_is_audited(api: Api, user: Any) -> None:
    # The hot path hands refusals to the general path, which spends the jti first (spec §4.6).
    host, _ = make_host(user=user)
    agent = make_agent(host, grants=[])
    token = agent_token(agent[0], agent[1], audience=EXECUTE)
    assert_error(call(api, agent, token), 403, "capability_not_granted")
    assert ReplayRecord.objects.count() == 1
    assert AuditEvent.objects.filter(kind="capability.refused").count() == 1
    assert_error(call(api, agent, token), 401, "invalid_jwt")


def test_handler_failure_rolls_back_keeps_the_jti_and_audits(
    api: Api, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(ctx: Any, *, account_id: str) -> Any:
        AuditEvent.objects.create(kind="written.by.handler", actor_type="system")
        raise ValueError("no such account")

    cap = registry.get("check_balance")
    assert cap is not None and cap.public  # so the call takes the hot path
    monkeypatch.setitem(
        registry._by_name, "check_balance", dataclasses.replace(cap, handler=failing)
    )
    token = agent_token(agent[0], agent[1], audience=EXECUTE)
    assert_error(call(api, agent, token), 400, "invalid_request")
    assert not AuditEvent.objects.filter(kind="written.by.handler").exists()  # rolled back
    assert AuditEvent.objects.filter(kind="capability.refused").count() == 1
    assert ReplayRecord.objects.count() == 1
    assert_error(call(api, agent, token), 401, "invalid_jwt")


def test_bad_signature_spends_nothing(api: Api, agent: Any) -> None:
    other = make_agent(agent[0].host)[1]
    forged = agent_token(agent[0], other, audience=EXECUTE)
    assert_error(call(api, agent, forged), 401, "invalid_jwt")
    assert ReplayRecord.objects.count() == 0
    assert not AuditEvent.objects.filter(kind__startswith="capability.").exists()


def test_revocation_is_effective_for_the_next_call(api: Api, agent: Any) -> None:
    from agentauth import agents

    assert call(api, agent).status == 200
    agents.revoke_agent(agent[0], actor_type="user")
    assert_error(call(api, agent), 403, "agent_revoked")


def test_overdue_session_expires_through_the_general_path(api: Api, agent: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from agentauth.models import Agent

    Agent.objects.filter(pk=agent[0].pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(call(api, agent), 403, "agent_expired")
    assert AuditEvent.objects.filter(kind="agent.expired").count() == 1


def round_trips(api: Api, agent: Any) -> Any:
    from agentauth.testing.roundtrips import count_round_trips

    assert call(api, agent).status == 200  # warm: the session has slid, caches are filled
    with count_round_trips() as trips:
        reply = call(api, agent)
    assert reply.status == 200
    return trips


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_round_trips_database_guard(api: Api, user: Any) -> None:
    # The budget: <= 4 round trips per warm execute, BEGIN and COMMIT included.
    host, _ = make_host(user=user)
    agent = make_agent(host, grants=["check_balance"], mode=AgentMode.DELEGATED)
    trips = round_trips(api, agent)
    assert connection.vendor == "postgresql"
    assert trips.count <= 4, trips.sent
    assert trips.statements() == ["BEGIN", "WITH", "INSERT", "COMMIT"], trips.sent
    # The PostgreSQL tier prepares at first use (tests/settings.py): the warm call ran the two
    # statements of agentauth.fastpath from prepared statements, without sending their SQL.
    assert [line.split()[0] for line in trips.sent if line.startswith(("Parse", "Bind"))] == [
        "Bind",
        "Bind",
    ], trips.sent


@needs_postgres
@pytest.mark.skipif(not os.environ.get("AGENTAUTH_TEST_REDIS_URL"), reason="needs Redis")
@pytest.mark.django_db(transaction=True)
@override_settings(AGENTAUTH_REPLAY_GUARD="cache")
def test_round_trips_cache_guard(api: Api, user: Any) -> None:
    import time

    from django.core.cache import cache

    from agentauth import replay

    # The cache's memory began long ago (an emptied cache refuses tokens signed before it).
    cache.set(replay.MEMORY_MARKER, time.time() - 3600, None)
    host, _ = make_host(user=user)
    agent = make_agent(host, grants=["check_balance"])
    trips = round_trips(api, agent)
    assert trips.count <= 4, trips.sent
    assert ReplayRecord.objects.count() == 0


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_grant_row_is_locked_while_the_handler_runs(
    api: Api, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # spec §8.17: a revocation cannot slip between the check and the effect.
    import psycopg

    from agentauth.models import CapabilityGrant

    grant = CapabilityGrant.objects.get(agent=agent[0], capability="check_balance")
    seen: list[str] = []
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)

    def probing(ctx: Any, *, account_id: str) -> Any:
        with psycopg.connect(**params, autocommit=True) as other:
            try:
                other.execute(
                    "SELECT 1 FROM agentauth_capabilitygrant WHERE id = %s FOR UPDATE NOWAIT",
                    [grant.pk],
                )
                seen.append("unlocked")
            except psycopg.errors.LockNotAvailable:
                seen.append("locked")
        return {"ok": True}

    cap = registry.get("check_balance")
    assert cap is not None
    monkeypatch.setitem(
        registry._by_name, "check_balance", dataclasses.replace(cap, handler=probing)
    )
    assert call(api, agent).status == 200
    assert seen == ["locked"]


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_one_jti_is_accepted_once_across_connections(agent: Any) -> None:
    # spec §4.6: concurrent uses of one token, each on its own connection: one 200, the rest 401.
    from django.test import Client

    token = agent_token(agent[0], agent[1], audience=EXECUTE)
    n = 6
    statuses = run_together(n, lambda i: call(Api(Client()), agent, token).status)
    assert sorted(statuses) == [200] + [401] * (n - 1)
    assert AuditEvent.objects.filter(kind="capability.executed").count() == 1


def test_non_json_result_on_the_hot_path_is_one_refusal(
    api: Api, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # spec §5.11: one call, one audit row; the handler's writes are rolled back with it.
    def non_json(ctx: Any, *, account_id: str) -> Any:
        AuditEvent.objects.create(kind="written.by.handler", actor_type="system")
        return {1, 2}

    cap = registry.get("check_balance")
    assert cap is not None and cap.public
    monkeypatch.setitem(
        registry._by_name, "check_balance", dataclasses.replace(cap, handler=non_json)
    )
    assert_error(call(api, agent), 500, "internal_error")
    rows = AuditEvent.objects.filter(capability="check_balance")
    assert [(r.kind, r.error_code) for r in rows] == [("capability.refused", "internal_error")]
    assert not AuditEvent.objects.filter(kind="written.by.handler").exists()


def test_success_reaches_the_audit_logger_after_commit(
    api: Api, agent: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Every audit row is also an ``agentauth.audit`` log record (audit.py), the hot path's too.
    import logging

    caplog.set_level(logging.INFO, logger="agentauth.audit")
    with django_capture_on_commit_callbacks(execute=True):
        assert call(api, agent).status == 200
    (record,) = [r for r in caplog.records if r.name == "agentauth.audit"]
    row = AuditEvent.objects.get(kind="capability.executed")
    assert (record.event, record.outcome, record.capability) == (  # type: ignore[attr-defined]
        "capability.executed",
        "ok",
        "check_balance",
    )
    assert (record.agent, record.audit_id) == (agent[0].pk, row.pk)  # type: ignore[attr-defined]
