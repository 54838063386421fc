"""Agent and host lifecycle (spec §2.3-§2.11, §5.6, §5.8, §5.9, §3.2, §8.8, §2.5, §5.5, §4.2, §2.7,
§3.3, §2.4, §8.7, §2.10)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from agentauth import agents, approvals, clocks, hosts, signals
from agentauth.errors import ProtocolError
from agentauth.models import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    AuditEvent,
    CapabilityGrant,
    GrantStatus,
    Host,
    ReplayRecord,
)
from agentauth.sweep import sweep
from agentauth.testing import Keypair, agent_token, host_token, make_agent, make_host
from agentauth.tokens import verify_agent_jwt
from tests.conftest import ISSUER, Api, assert_error, operator_decides, run_together

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def later(**kw: Any) -> Any:
    return time_machine.travel(timezone.now() + timedelta(**kw), tick=False)


def auth(agent: Agent, key: Keypair) -> Any:
    """Authenticate as the agent, as the protocol views do (verify, then slide the session)."""
    verified = verify_agent_jwt(agent_token(agent, key), audiences={ISSUER})
    clocks.touch(verified.agent)
    return verified


def code_of(call: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        call()
    return info.value.code


# --- clocks ----------------------------------------------------------------------------------


def test_session_ttl_slides_with_use_and_expires_when_idle(settings: Any, user: Any) -> None:
    # spec: §8.8, §2.4
    settings.AGENTAUTH_SESSION_TTL = 600
    settings.AGENTAUTH_MAX_LIFETIME = None
    host, _ = make_host(user=user)
    agent, key = make_agent(host)
    with later(seconds=500):
        auth(agent, key)
    with later(seconds=1000):  # 500 s after the last use: still within the TTL
        assert auth(agent, key).agent.pk == agent.pk
    with later(seconds=1700):  # idle for longer than the TTL
        assert code_of(lambda: auth(agent, key)) == "agent_expired"
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.EXPIRED
    assert AuditEvent.objects.filter(kind="agent.expired", agent_id=agent.pk).exists()


def test_max_lifetime_despite_activity(settings: Any, user: Any) -> None:
    # spec: §8.8 — counted from activation, whatever the activity.
    settings.AGENTAUTH_SESSION_TTL = 3600
    settings.AGENTAUTH_MAX_LIFETIME = 7200
    host, _ = make_host(user=user)
    agent, key = make_agent(host)
    for minutes in (50, 100):
        with later(minutes=minutes):
            auth(agent, key)
    with later(minutes=121):
        assert code_of(lambda: auth(agent, key)) == "agent_expired"


def test_expires_at_is_the_nearest_deadline(settings: Any, user: Any, api: Api) -> None:
    # §2.4
    settings.AGENTAUTH_SESSION_TTL = 600
    settings.AGENTAUTH_MAX_LIFETIME = 300
    host, key = make_host(user=user)
    agent, _ = make_agent(host)
    body = api.get("/agent/status", token=host_token(key), agent_id=agent.pk).body
    expected = (agent.activated_at + timedelta(seconds=300)).isoformat().replace("+00:00", "Z")
    assert body["expires_at"] == expected


def test_absolute_lifetime_revokes_for_good(settings: Any, user: Any, api: Api) -> None:
    # spec: §8.8, §2.5, §2.4
    settings.AGENTAUTH_ABSOLUTE_LIFETIME = 86400
    host, host_key = make_host(user=user)
    agent, key = make_agent(host)
    with later(days=2):
        assert code_of(lambda: auth(agent, key)) == "absolute_lifetime_exceeded"
        reply = api.post("/agent/reactivate", {"agent_id": agent.pk}, token=host_token(host_key))
    assert_error(reply, 403, "absolute_lifetime_exceeded")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.REVOKED and agent.revocation_reason == "absolute_lifetime"


def short_for_autonomous(agent: Agent) -> dict[str, int]:
    """An ``AGENTAUTH_AGENT_CLOCKS`` hook: autonomous agents get 60-second sessions."""
    return {"session_ttl": 60} if agent.mode == "autonomous" else {}


def test_per_agent_clock_hook(settings: Any) -> None:
    # spec: §8.8 — clocks MAY vary per agent.
    settings.AGENTAUTH_AGENT_CLOCKS = "tests.api.test_lifecycle.short_for_autonomous"
    host, _ = make_host()
    robot, robot_key = make_agent(host, mode="autonomous")
    person, person_key = make_agent(host)
    with later(seconds=120):
        assert code_of(lambda: auth(robot, robot_key)) == "agent_expired"
        assert auth(person, person_key).agent.pk == person.pk


def grant_ttl(capability: str, agent: Agent) -> int | None:
    return 60 if capability == "transfer" else None


def test_grant_ttl_hook(settings: Any, user: Any, api: Api) -> None:
    # spec §3.3 expires_at, §3.3
    settings.AGENTAUTH_GRANT_TTL = "tests.api.test_lifecycle.grant_ttl"
    host, _ = make_host(user=user)
    agent, key = make_agent(host, status=AgentStatus.PENDING)
    approvals.open_request(agent, [])
    CapabilityGrant.objects.create(agent=agent, capability="transfer", status="pending")
    operator_decides(agent, user)
    grant = CapabilityGrant.objects.get(agent=agent, capability="transfer")
    assert grant.expires_at is not None
    with later(seconds=61):
        reply = api.get("/capability/list", token=agent_token(agent, key))
        status = {c["name"]: c["grant_status"] for c in reply.body["capabilities"]}
        assert status["transfer"] == "not_granted"


# --- reactivation ----------------------------------------------------------------------------


@pytest.fixture
def expired(user: Any) -> Any:
    host, host_key = make_host(user=user, default_capabilities=["check_balance", "transfer"])
    agent, key = make_agent(host, grants=["check_balance", "read_only_note"])
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.EXPIRED)
    return agent, key, host_key


def test_reactivate_drops_escalations_and_regrants_defaults(api: Api, expired: Any) -> None:
    # spec: §5.6, §2.5, §5.5, §3.3
    agent, key, host_key = expired
    before = Agent.objects.get(pk=agent.pk).absolute_expires_at
    reply = api.post("/agent/reactivate", {"agent_id": agent.pk}, token=host_token(host_key))
    assert reply.status == 200
    body = reply.body
    assert body["status"] == "active" and body["activated_at"] and body["expires_at"]
    grants = {g["capability"]: g["status"] for g in body["agent_capability_grants"]}
    # read_only_note (escalated) is gone; transfer needs a person (webauthn strength).
    assert grants == {"check_balance": "active", "transfer": "pending"}
    assert body["approval"]["method"] == "device_authorization"
    agent.refresh_from_db()
    assert agent.absolute_expires_at == before  # never reset (spec §2.5)
    assert auth(agent, key).agent.pk == agent.pk
    assert AuditEvent.objects.filter(kind="agent.reactivated").exists()


def test_reactivating_an_active_agent_is_a_no_op(api: Api, user: Any) -> None:
    host, host_key = make_host(user=user)
    agent, _ = make_agent(host, grants=["check_balance"])
    reply = api.post("/agent/reactivate", {"agent_id": agent.pk}, token=host_token(host_key))
    assert reply.status == 200 and reply.body["status"] == "active"
    assert CapabilityGrant.objects.filter(agent=agent, status="active").count() == 1


@pytest.mark.parametrize(
    "status, code",
    [
        (AgentStatus.REVOKED, "agent_revoked"),
        (AgentStatus.REJECTED, "agent_rejected"),
        (AgentStatus.CLAIMED, "agent_claimed"),
        (AgentStatus.PENDING, "agent_pending"),
    ],
)
def test_reactivate_refusals(api: Api, user: Any, status: str, code: str) -> None:
    # spec: §5.6
    host, host_key = make_host(user=user)
    agent, _ = make_agent(host, status=status)
    reply = api.post("/agent/reactivate", {"agent_id": agent.pk}, token=host_token(host_key))
    assert_error(reply, 403, code)


def test_reactivate_someone_elses_agent(api: Api, expired: Any) -> None:
    agent, _, _ = expired
    _, other_key = make_host()
    reply = api.post("/agent/reactivate", {"agent_id": agent.pk}, token=host_token(other_key))
    assert_error(reply, 403, "unauthorized")


def test_reactivate_under_an_unlinked_host_waits_for_a_person(api: Api) -> None:
    host, host_key = make_host(default_capabilities=["check_balance"])
    agent, _ = make_agent(host)
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.EXPIRED)
    reply = api.post("/agent/reactivate", {"agent_id": agent.pk}, token=host_token(host_key))
    assert reply.body["status"] == "pending" and "approval" in reply.body


def _expire(agent_id: str) -> None:
    Agent.objects.filter(pk=agent_id).update(status=AgentStatus.EXPIRED)


def test_dynamic_host_starts_with_the_default_set_but_is_granted_nothing(
    api: Api, settings: Any
) -> None:
    # §2.8: a dynamically registered host has "a set of default capabilities", §8.10: a
    # self-attested host is granted nothing until approval completes.
    settings.AGENTAUTH_DEFAULT_HOST_CAPABILITIES = ["check_balance", "transfer"]
    host_key = Keypair.generate()
    reply = api.register(host_key, body={"name": "d", "capabilities": ["check_balance"]})
    assert reply.body["status"] == "pending"
    assert [g["status"] for g in reply.body["agent_capability_grants"]] == ["pending"]
    host = Host.objects.get(thumbprint=host_key.thumbprint)
    assert host.default_capabilities == ["check_balance", "transfer"]
    auto = api.register(host_key, body={"name": "a", "mode": "autonomous"})
    assert auto.body["status"] == "pending"  # no AUTONOMOUS_AUTO_APPROVE policy: a person


def test_reactivation_regrants_a_dynamic_hosts_defaults(api: Api, settings: Any) -> None:
    # §5.6 step 4: the host's default set is granted again under the registration rules:
    # automatically only where policy allows (check_balance), else pending with an approval.
    settings.AGENTAUTH_DEFAULT_HOST_CAPABILITIES = ["check_balance", "transfer"]
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]
    host_key = Keypair.generate()
    reply = api.register(
        host_key, body={"name": "a", "mode": "autonomous", "capabilities": ["check_balance"]}
    )
    assert reply.body["status"] == "active"
    _expire(reply.body["agent_id"])
    again = api.post(
        "/agent/reactivate", {"agent_id": reply.body["agent_id"]}, token=host_token(host_key)
    )
    assert again.status == 200, again.body
    grants = {g["capability"]: g["status"] for g in again.body["agent_capability_grants"]}
    assert again.body["status"] == "active"
    assert grants == {"check_balance": "active", "transfer": "pending"}
    assert again.body["approval"]["method"] == "device_authorization"


def test_reactivation_with_policy_but_no_auto_grant_asks_a_person(api: Api, settings: Any) -> None:
    # §5.6 step 4 "Otherwise, return pending with an approval flow": defaults the policy does
    # not cover are pending, never silently dropped.
    settings.AGENTAUTH_DEFAULT_HOST_CAPABILITIES = ["transfer"]
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = []
    host_key = Keypair.generate()
    reply = api.register(host_key, body={"name": "a", "mode": "autonomous"})
    _expire(reply.body["agent_id"])
    again = api.post(
        "/agent/reactivate", {"agent_id": reply.body["agent_id"]}, token=host_token(host_key)
    )
    grants = again.body["agent_capability_grants"]
    assert grants == [{"capability": "transfer", "status": "pending"}]
    assert "approval" in again.body


def test_reactivation_never_returns_an_agent_that_silently_lost_everything(
    api: Api, settings: Any
) -> None:
    # §5.6: an agent whose grants all ended and whose host has no defaults is not handed back
    # active and empty; it is pending with an approval (step 6, "pending if approval is
    # required"), and asks again through §5.4 once approved.
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]
    host_key = Keypair.generate()
    reply = api.register(
        host_key, body={"name": "a", "mode": "autonomous", "capabilities": ["check_balance"]}
    )
    assert reply.body["agent_capability_grants"][0]["status"] == "active"
    _expire(reply.body["agent_id"])
    again = api.post(
        "/agent/reactivate", {"agent_id": reply.body["agent_id"]}, token=host_token(host_key)
    )
    assert again.status == 200, again.body
    assert again.body["status"] == "pending"
    assert again.body["agent_capability_grants"] == []
    assert again.body["approval"]["method"] == "device_authorization"


def test_reactivating_an_agent_that_held_nothing_stays_active(api: Api, settings: Any) -> None:
    # It lost nothing, so §5.6 step 6 applies as written.
    settings.AGENTAUTH_AUTONOMOUS_AUTO_APPROVE = ["check_balance"]
    host_key = Keypair.generate()
    reply = api.register(host_key, body={"name": "a", "mode": "autonomous"})
    _expire(reply.body["agent_id"])
    again = api.post(
        "/agent/reactivate", {"agent_id": reply.body["agent_id"]}, token=host_token(host_key)
    )
    assert again.body["status"] == "active" and "approval" not in again.body


def test_unknown_default_host_capability_is_a_system_check_error(settings: Any) -> None:
    from agentauth.checks import check_capabilities

    settings.AGENTAUTH_DEFAULT_HOST_CAPABILITIES = ["check_balance", "no_such_thing"]
    assert [e.id for e in check_capabilities()] == ["agentauth.E012"]


# --- key rotation ----------------------------------------------------------------------------


def test_agent_key_rotation(api: Api, user: Any) -> None:
    # spec: §5.8
    host, host_key = make_host(user=user)
    agent, old = make_agent(host, grants=["check_balance"])
    new = Keypair.generate()
    reply = api.post(
        "/agent/rotate-key",
        {"agent_id": agent.pk, "public_key": new.public_jwk},
        token=host_token(host_key),
    )
    assert reply.status == 200 and reply.body == {"agent_id": agent.pk, "status": "active"}
    agent.refresh_from_db()
    assert code_of(lambda: auth(agent, old)) == "invalid_jwt"
    assert auth(agent, new).agent.pk == agent.pk
    assert AuditEvent.objects.filter(kind="agent.key_rotated").exists()


@pytest.mark.parametrize(
    "jwk, status, code",
    [
        ({"kty": "RSA", "n": "x", "e": "AQAB"}, 400, "unsupported_algorithm"),
        ("bad", 400, "invalid_request"),
    ],
)
def test_agent_key_rotation_refusals(api: Api, user: Any, jwk: Any, status: int, code: str) -> None:
    host, host_key = make_host(user=user)
    agent, _ = make_agent(host)
    reply = api.post(
        "/agent/rotate-key", {"agent_id": agent.pk, "public_key": jwk}, token=host_token(host_key)
    )
    assert_error(reply, status, code)


def test_agent_key_of_a_sibling_is_refused(api: Api, user: Any) -> None:
    # §5.8
    host, host_key = make_host(user=user)
    agent, _ = make_agent(host)
    _, sibling_key = make_agent(host)
    reply = api.post(
        "/agent/rotate-key",
        {"agent_id": agent.pk, "public_key": sibling_key.public_jwk},
        token=host_token(host_key),
    )
    assert_error(reply, 409, "agent_exists")


def test_host_key_rotation(api: Api, user: Any, settings: Any) -> None:
    # spec: §5.9, §4.2, §5.8, §8.7
    settings.AGENTAUTH_HOST_ROTATION_GRACE = 60
    host, old = make_host(user=user)
    agent, agent_key = make_agent(host, grants=["check_balance"])
    new = Keypair.generate()
    reply = api.post("/host/rotate-key", {"public_key": new.public_jwk}, token=host_token(old))
    assert reply.status == 200 and reply.body == {"host_id": host.pk, "status": "active"}
    # The old host key stops working at once; the new one works; agents keep working.
    status = api.get("/agent/status", token=host_token(old), agent_id=agent.pk)
    assert_error(status, 401, "invalid_jwt")
    assert api.get("/agent/status", token=host_token(new), agent_id=agent.pk).status == 200
    agent.refresh_from_db()
    old_iss = agent_token(agent, agent_key, host_thumbprint=old.thumbprint)
    assert verify_agent_jwt(old_iss, audiences={ISSUER}).agent.pk == agent.pk
    with later(seconds=61):
        late = agent_token(agent, agent_key, host_thumbprint=old.thumbprint)
        assert code_of(lambda: verify_agent_jwt(late, audiences={ISSUER})) == "invalid_jwt"


def test_host_key_already_in_use(api: Api) -> None:
    # §5.9
    _, key = make_host()
    _, other = make_host()
    reply = api.post("/host/rotate-key", {"public_key": other.public_jwk}, token=host_token(key))
    assert_error(reply, 409, "host_exists")


# --- unlink, user deletion, claiming -----------------------------------------------------------


def test_unlink_revokes_delegated_agents_only(user: Any) -> None:
    # spec: §2.7
    host, _ = make_host(user=user)
    delegated, _ = make_agent(host)
    Host.objects.filter(pk=host.pk).update(user=None)
    autonomous, _ = make_agent(host, mode="autonomous")
    Host.objects.filter(pk=host.pk).update(user=user)
    host.refresh_from_db()
    revoked = hosts.unlink_host(host, actor_type="user")
    assert revoked == [delegated.pk]
    assert Agent.objects.get(pk=autonomous.pk).status == AgentStatus.ACTIVE
    assert Host.objects.get(pk=host.pk).user_id is None
    assert AuditEvent.objects.filter(kind="host.unlinked").exists()


def test_deleting_a_user_revokes_their_hosts_and_agents(user: Any) -> None:
    # spec: §2.6, §2.7
    host, _ = make_host(user=user)
    agent, key = make_agent(host)
    user.delete()
    assert Host.objects.get(pk=host.pk).status == "revoked"
    agent.refresh_from_db()
    assert agent.status == AgentStatus.REVOKED
    assert code_of(lambda: auth(agent, key)) == "agent_revoked"


def test_claiming_takes_non_terminal_autonomous_agents(user: Any, settings: Any) -> None:
    # spec: §2.10
    host, _ = make_host()
    active, active_key = make_agent(host, mode="autonomous", grants=["check_balance"])
    lapsed, _ = make_agent(host, mode="autonomous", status=AgentStatus.EXPIRED)
    waiting, _ = make_agent(host, mode="autonomous", status=AgentStatus.PENDING)
    AuditEvent.objects.create(kind="capability.executed", actor_type="agent", agent_id=active.pk)
    delegated, _ = make_agent(host, status=AgentStatus.PENDING)
    approvals.open_request(delegated, [])
    operator_decides(delegated, user)
    for agent in (active, lapsed, waiting):
        agent.refresh_from_db()
        assert agent.status == AgentStatus.CLAIMED and agent.user == user
    assert not CapabilityGrant.objects.filter(agent=active, status="active").exists()
    assert code_of(lambda: auth(active, active_key)) == "agent_claimed"
    history = AuditEvent.objects.get(kind="capability.executed", agent_id=active.pk)
    assert history.user_id == str(user.pk)  # spec §2.10: history attributed to the user


# --- sweep -----------------------------------------------------------------------------------


def test_sweep_persists_what_the_clocks_decided(user: Any) -> None:
    host, _ = make_host(user=user)
    idle, _ = make_agent(host, grants=["check_balance"])
    Agent.objects.filter(pk=idle.pk).update(expires_at=timezone.now() - HOUR)
    old, _ = make_agent(host)
    Agent.objects.filter(pk=old.pk).update(absolute_expires_at=timezone.now() - HOUR)
    lapsed_grant, _ = make_agent(host, grants=["check_balance"])
    CapabilityGrant.objects.filter(agent=lapsed_grant).update(expires_at=timezone.now() - HOUR)
    stale, _ = make_agent(host, status=AgentStatus.PENDING)
    Agent.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(days=8))
    ApprovalRequest.objects.create(
        agent=idle, method="device_authorization", expires_at=timezone.now() - HOUR
    )
    ReplayRecord.objects.create(key="x" * 64, expires_at=timezone.now() - HOUR)
    finished: list[Any] = []
    signals.sweep_finished.connect(lambda sender, counts, **kw: finished.append(counts))

    counts = sweep()
    assert counts["agents_expired"] == 1 and counts["agents_revoked"] == 1
    assert counts["grants_expired"] == 1 and counts["approvals_expired"] == 1
    assert counts["replay_records_purged"] == 1 and counts["pending_agents_deleted"] == 1
    assert Agent.objects.get(pk=idle.pk).status == AgentStatus.EXPIRED
    assert Agent.objects.get(pk=old.pk).revocation_reason == "absolute_lifetime"
    assert not Agent.objects.filter(pk=stale.pk).exists()
    kinds = set(AuditEvent.objects.filter(actor_id="sweep").values_list("kind", flat=True))
    assert {"agent.expired", "agent.revoked", "agent.deleted", "sweep"} <= kinds
    # Idempotent: a second run finds nothing.
    assert not any(sweep().values())


def test_sweep_query_count_does_not_grow_with_rows(
    user: Any, django_assert_max_num_queries: Any
) -> None:
    host, _ = make_host(user=user)

    def lapsed(n: int) -> None:
        for _ in range(n):
            agent, _ = make_agent(host, grants=["check_balance"])
            Agent.objects.filter(pk=agent.pk).update(expires_at=timezone.now() - HOUR)

    lapsed(5)
    with django_assert_max_num_queries(32) as small:
        sweep()
    lapsed(60)
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert sweep()["agents_expired"] == 60


def test_sweep_command_and_task(user: Any, capsys: Any) -> None:
    call_command("agentauth_sweep")
    assert '"agents_expired": 0' in capsys.readouterr().out
    from agentauth.tasks import sweep as sweep_task

    assert sweep_task.name == "agentauth.sweep"
    assert sweep_task.delay().get()["agents_revoked"] == 0


# --- PostgreSQL: races ----------------------------------------------------------------------

postgres = pytest.mark.skipif(
    not os.environ.get("AGENTAUTH_TEST_DATABASE_URL"), reason="needs PostgreSQL"
)


@postgres
@pytest.mark.django_db(transaction=True)
def test_two_reactivations_give_one_consistent_agent(user: Any) -> None:
    from agentauth.agents import reactivate

    host, _ = make_host(user=user, default_capabilities=["check_balance"])
    agent, _ = make_agent(host)
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.EXPIRED)
    run_together(2, lambda i: reactivate(agent, actor_id="race"))
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ACTIVE
    assert CapabilityGrant.objects.filter(agent=agent, status=GrantStatus.ACTIVE).count() == 1
    assert AuditEvent.objects.filter(kind="agent.reactivated").count() == 1


@postgres
@pytest.mark.django_db(transaction=True)
def test_reactivation_racing_a_revoke_never_revives(user: Any) -> None:
    from agentauth.agents import reactivate

    for _ in range(10):
        host, _ = make_host(user=user, default_capabilities=["check_balance"])
        agent, _ = make_agent(host)
        Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.EXPIRED)

        def act(i: int, agent: Agent = agent) -> Any:
            if i == 0:
                return reactivate(agent, actor_id="race")
            return agents.revoke_agent(agent, actor_type="system")

        run_together(2, act)
        assert Agent.objects.get(pk=agent.pk).status == AgentStatus.REVOKED


@postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_sweeps_audit_each_row_once(user: Any) -> None:
    host, _ = make_host(user=user)
    for _ in range(30):
        agent, _ = make_agent(host)
        Agent.objects.filter(pk=agent.pk).update(expires_at=timezone.now() - HOUR)
    results = run_together(3, lambda i: sweep())
    assert sum(r["agents_expired"] for r in results) == 30, results
    assert AuditEvent.objects.filter(kind="agent.expired").count() == 30


@postgres
@pytest.mark.django_db(transaction=True)
def test_sweep_of_100000_agents_is_bounded(user: Any, django_assert_max_num_queries: Any) -> None:
    # 100,000 agents with grants lapse; one sweep, a bounded query count.
    import time

    host, _ = make_host(user=user)
    past = timezone.now() - HOUR
    for offset in range(0, 100_000, 10_000):
        agents = [
            Agent(
                id=f"agt_bulk_{i:07d}",
                host=host,
                name="bulk",
                status=AgentStatus.ACTIVE,
                thumbprint=f"{i:043d}",
                activated_at=past,
                expires_at=past,
            )
            for i in range(offset, offset + 10_000)
        ]
        Agent.objects.bulk_create(agents)
        CapabilityGrant.objects.bulk_create(
            [CapabilityGrant(agent=a, capability="check_balance", status="active") for a in agents]
        )
    started = time.perf_counter()
    # The same bound as the small sweep above: retention steps (audit, replay, outbox) joined it.
    with django_assert_max_num_queries(32):
        counts = sweep()
    print(f"\nsweep of 100,000 agents: {time.perf_counter() - started:.2f} s")
    assert counts["agents_expired"] == 100_000
    assert Agent.objects.filter(status=AgentStatus.EXPIRED).count() == 100_000


def test_host_rotation_to_the_same_key_is_refused(api: Api) -> None:
    _, key = make_host()
    reply = api.post("/host/rotate-key", {"public_key": key.public_jwk}, token=host_token(key))
    assert_error(reply, 400, "invalid_request")


def test_revoking_a_revoked_host_again_records_nothing(
    user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # spec §5.10: revocation happens once; a repeat is a no-op with no second row or signal.
    host, _ = make_host(user=user)
    make_agent(host)
    sent: list[int] = []

    def on_revoked(sender: Any, agents_revoked: int, **kw: Any) -> None:
        sent.append(agents_revoked)

    signals.host_revoked.connect(on_revoked)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert hosts.revoke_host(host, actor_type="user") == 1
            assert hosts.revoke_host(host, actor_type="user") == 0
    finally:
        signals.host_revoked.disconnect(on_revoked)
    assert AuditEvent.objects.filter(kind="host.revoked", host_id=host.pk).count() == 1
    assert sent == [1]


def test_deleting_a_user_audits_every_agent_it_revokes(user: Any) -> None:
    # spec §2.6: an agent acting for the deleted user under a host no longer linked to them is
    # revoked too, and like every revocation it leaves an audit row.
    host, _ = make_host(user=user)
    stray, key = make_agent(host)
    Host.objects.filter(pk=host.pk).update(user=None)
    user.delete()
    stray.refresh_from_db()
    assert stray.status == AgentStatus.REVOKED and stray.revocation_reason == "user_deleted"
    assert AuditEvent.objects.filter(kind="agent.revoked", agent_id=stray.pk).count() == 1
    assert code_of(lambda: auth(stray, key)) == "agent_revoked"
