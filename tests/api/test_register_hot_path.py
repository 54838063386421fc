"""The registration hot path (``agentauth.fastregister``): same answers and guarantees, fewer
round trips.

Which requests it serves is asserted on ``fastregister.register`` itself (it answers, or raises
``Fallback`` with nothing written); what a client sees goes through the endpoint. Round-trip
budgets and races need PostgreSQL (``AGENTAUTH_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from agentauth import fastregister
from agentauth.models import (
    Agent,
    AgentStatus,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
    HostStatus,
    ReplayRecord,
)
from agentauth.testing import Keypair, host_token, make_host
from tests.conftest import Api, assert_error, run_together

pytestmark = pytest.mark.django_db

needs_postgres = pytest.mark.skipif(
    not os.environ.get("AGENTAUTH_TEST_DATABASE_URL"), reason="needs PostgreSQL"
)
AUTONOMOUS = {"name": "Worker", "mode": "autonomous", "capabilities": ["check_balance"]}


@pytest.fixture(autouse=True)
def auto_approve(settings: Any) -> None:
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]


@pytest.fixture
def known_host() -> tuple[Host, Keypair]:
    return make_host(status=HostStatus.ACTIVE)


def written() -> tuple[int, int, int, int]:
    return (
        Agent.objects.count(),
        CapabilityGrant.objects.count(),
        AuditEvent.objects.count(),
        ReplayRecord.objects.count(),
    )


def test_serves_a_known_host_registering_an_auto_approved_agent(
    known_host: tuple[Host, Keypair], django_capture_on_commit_callbacks: Any
) -> None:
    from agentauth import signals

    host, key = known_host
    agent_key = Keypair.generate()
    token = host_token(key, agent_public_key=agent_key)
    received: list[Any] = []

    def receiver(**kwargs: Any) -> None:
        received.append(kwargs)

    signals.agent_registered.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            answer = fastregister.register(token, dict(AUTONOMOUS))
    finally:
        signals.agent_registered.disconnect(receiver)
    agent = Agent.objects.get()
    assert answer["agent_id"] == agent.pk and answer["status"] == "active"
    assert [(g["capability"], g["status"]) for g in answer["agent_capability_grants"]] == [
        ("check_balance", "active")
    ]
    assert (agent.host_id, agent.status, agent.mode) == (host.pk, AgentStatus.ACTIVE, "autonomous")
    assert agent.public_key == agent_key.public_jwk and agent.activated_at is not None
    grant = CapabilityGrant.objects.get()
    assert (grant.agent_id, grant.status) == (agent.pk, GrantStatus.ACTIVE)
    row = AuditEvent.objects.get(kind="agent.registered")
    assert (row.actor_type, row.actor_id, row.agent_id, row.host_id) == (
        "host",
        host.pk,
        agent.pk,
        host.pk,
    )
    assert row.data == {
        "status": "active",
        "mode": "autonomous",
        "capabilities": ["check_balance"],
        "auto_approved": ["check_balance"],
    }
    assert ReplayRecord.objects.count() == 1
    assert [(r["agent"].pk, r["created_host"]) for r in received] == [(agent.pk, False)]
    host.refresh_from_db()
    assert host.last_used_at is not None  # spec §3.1, as the general path records it


@pytest.mark.parametrize(
    "case",
    [
        "unknown host",
        "bad signature",
        "presented key is not the host's",
        "pending capability",
        "delegated under an unlinked host",
        "host name changes",
        "agent key is the host key",
        "key by url",
        "revoked host",
        "already registered",
        "invalid body",
    ],
)
def test_falls_back_with_nothing_written(case: str, known_host: tuple[Host, Keypair]) -> None:
    host, key = known_host
    agent_key = Keypair.generate()
    body: dict[str, Any] = dict(AUTONOMOUS)
    claims: dict[str, Any] = {}
    if case == "unknown host":
        key = Keypair.generate()
    elif case == "bad signature":
        # Names the known host (iss, no key of its own), signed by another key.
        claims.update(iss=host.thumbprint, sub=host.thumbprint)
        key = Keypair.generate()
    elif case == "presented key is not the host's":
        # Signed by the host, but carrying another key: the general path refuses (spec §4.5.1).
        claims["host_public_key"] = Keypair.generate().public_jwk
    elif case == "pending capability":
        body["capabilities"] = ["transfer"]
    elif case == "delegated under an unlinked host":
        body["mode"] = "delegated"
    elif case == "host name changes":
        body["host_name"] = "Renamed"
    elif case == "agent key is the host key":
        agent_key = key
    elif case == "key by url":
        claims["agent_jwks_url"] = "https://keys.example/jwks.json"
        claims["agent_kid"] = "k1"
    elif case == "revoked host":
        Host.objects.filter(pk=host.pk).update(status=HostStatus.REVOKED)
    elif case == "already registered":
        fastregister.register(host_token(key, agent_public_key=agent_key), dict(AUTONOMOUS))
    elif case == "invalid body":
        body["mode"] = 7
    token = host_token(
        key,
        agent_public_key=agent_key,
        extra_claims=claims,
        include_host_key=case != "bad signature",
    )
    before = written()
    with pytest.raises(fastregister.Fallback):
        fastregister.register(token, body)
    assert written() == before


def test_a_replayed_registration_token_is_refused_by_the_general_path(
    api: Api, known_host: tuple[Host, Keypair]
) -> None:
    _, key = known_host
    token = host_token(key, agent_public_key=Keypair.generate())
    assert api.post("/agent/register", AUTONOMOUS, token=token).status == 200
    assert_error(api.post("/agent/register", AUTONOMOUS, token=token), 401, "invalid_jwt")
    assert Agent.objects.count() == 1


def test_counts_the_host_rate_limit_once(
    api: Api, known_host: tuple[Host, Keypair], settings: Any
) -> None:
    # spec §8.13: the host limit counts requests; a request served here counts once.
    settings.AGENTAUTH_RATE_LIMITS = {"host": "2/minute", "ip": None}
    _, key = known_host
    for _ in range(2):
        assert api.register(key, body=AUTONOMOUS).status == 200
    assert_error(api.register(key, body=AUTONOMOUS), 429, "rate_limited")
    assert Agent.objects.count() == 2


def test_registration_reaches_the_audit_logger(
    api: Api,
    known_host: tuple[Host, Keypair],
    caplog: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    caplog.set_level(logging.INFO, logger="agentauth.audit")
    _, key = known_host
    with django_capture_on_commit_callbacks(execute=True):
        assert api.register(key, body=AUTONOMOUS).status == 200
    (record,) = [r for r in caplog.records if r.name == "agentauth.audit"]
    row = AuditEvent.objects.get(kind="agent.registered")
    assert (record.event, record.audit_id) == ("agent.registered", row.pk)  # type: ignore[attr-defined]


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_round_trips(api: Api, known_host: tuple[Host, Keypair]) -> None:
    # BEGIN; the jti record with the locked host read; agent, grant and audit row sent together;
    # COMMIT: 4 round trips, against 9 on the general path.
    from agentauth.testing.roundtrips import count_round_trips

    _, key = known_host
    assert api.register(key, body=AUTONOMOUS).status == 200  # warm: host use recorded
    with count_round_trips() as trips:
        reply = api.register(key, body=AUTONOMOUS)
    assert reply.status == 200, reply.body
    assert connection.vendor == "postgresql"
    assert trips.count == 4, trips.sent
    assert trips.statements() == ["BEGIN", "WITH", "INSERT", "INSERT", "INSERT", "COMMIT"]


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_agent_key_registered_concurrently_gives_one_agent(
    known_host: tuple[Host, Keypair],
) -> None:
    # spec §5.3: host + agent key identify the registration; the others are answered as
    # retries of an active agent (409 agent_exists), never a second agent or a 500.
    from django.test import Client

    _, key = known_host
    agent_key = Keypair.generate()
    n = 6
    statuses = run_together(
        n, lambda i: Api(Client()).register(key, agent=agent_key, body=AUTONOMOUS).status
    )
    assert sorted(statuses) == [200] + [409] * (n - 1), statuses
    assert Agent.objects.count() == 1
    assert AuditEvent.objects.filter(kind="agent.registered").count() == 1


@override_settings(AGENTAUTH_REPLAY_GUARD="cache")
def test_cache_replay_guard(api: Api, known_host: tuple[Host, Keypair]) -> None:
    import time

    from django.core.cache import cache

    from agentauth import replay

    cache.set(replay.MEMORY_MARKER, time.time() - 3600, None)
    _, key = known_host
    token = host_token(key, agent_public_key=Keypair.generate())
    assert api.post("/agent/register", AUTONOMOUS, token=token).status == 200
    assert_error(api.post("/agent/register", AUTONOMOUS, token=token), 401, "invalid_jwt")
    assert ReplayRecord.objects.count() == 0 and Agent.objects.count() == 1


@override_settings(AGENTAUTH_REPLAY_GUARD="cache")
def test_cache_replay_guard_leaves_a_retry_to_the_general_path(
    api: Api, known_host: tuple[Host, Keypair]
) -> None:
    # spec §5.3: the same host and agent key again is answered as a retry (here 409, the agent
    # is active). The hot path meets the unique key only when it inserts; with the cache guard
    # it must not have spent the request's jti by then, or the general path would call the
    # retry a replay (401).
    import time

    from django.core.cache import cache

    from agentauth import replay

    cache.set(replay.MEMORY_MARKER, time.time() - 3600, None)
    _, key = known_host
    agent_key = Keypair.generate()
    assert api.register(key, agent=agent_key, body=AUTONOMOUS).status == 200
    assert_error(api.register(key, agent=agent_key, body=AUTONOMOUS), 409, "agent_exists")
    assert Agent.objects.count() == 1


def test_a_token_spent_by_a_refused_registration_is_a_replay(
    api: Api, known_host: tuple[Host, Keypair], settings: Any
) -> None:
    # spec §4.6: a jti is used once, whatever the first answer was. Here the first use is refused
    # after the jti was spent (the host's rate limit); its agent key is new, so only the replay
    # check, not the unique key, can refuse the second use.
    from django.core.cache import cache

    settings.AGENTAUTH_RATE_LIMITS = {"host": "1/minute", "ip": None}
    _, key = known_host
    assert api.register(key, body=AUTONOMOUS).status == 200
    token = host_token(key, agent_public_key=Keypair.generate())
    assert_error(api.post("/agent/register", AUTONOMOUS, token=token), 429, "rate_limited")
    cache.clear()  # the limit's window has passed
    assert_error(api.post("/agent/register", AUTONOMOUS, token=token), 401, "invalid_jwt")
    assert Agent.objects.count() == 1
