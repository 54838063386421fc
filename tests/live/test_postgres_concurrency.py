"""Races that only a real database shows (PostgreSQL tier).

Skipped unless ``AGENTAUTH_TEST_DATABASE_URL`` points at PostgreSQL (``.ci/run`` sets it).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from django.db import connection, connections

from agentauth import approvals, hosts, tokens
from agentauth.errors import ProtocolError
from agentauth.models import Agent, AgentStatus, Host, ReplayRecord
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from tests.conftest import ISSUER, operator_decides, run_together

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("AGENTAUTH_TEST_DATABASE_URL"),
        reason="needs AGENTAUTH_TEST_DATABASE_URL (PostgreSQL)",
    ),
    pytest.mark.django_db(transaction=True),
]


def test_backend_is_postgresql() -> None:
    assert connection.vendor == "postgresql"


def test_one_jti_is_accepted_once_under_concurrency() -> None:
    # spec: §4.5.1 step 7, §8.2 — the database guard is atomic across connections.
    _host, key = make_host()
    token = host_token(key)
    results = run_together(8, lambda i: tokens.verify_host_jwt(token))
    accepted = [r for r in results if isinstance(r, tokens.VerifiedHost)]
    refused = [r for r in results if isinstance(r, ProtocolError) and r.code == "invalid_jwt"]
    assert len(accepted) == 1 and len(refused) == 7, results
    assert ReplayRecord.objects.count() == 1


def test_concurrent_first_registrations_make_one_host_and_one_agent(client: Any) -> None:
    # spec: §5.3 (idempotency) with a dynamic host (§2.8) racing itself.
    from django.test import Client

    host_key, agent_key = Keypair.generate(), Keypair.generate()

    def register(i: int) -> Any:
        token = host_token(host_key, agent_public_key=agent_key)
        response = Client().post(
            "/api/auth/agent/register",
            data={"name": "racer", "capabilities": ["check_balance"]},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        return response.status_code, response.json()

    results = run_together(6, register)
    assert all(not isinstance(r, Exception) for r in results), results
    assert {status for status, _ in results} == {200}, results
    assert len({body["agent_id"] for _, body in results}) == 1
    assert Host.objects.count() == 1 and Agent.objects.count() == 1


def test_approval_racing_host_revocation_never_revives(user: Any) -> None:
    # spec: §8.5, §5.7 — whichever commits first, the agent ends revoked.
    for _ in range(20):
        host, _ = make_host(user=user)
        agent, _ = make_agent(host, status=AgentStatus.PENDING)
        approvals.open_request(agent, [])

        def act(i: int, agent: Agent = agent, host: Host = host) -> Any:
            if i == 0:
                return operator_decides(agent, user)
            return hosts.revoke_host(host, actor_type="system")

        results = run_together(2, act)
        agent.refresh_from_db()
        assert agent.status == AgentStatus.REVOKED, results


def test_double_revoke_counts_once() -> None:
    # §5.7: agents_revoked counts only agents this call moved.
    host, _ = make_host()
    for _ in range(4):
        make_agent(host)
    counts = run_together(4, lambda i: hosts.revoke_host(host, actor_type="system"))
    assert sum(counts) == 4, counts


def test_user_code_lock_out_holds_under_concurrent_guesses(user: Any, settings: Any) -> None:
    # RFC 8628 §5.1 (spec §7.1): at most USER_CODE_MAX_ATTEMPTS wrong codes are ever looked up
    # in a lock-out window, however many guesses arrive at the same instant.
    from django.core.cache import cache

    settings.AGENTAUTH_USER_CODE_MAX_ATTEMPTS = 3
    cache.delete(f"agentauth:code-attempts:{user.pk}")
    lookups: list[str] = []

    def count_lookups(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT") and "user_code_hash" in sql:
            lookups.append(sql)
        return execute(sql, params, many, context)

    def guess(i: int) -> Any:
        with connection.execute_wrapper(count_lookups):
            return approvals.enter_user_code(user, {}, "BCDF-GHJ" + "BCDFGHJKLMNPQRSTVWXZ"[i])

    results = run_together(16, guess)
    assert results == [None] * 16, results
    assert len(lookups) == 3, len(lookups)
    cache.delete(f"agentauth:code-attempts:{user.pk}")


def test_no_handler_starts_after_a_revocation_committed(user: Any) -> None:
    # spec §8.17: an execute authenticated just before the revocation committed must not run
    # its handler once the revocation has committed.
    from agentauth import agents, execution
    from agentauth.capabilities import capability, registry
    from agentauth.models import CapabilityGrant, GrantStatus

    ran: list[str] = []
    capability("revocation_probe", description="Records that it ran", approval_strength="none")(
        lambda ctx: ran.append(ctx.agent.pk) or {"ok": True}
    )
    try:
        host, _ = make_host(user=user)
        agent, key = make_agent(host, grants=["revocation_probe"])
        verified = tokens.verify_agent_jwt(
            agent_token(agent, key, audience=f"{ISSUER}/capability/execute"),
            audiences=[f"{ISSUER}/capability/execute"],
        )
        authenticated, revoked = threading.Event(), threading.Event()
        outcome: list[Any] = []

        def execute() -> None:
            try:
                authenticated.set()
                revoked.wait(10)
                outcome.append(
                    execution.run_sync(verified, registry.get("revocation_probe"), {})  # type: ignore[arg-type]
                )
            except Exception as exc:
                outcome.append(exc)
            finally:
                connections.close_all()

        def revoke() -> None:
            try:
                authenticated.wait(10)
                agents.revoke_agent(Agent.objects.get(pk=agent.pk), actor_type="user", actor_id="1")
            finally:
                revoked.set()
                connections.close_all()

        threads = [threading.Thread(target=execute), threading.Thread(target=revoke)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert ran == [], "the handler ran after the revocation committed"
        assert isinstance(outcome[0], ProtocolError) and outcome[0].code == "agent_revoked", outcome
        assert not CapabilityGrant.objects.filter(agent=agent, status=GrantStatus.ACTIVE).exists()
    finally:
        registry.unregister("revocation_probe")


def test_a_revocation_waits_for_a_handler_already_running(user: Any) -> None:
    # The other order: a handler that started first finishes before the revocation commits.
    from agentauth import agents, execution
    from agentauth.capabilities import capability, registry

    started, release = threading.Event(), threading.Event()
    events: list[str] = []

    def slow(ctx: Any) -> dict[str, bool]:
        started.set()
        release.wait(10)
        events.append("handler done")
        return {"ok": True}

    capability("revocation_slow", description="Waits", approval_strength="none")(slow)
    try:
        host, _ = make_host(user=user)
        agent, key = make_agent(host, grants=["revocation_slow"])
        aud = f"{ISSUER}/capability/execute"
        verified = tokens.verify_agent_jwt(agent_token(agent, key, audience=aud), audiences=[aud])

        def execute() -> None:
            try:
                execution.run_sync(verified, registry.get("revocation_slow"), {})  # type: ignore[arg-type]
            finally:
                connections.close_all()

        def revoke() -> None:
            try:
                started.wait(10)
                threading.Timer(0.5, release.set).start()
                agents.revoke_agent(Agent.objects.get(pk=agent.pk), actor_type="user", actor_id="1")
                events.append("revoked")
            finally:
                connections.close_all()

        threads = [threading.Thread(target=execute), threading.Thread(target=revoke)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert events == ["handler done", "revoked"], events
    finally:
        registry.unregister("revocation_slow")
